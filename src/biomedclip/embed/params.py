"""The `embed` section: the corpus's image and text embeddings (`biomedclip embed`, stage `embed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from biomedclip.config import PathValue, Section


class EmbedParams(Section):
    """Every kept pair (and panel pair, with panels on) embedded by one model, into `out`."""

    # null: the train stage's model (as evaluate.model); a folder, hf-hub:<org>/<repo>, or a
    # registered version, e.g. models:/biomedclip@champion
    model: str | None = None
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64  # images (or texts) per forward pass
    chunk_rows: Annotated[int, Field(ge=1)] = 1024  # rows per row group: the unit of work and of resume
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # CPU: processes, one torch thread each; GPU: decoders
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the GPU when there is one
    panels: bool = True  # also embed the panel table's pairs (when the ingest split figures)
    out: PathValue = Path("data/embeddings")  # embeddings.parquet, rejects.parquet, summary.json
