"""The `embed` stage: every kept pair of the corpus (and its panel pairs) embedded by one model."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.embed.inputs import corpus_input
from biomedclip.embed.params import EmbedParams
from biomedclip.embed.run import embed, rejects_path
from biomedclip.models import chosen_or_trained
from biomedclip.params import Params
from biomedclip.stage import StageContext

EMBEDDINGS = "embeddings.parquet"
SUMMARY = "summary.json"


def embeddings_file(params: EmbedParams) -> Path:
    """The stage's embeddings table: `<embed.out>/embeddings.parquet` (its rejects beside it)."""
    return params.out / EMBEDDINGS


def embed_corpus(params: EmbedParams, *, model: str, pairs: Path, panels: Path | None, images: Path,
                 tracking: Any = None) -> dict[str, Any]:
    """Embed the ingest's pairs (and, with `params.panels`, its panel pairs) with `model` into
    `params.out`: `embeddings.parquet`, `embeddings.rejects.parquet` and `summary.json` (what the
    Parquet's metadata records: model, digests, counts; no timings, so it changes only with them).
    Returns the summary with the run's timing and device."""
    with_panels = params.panels and panels is not None and panels.is_file() and \
        pq.ParquetFile(panels).metadata.num_rows > 0
    source = corpus_input(pairs, panels if with_panels else None, images)
    out = embeddings_file(params)
    summary = embed(source, out, model=model, batch_size=params.batch_size, chunk_rows=params.chunk_rows,
                    workers=params.workers, device=params.device, tracking=tracking)
    recorded = {k: v for k, v in summary.items() if k not in ("seconds", "device", "workers", "up_to_date")}
    recorded["rejects"] = rejects_path(out).name
    atomic_write_bytes(params.out / SUMMARY, (json.dumps(recorded, indent=2, sort_keys=True) + "\n").encode())
    return summary


@dataclass(frozen=True)
class EmbedReport:
    """The `embed` stage's report: what `summary.json` records, and how the run went."""

    out: Path
    summary: Mapping[str, Any]

    def markdown(self) -> str:
        s = self.summary
        state = ("up to date, nothing embedded" if s.get("up_to_date")
                 else f"{s.get('seconds', 0):.1f} s on {s.get('device')}")
        rows = [("model", f"`{s['model']}` (weights sha256 `{str(s['model_sha256'])[:12]}`)"),
                ("rows embedded", f"{s['rows']:,}"),
                ("rejected", f"{s['rejected']:,} (`{rejects_path(self.out / EMBEDDINGS).name}`)"),
                ("dimensions", str(s["dim"])), ("run", state)]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        return f"## Embeddings → `{self.out / EMBEDDINGS}`\n\n| | |\n|---|---|\n{table}\n"


def stage_model(params: Params) -> str:
    """The model the stage embeds with: `embed.model` (in its full form), else the train stage's."""
    model, _ = chosen_or_trained(params.embed.model, params.register.model_name, params.train.outputs.run_info,
                                 key="embed.model", verb="embed with")
    return model


def run(params: Params, context: StageContext) -> EmbedReport:
    """The `embed` stage: the corpus's kept pairs (and panel pairs) by `stage_model(params)`."""
    outputs = params.ingest.outputs
    summary = embed_corpus(params.embed, model=stage_model(params), pairs=outputs.pairs,
                           panels=outputs.panels if params.ingest.panels.enabled else None, images=outputs.images,
                           tracking=params.tracking)
    return EmbedReport(params.embed.out, summary)
