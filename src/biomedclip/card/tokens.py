"""Caption lengths in tokens of the text tower, on a deterministic sample of the captions.

The tokenizer is loaded the way training loads it (open_clip's `HFTokenizer` on the tokenizer
stage's folder) and applied as it applies it (its whitespace cleaning, [CLS] and [SEP] added),
without the truncation, so a length is what the caption would take before the context cuts it:
a caption fits when its length, special tokens included, is at most the context length.
Tokenising every caption of PMC-15M would take longer than the rest of the card together; the
captions counted are every k-th row of the manifest (`stats.stride_for`), which the card says.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from biomedclip.card.stats import distribution

BATCH = 512


def absent_reason(tokenizer: Path | None) -> str | None:
    """Why there are no token counts for `tokenizer`, or None when it can be loaded."""
    if tokenizer is None:
        return "no tokenizer was given (the tokenizer stage writes one: dvc repro tokenizer)"
    if not tokenizer.is_dir():
        return f"the tokenizer folder {tokenizer} does not exist (the tokenizer stage writes it: dvc repro tokenizer)"
    if not (tokenizer / "vocab.txt").is_file() and not (tokenizer / "tokenizer.json").is_file():
        return f"the tokenizer folder {tokenizer} holds no vocab.txt or tokenizer.json"
    return None


def token_lengths(tokenizer: Path, captions: list[str], context_length: int) -> list[int]:
    """Each caption's length in tokens, special tokens included, untruncated."""
    import open_clip

    loaded = open_clip.tokenizer.HFTokenizer(str(tokenizer), context_length=context_length)
    lengths: list[int] = []
    for start in range(0, len(captions), BATCH):
        texts = [loaded.clean_fn(c) for c in captions[start:start + BATCH]]
        encoded = loaded.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def token_stats(tokenizer: Path | None, captions: list[str], *, context_length: int, stride: int,
                rows: int) -> tuple[dict[str, Any], Counter[int]]:
    """The token section of the summary and the lengths' counts (empty when absent)."""
    base = {"context_length": context_length, "tokenizer": None if tokenizer is None else str(tokenizer),
            "sample": len(captions), "stride": stride, "rows": rows}
    reason = absent_reason(tokenizer)
    if reason is None:
        try:
            assert tokenizer is not None
            lengths = token_lengths(tokenizer, captions, context_length)
        except (OSError, ValueError) as exc:
            reason = f"the tokenizer in {tokenizer} could not be loaded ({type(exc).__name__}: {exc})"
    if reason is not None:
        return {**base, "available": False, "absent": reason}, Counter()
    counts = Counter(lengths)
    fit = sum(n for length, n in counts.items() if length <= context_length)
    return {**base, "available": True, "fit_context_count": fit,
            "fit_context": fit / len(lengths) if lengths else None, **distribution(counts)}, counts
