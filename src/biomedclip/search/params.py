"""The `index` section: the vector index over the corpus's image embeddings, and its search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from biomedclip.config import PathValue, Rate, Section


class ServeParams(Section):
    """`biomedclip search serve`: the page and the JSON API."""

    host: str = "127.0.0.1"  # loopback: another address exposes the corpus to that network
    port: Annotated[int, Field(ge=1, le=65535)] = 8765
    default_k: Annotated[int, Field(ge=1)] = 10
    max_k: Annotated[int, Field(ge=1, le=1000)] = 100  # a larger k is refused (400)
    max_query_chars: Annotated[int, Field(ge=1, le=100_000)] = 1000  # a longer query is refused (400)
    max_upload_mb: Annotated[float, Field(gt=0, le=1024, strict=False)] = 20.0  # a larger upload: 413
    max_filters: Annotated[int, Field(ge=0, le=100)] = 10


class IndexParams(Section):
    """How the index is built (autofaiss's rules: exact below a size, HNSW when it fits the memory
    budget, IVF-PQ when it does not) and tuned (the smallest search effort reaching
    `target_recall` at 10 against exact search)."""

    out: PathValue = Path("data/index")  # index.faiss, metadata.sqlite, facets.npz, index.json
    metrics: PathValue = Path("metrics/index.json")  # family, memory, build time, recall@10
    family: Literal["auto", "flat", "hnsw", "ivfpq"] = "auto"
    exact_below: Annotated[int, Field(ge=0)] = 50_000  # vectors: exact search below this
    memory_budget_mb: Annotated[int, Field(ge=16)] = 4096  # the index in memory, at most
    hnsw_m: Annotated[int, Field(ge=4, le=128)] = 32  # graph links per vector
    hnsw_ef_construction: Annotated[int, Field(ge=8)] = 80
    nlist: Annotated[int, Field(ge=1)] | None = None  # IVF lists; null: 2^round(log2(4 sqrt(n)))
    pq_bytes: Annotated[int, Field(ge=4)] | None = None  # PQ code size; null: by the budget
    target_recall: Rate = 0.95  # recall@10 against exact search the search effort is tuned to
    recall_queries: Annotated[int, Field(ge=10)] = 1000  # captions (text embeddings) as queries
    train_sample: Annotated[int, Field(ge=1000)] = 200_000  # vectors IVF and PQ are trained on
    threads: Annotated[int, Field(ge=1, le=256)] = 2  # FAISS's OpenMP threads
    seed: Annotated[int, Field(ge=0)] = 0
    figure_types: bool = True  # label each figure with the card's taxonomy (zero-shot, this model)
    serve: ServeParams = ServeParams()
