"""The `validate` stage: the Great Expectations gate between ingest and shard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomedclip.params import Params
from biomedclip.stage import StageContext
from biomedclip.validate.gate import ValidationFailed, summary_markdown, validate_manifest


@dataclass(frozen=True)
class ValidateReport:
    result: Mapping[str, Any]  # what `validate.outputs.result` holds: every check, its verdict
    data_docs: Path

    @property
    def passed(self) -> bool:
        return bool(self.result["success"])

    def markdown(self) -> str:
        return f"{summary_markdown(dict(self.result))}\nData Docs: `{self.data_docs / 'index.html'}`\n"


def run(params: Params, context: StageContext) -> ValidateReport:
    """Check `ingest.outputs.pairs` (and the panel table); a failing critical check raises
    `ValidationFailed`, carrying the report (`exc.report`) so that it is shown all the same."""
    docs = params.validate.outputs.data_docs
    try:
        result = validate_manifest(params.ingest, params.validate)
    except ValidationFailed as exc:
        exc.report = ValidateReport(exc.result, docs)
        raise
    return ValidateReport(result, docs)
