"""The `embed` stage: every kept pair of the corpus (and its panel pairs) embedded by one model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.embed.inputs import corpus_input
from biomedclip.embed.params import EmbedParams
from biomedclip.embed.run import embed, rejects_path

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
