"""Train/val/test by article: a hash of the PMCID, so an article never changes split as the
corpus grows, and every figure of an article lands in the same split (no leakage)."""

from __future__ import annotations

import hashlib

from biomedclip.ingest.params import SplitParams

SPLITS = ("train", "val", "test")


def split_of(pmcid: str, params: SplitParams) -> str:
    digest = hashlib.sha256(f"{params.salt}\x1f{pmcid}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < params.train:
        return "train"
    return "val" if u < params.train + params.val else "test"
