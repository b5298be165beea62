"""The model report's pictures: what a reader looks at before trusting a recall number.

For a few captions of the held-out split, the top-k figures the model retrieves among a pool of
that split's pairs, the true figure marked (or its rank, when it is not in the top k); for a few
figures, the top-k captions, the true one marked. One offline page (`index.html`, no scripts,
every caption escaped) with the thumbnails beside it, written as one atomic folder next to
`reports/model-tests.md`; the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from html import escape
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from biomedclip.atomic_io import atomic_directory

THUMB_SIDE = 160
STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232b;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}.query{margin:18px 0 6px;font-weight:600}
.row{display:flex;gap:10px;flex-wrap:wrap}
.hit{width:170px;font-size:12px;border:3px solid #e1e4e8;padding:4px;border-radius:4px}
.hit.true{border-color:#1a7f37;background:#eefbf1}
.hit img{width:160px;height:160px;object-fit:contain;background:#f3f4f6}
.tag{font-weight:600;color:#1a7f37}.miss{color:#9a3412}
ol.captions li{margin:4px 0;padding:4px 8px;border-left:4px solid #e1e4e8}
ol.captions li.true{border-color:#1a7f37;background:#eefbf1}table.q{border-collapse:collapse}
.q td{vertical-align:top;padding:6px}"""


def _thumbnail(jpeg: bytes) -> bytes:
    from biomedclip.evaluate.embedding import decode

    image = decode(jpeg)
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _chosen(pool: int, queries: int) -> list[int]:
    """`queries` evenly spaced positions of the pool (deterministic, not the first few only)."""
    if pool <= queries:
        return list(range(pool))
    return [round(i * (pool - 1) / (queries - 1)) for i in range(queries)] if queries > 1 else [0]


def retrieval_examples(encoder: Any, samples: Iterable[tuple[bytes, str]], out: Path, *, pool: int = 256,
                       queries: int = 4, k: int = 5, batch_size: int = 64, model: str = "") -> dict[str, Any]:
    """Write the page into `out` (replaced atomically) from the first `pool` (JPEG, caption) pairs
    of a split (e.g. `evaluate.embedding.shard_samples(shards/test)`); returns what it shows."""
    from biomedclip.evaluate.embedding import embed_pairs

    items = list(islice(samples, pool))
    if len(items) < 2:
        raise ValueError(f"retrieval examples need at least 2 pairs, found {len(items)}")
    images, texts = embed_pairs(encoder, items, batch_size)
    similarity = texts @ images.T  # (P, P): caption i against figure j
    k = min(k, len(items))
    shown: dict[str, Any] = {"pool": len(items), "k": k, "model": model, "text_to_image": [], "image_to_text": []}
    for i in _chosen(len(items), queries):
        order = torch.argsort(similarity[i], descending=True, stable=True).tolist()
        shown["text_to_image"].append({"query": i, "top": order[:k], "true_rank": order.index(i) + 1})
    for j in _chosen(len(items), queries):
        order = torch.argsort(similarity[:, j], descending=True, stable=True).tolist()
        shown["image_to_text"].append({"query": j, "top": order[:k], "true_rank": order.index(j) + 1})
    used = sorted({n for e in shown["text_to_image"] for n in e["top"]} | {e["query"] for e in shown["image_to_text"]})
    with atomic_directory(out) as staging:
        for n in used:
            (staging / f"figure-{n:04d}.jpg").write_bytes(_thumbnail(items[n][0]))
        (staging / "index.html").write_text(_page(shown, items, similarity), encoding="utf-8")
        (staging / "examples.json").write_text(json.dumps(shown, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return shown


def _rank_note(rank: int, k: int, pool: int, what: str) -> str:
    if rank <= k:
        return f'<span class="tag">the true {what} is at rank {rank}</span>'
    return f'<span class="miss">the true {what} is at rank {rank} of {pool}, not in the top {k}</span>'


def _page(shown: dict[str, Any], items: list[tuple[bytes, str]], similarity: torch.Tensor) -> str:
    pool, k = shown["pool"], shown["k"]
    parts = [f"<h1>Retrieval examples{' of ' + escape(shown['model']) if shown['model'] else ''}</h1>",
             f"<p>Among the first {pool} pairs of the held-out split. Green: the figure (or caption) that truly goes "
             "with the query. Scores are cosine similarities.</p>", f"<h2>Caption → top {k} figures</h2>"]
    for entry in shown["text_to_image"]:
        i = entry["query"]
        parts.append(f'<p class="query">“{escape(items[i][1])}”<br>'
                     f'{_rank_note(entry["true_rank"], k, pool, "figure")}</p>'
                     '<div class="row">')
        for rank, n in enumerate(entry["top"], start=1):
            mark = ' true' if n == i else ''
            tag = '<div class="tag">✓ true figure</div>' if n == i else ''
            parts.append(f'<div class="hit{mark}"><img src="figure-{n:04d}.jpg" alt="figure {n}">'
                         f'<div>{rank}. {float(similarity[i, n]):.3f}</div>{tag}</div>')
        parts.append("</div>")
    parts.append(f"<h2>Figure → top {k} captions</h2>")
    for entry in shown["image_to_text"]:
        j = entry["query"]
        rows = "".join(f'<li class="{"true" if n == j else ""}">{float(similarity[n, j]):.3f} '
                       f'{"<b>✓ true caption</b> " if n == j else ""}{escape(items[n][1])}</li>' for n in entry["top"])
        parts.append(f'<table class="q"><tr><td><img src="figure-{j:04d}.jpg" alt="figure {j}" width="160"></td>'
                     f'<td>{_rank_note(entry["true_rank"], k, pool, "caption")}<ol class="captions">{rows}</ol></td>'
                     "</tr></table>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Retrieval examples</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>\n")
