"""The `ingest` stage: PMC articles → the pairs manifest, panels, rejects and image store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomedclip.ingest import report
from biomedclip.ingest.run import run_ingest
from biomedclip.params import Params
from biomedclip.stage import StageContext


@dataclass(frozen=True)
class IngestReport:
    metrics: Mapping[str, Any]  # what `ingest.outputs.report` holds (counts, rejects, panels)
    pairs: Path
    examples: Path  # the panel examples page's folder

    def markdown(self) -> str:
        return f"## Ingest → `{self.pairs}`\n\n{report.markdown(dict(self.metrics), self.examples)}"


def run(params: Params, context: StageContext) -> IngestReport:
    """PMC articles → the pairs manifest, panels, rejects and image store (`ingest.outputs`)."""
    outputs = params.ingest.outputs
    metrics = run_ingest(params.ingest, batch_map=context.fan_out)
    return IngestReport(metrics, outputs.pairs, outputs.panel_examples)
