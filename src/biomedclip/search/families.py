"""Which FAISS index, how it is built, and how hard it searches: autofaiss's rules, measured.

The family follows autofaiss (`get_optimal_index_keys_v2`) on inner-product (cosine) vectors:
- below `exact_below` vectors, exact search (`Flat`): at 50k 512-d vectors a query scans 100 MB
  in a few milliseconds, and recall is 1 by construction;
- above it, HNSW (`HNSW{M}`, float32 vectors plus the graph, 4·d + 8·M bytes a vector) when that
  fits `memory_budget_mb`: the best recall per millisecond where memory allows;
- otherwise IVF-PQ: `IVF{nlist},PQ{m}` (m-byte product codes) re-ranked by 8-bit (`Refine(SQ8)`,
  d bytes a vector) or 4-bit scalar codes when those fit, else without re-ranking and the largest
  codes that fit. nlist is the power of two nearest 4·√n (autofaiss's lower
  bound; capped so each list gets ≥ 39 training vectors), with an HNSW coarse quantizer from
  1,000 lists, as autofaiss.
Search effort (HNSW's efSearch, IVF's nprobe) is then tuned as autofaiss tunes it, but against
recall instead of a latency: the smallest effort whose recall@10 against exact search reaches
`target_recall` on half of the queries; the recall reported is measured on the other half.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

K = 10  # recall@10: the neighbours compared
ID_BYTES = 8  # an IVF list stores each vector's id beside its code
REFINE_FACTOR = 32  # IVF-PQ candidates re-ranked per requested result (a k of 10: 320 scalar-code distances)
HNSW_EFFORT = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)


@dataclass(frozen=True)
class IndexPlan:
    family: str  # flat | hnsw | ivfpq
    factory: str  # the faiss.index_factory key
    dim: int
    vectors: int
    bytes_per_vector: float  # estimated memory
    reason: str
    nlist: int | None = None
    hnsw_m: int | None = None
    ef_construction: int | None = None

    @property
    def memory_bytes(self) -> int:
        return int(self.bytes_per_vector * self.vectors)

    @property
    def needs_training(self) -> bool:
        return self.family == "ivfpq"


@dataclass
class SearchEffort:
    """What a query does: HNSW's efSearch or IVF's nprobe (with the re-ranking factor)."""

    ef_search: int | None = None
    nprobe: int | None = None
    k_factor: int | None = None

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("ef_search", self.ef_search), ("nprobe", self.nprobe),
                                  ("k_factor", self.k_factor)) if v is not None}


def nlist_for(vectors: int, requested: int | None = None) -> int:
    if requested:
        return max(1, min(requested, vectors // 39 or 1))
    nearest = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(vectors))))
    return int(max(1, min(nearest, 65_536, vectors // 39 or 1)))


def _ivfpq_options(dim: int, pq_bytes: int | None) -> list[tuple[int, str | None, float]]:
    """(PQ code bytes m, re-ranking codes, bytes a vector), best recall first: d/8-byte codes
    re-ranked by 8-bit then 4-bit scalar codes, then codes alone from d/4 bytes down. (8-bit PQ:
    FAISS 1.15's 4-bit fast-scan IVF-PQ measured recall@10 under 0.1 on inner product here.)"""
    sizes = [pq_bytes] if pq_bytes is not None else \
        [m for m in (dim // 4, dim // 8, dim // 16, dim // 32) if m >= 1 and dim % m == 0]
    refined = sizes[0] if pq_bytes is not None else (dim // 8 if dim // 8 in sizes else sizes[-1])
    options: list[tuple[int, str | None, float]] = [(refined, "SQ8", float(dim)), (refined, "SQ4", dim / 2)]
    options += [(m, None, 0.0) for m in sizes]
    return [(m, refine, m + ID_BYTES + extra) for m, refine, extra in options]


def plan_index(vectors: int, dim: int, *, family: str = "auto", exact_below: int = 50_000,
               memory_budget_mb: int = 4096, hnsw_m: int = 32, ef_construction: int = 80,
               nlist: int | None = None, pq_bytes: int | None = None) -> IndexPlan:
    """The index for `vectors` vectors of width `dim` (see the module's docstring)."""
    budget = memory_budget_mb * 2**20
    if family == "flat" or (family == "auto" and vectors < exact_below):
        why = "asked for" if family == "flat" else f"{vectors:,} vectors < exact_below ({exact_below:,})"
        return IndexPlan("flat", "Flat", dim, vectors, 4.0 * dim, f"exact search: {why}")
    hnsw_bytes = 4.0 * dim + 8.0 * hnsw_m
    if family == "hnsw" or (family == "auto" and vectors * hnsw_bytes <= budget):
        why = "asked for" if family == "hnsw" else \
            f"{vectors * hnsw_bytes / 2**20:,.0f} MiB fits the budget of {memory_budget_mb:,} MiB"
        return IndexPlan("hnsw", f"HNSW{hnsw_m}", dim, vectors, hnsw_bytes, f"HNSW: {why}",
                         hnsw_m=hnsw_m, ef_construction=ef_construction)
    lists = nlist_for(vectors, nlist)
    options = _ivfpq_options(dim, pq_bytes)
    fitting = [o for o in options if vectors * o[2] <= budget]
    if not fitting and family == "auto":
        smallest = min(o[2] for o in options) * vectors / 2**20
        raise ValueError(f"no index of {vectors:,} {dim}-d vectors fits index.memory_budget_mb = {memory_budget_mb:,}"
                         f" (the smallest, IVF-PQ without re-ranking, needs {smallest:,.0f} MiB)")
    m, refine, per_vector = (fitting or options)[0]
    # autofaiss: an HNSW coarse quantizer from 1,000 lists (assigning to thousands of centroids
    # is then logarithmic, not a scan); `np`: no polysemous training (60x slower to train).
    coarse = f"IVF{lists}_HNSW32" if lists >= 1000 else f"IVF{lists}"
    key = f"{coarse},PQ{m}np" + (f",Refine({refine})" if refine else "")
    why = "asked for" if family == "ivfpq" else \
        f"HNSW would need {vectors * hnsw_bytes / 2**20:,.0f} MiB > {memory_budget_mb:,} MiB"
    return IndexPlan("ivfpq", key, dim, vectors, per_vector, f"IVF-PQ: {why}", nlist=lists)


def new_index(plan: IndexPlan) -> Any:
    import faiss

    if plan.family == "hnsw":
        index = faiss.IndexHNSWFlat(plan.dim, plan.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = plan.ef_construction
        return index
    return faiss.index_factory(plan.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)


def _ivf_parameters(ivf: Any, effort: SearchEffort, selector: Any) -> Any:
    """IVF's nprobe; with an HNSW coarse quantizer, its efSearch at twice that (as autofaiss)."""
    import faiss

    nprobe = effort.nprobe or 1
    extra: dict[str, Any] = {} if selector is None else {"sel": selector}
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        extra["quantizer_params"] = faiss.SearchParametersHNSW(efSearch=max(16, 2 * nprobe))
    return faiss.SearchParametersIVF(nprobe=nprobe, **extra)


def search_parameters(index: Any, effort: SearchEffort, selector: Any = None) -> Any:
    """FAISS's per-call search parameters for `index` at `effort`, restricted to `selector`."""
    import faiss

    extra: dict[str, Any] = {} if selector is None else {"sel": selector}
    if isinstance(index, faiss.IndexRefine):
        return faiss.IndexRefineSearchParameters(k_factor=float(effort.k_factor or 1),
                                                 base_index_params=_ivf_parameters(faiss.extract_index_ivf(index),
                                                                                   effort, selector))
    if isinstance(index, faiss.IndexIVF):
        return _ivf_parameters(index, effort, selector)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=effort.ef_search or 16, **extra)
    return faiss.SearchParameters(**extra) if selector is not None else None


def search(index: Any, queries: np.ndarray, k: int, effort: SearchEffort,
           selector: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions) of the top `k` per query; position -1 where fewer exist."""
    params = search_parameters(index, effort, selector)
    if isinstance(effort.ef_search, int) and effort.ef_search < k:
        params = search_parameters(index, SearchEffort(ef_search=k), selector)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)


def exact_neighbours(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int = K) -> np.ndarray:
    """(Q, k) positions of each query's exact top-k by inner product over vectors given in blocks
    (streamed: memory holds one block)."""
    import faiss

    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    offset = 0
    for block in blocks:
        flat = faiss.IndexFlatIP(block.shape[1])
        flat.add(np.ascontiguousarray(block, dtype=np.float32))
        scores, ids = flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(block)))
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, ids + offset], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        offset += len(block)
    return best_ids


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = K) -> float:
    """Mean share of each query's exact top-k found in its approximate top-k."""
    if not len(truth):
        return 1.0
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) / min(k, len(t)) for f, t in zip(found, truth,
                                                                                                   strict=True)]
    return float(np.mean(hits))


def efforts(index: Any, plan: IndexPlan) -> list[SearchEffort]:
    """The efforts to try, cheapest first."""
    if plan.family == "hnsw":
        return [SearchEffort(ef_search=ef) for ef in HNSW_EFFORT]
    if plan.family == "ivfpq":
        lists = plan.nlist or 1
        probes = sorted({p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
                         if p <= lists} | {lists})
        factor = REFINE_FACTOR if "Refine" in plan.factory else None
        return [SearchEffort(nprobe=p, k_factor=factor) for p in probes]
    return [SearchEffort()]


def tune(index: Any, plan: IndexPlan, queries: np.ndarray, truth: np.ndarray,
         target: float) -> tuple[SearchEffort, float, float, list[dict[str, Any]]]:
    """The cheapest effort reaching `target` recall@10 on the first half of the queries (the most
    effort when none does); its recall on the second half; and every effort tried, measured."""
    half = max(1, len(queries) // 2)
    tuning, held_out = (queries[:half], truth[:half]), (queries[half:], truth[half:])
    if not len(held_out[0]):
        held_out = tuning
    tried: list[dict[str, Any]] = []
    chosen = None
    for effort in efforts(index, plan):
        _, found = search(index, tuning[0], K, effort)
        recall = recall_at(found, tuning[1])
        tried.append({**effort.as_dict(), "recall_at_10": round(recall, 4)})
        chosen = effort
        if recall >= target:
            break
    assert chosen is not None
    tuned = tried[-1]["recall_at_10"]
    _, found = search(index, held_out[0], K, chosen)
    return chosen, tuned, recall_at(found, held_out[1]), tried


def blocks_of(vectors: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    for start in range(0, len(vectors), rows):
        yield vectors[start:start + rows]
