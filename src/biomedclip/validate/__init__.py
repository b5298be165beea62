"""The quality gate between ingest and shard: Great Expectations on the pairs manifest.

`checks` (the names of the gate's checks) is light; the gate itself imports Great Expectations,
so it loads on first use: reading params never pays for it.
"""

from __future__ import annotations

from typing import Any

_GATE = ("ValidationFailed", "ValidationInputError", "observed_text", "summary_markdown", "validate_manifest")
__all__ = list(_GATE)


def __getattr__(name: str) -> Any:
    if name in _GATE:
        from biomedclip.validate import gate

        return getattr(gate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
