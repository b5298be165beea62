"""The shard report for people: rows per split (terminal) and a markdown table (Prefect artifact)."""

from __future__ import annotations

from typing import Any

from biomedclip.ingest.split import SPLITS
from biomedclip.shard.params import ShardParams

COLUMNS = ("split", "samples", "figures", "panels", "shards", "MiB")


def rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per split of `write_shards`' report, in pipeline order."""
    return [(split, *(f"{report[split].get(k, 0):,}" for k in ("samples", "figures", "panels", "shards")),
             f"{report[split]['bytes'] / 2**20:.1f}") for split in SPLITS if split in report]


def markdown(report: dict[str, Any], params: ShardParams) -> str:
    lines = [f"## Shards in `{params.outputs.shards}` (unit: {params.unit})", "",
             "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(report)]
    lines += ["", f"Shard manifest `{params.outputs.manifest}`: sha256 `{report['manifest_sha256']}`"]
    return "\n".join(lines) + "\n"
