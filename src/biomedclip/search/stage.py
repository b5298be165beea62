"""The `index` stage: the vector index over the `embed` stage's image embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomedclip.embed.stage import embeddings_file
from biomedclip.params import Params
from biomedclip.search.build import build_index
from biomedclip.stage import StageContext


@dataclass(frozen=True)
class IndexReport:
    """What the index is, what it was built from, and how well it finds what exact search finds."""

    out: Path
    metrics: Mapping[str, Any]

    def markdown(self) -> str:
        m = self.metrics
        rows = [(k, m[k]) for k in ("factory", "vectors", "recall_at_10", "search_effort", "memory_ratio",
                                      "build_seconds", "model") if k in m]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"## Index → `{self.out}`\n\n| | |\n|---|---|\n{table}\n"


def run(params: Params, context: StageContext) -> IndexReport:
    """Build `index.out` from `embed.out`'s embeddings and the ingest's tables (the metadata a
    result shows), labelled with the card's figure-type taxonomy by the embeddings' own model."""
    outputs, types = params.ingest.outputs, params.card.figure_types
    metrics = build_index(params.index, embeddings=embeddings_file(params.embed), pairs=outputs.pairs,
                          panels=outputs.panels if params.ingest.panels.enabled else None,
                          figure_types=dict(types.classes) if types.enabled else None, tracking=params.tracking)
    return IndexReport(params.index.out, metrics)
