"""Cross-modal retrieval metrics, computed in chunks: never an N×N similarity matrix in memory.

For each query the rank of its true match is the number of candidates scoring strictly higher
(ties count in the query's favour, as a stable argsort would). Pairs are aligned by index:
image i's caption is text i. Recall@k is the fraction of queries whose match ranks below k;
mean and median rank are 1-based.
"""

from __future__ import annotations

import torch


def match_ranks(queries: torch.Tensor, candidates: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """0-based rank of candidate i among all candidates for query i. (Q, D), (N, D) -> (Q,), Q <= N
    (usually Q == N; fewer queries time a subset against every candidate).

    Memory: one (chunk, N) block of similarities at a time, and its (chunk, N) boolean mask:
    5 bytes per element (`block_rows` sizes the chunk for a budget).
    """
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1] \
            or len(queries) > len(candidates):
        raise ValueError(f"queries {tuple(queries.shape)} and candidates {tuple(candidates.shape)} "
                         "must be aligned pairs: (Q, D) and (N, D) with Q <= N")
    ranks = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), chunk):
        block = queries[start:start + chunk] @ candidates.T  # (chunk, N)
        index = torch.arange(start, start + len(block))
        true = block[torch.arange(len(block)), index].unsqueeze(1)  # (chunk, 1)
        ranks[start:start + len(block)] = torch.count_nonzero(block > true, dim=1)  # + a bool mask
    return ranks


def block_rows(candidates: int, memory_mb: int) -> int:
    """Rows of a (rows, candidates) similarity block (float32 + bool mask) within `memory_mb`."""
    return max(1, memory_mb * 2**20 // (5 * candidates))


def rank_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    ranks = ranks.double()
    metrics = {f"recall_at_{k}": float((ranks < k).double().mean()) for k in ks}
    metrics["mean_rank"] = float(ranks.mean() + 1)
    metrics["median_rank"] = float(torch.quantile(ranks, 0.5) + 1)  # the mean of the middle two if even
    return metrics


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, *,
                      ks: tuple[int, ...] = (1, 5, 10), chunk: int = 4096) -> dict[str, float]:
    """Image→text and text→image metrics of L2-normalised, index-aligned features."""
    image_features, text_features = image_features.float(), text_features.float()
    out = {}
    for direction, (q, c) in {"image_to_text": (image_features, text_features),
                              "text_to_image": (text_features, image_features)}.items():
        for name, value in rank_metrics(match_ranks(q, c, chunk=chunk), ks).items():
            out[f"{direction}/{name}"] = value
    return out
