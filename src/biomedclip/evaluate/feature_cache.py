"""The one cache of features computed from a model: per (model weights digest, benchmark version,
split), one `.pt` file of named tensors, written atomically, read with `weights_only=True`.

The linear probe keeps its image features here (`evaluate.probe.cached_features`) and visual
question answering its token features (`vqa.features`): a second run, a second probe fraction or
a second answer-model recipe embeds nothing. Keys are digests, never paths, so a moved project
keeps its cache; a changed model or benchmark gives a new key, never a stale entry.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from biomedclip.atomic_io import atomic_writer

log = logging.getLogger(__name__)


def cache_key(model_digest: str, benchmark_version: str, split: str) -> str:
    return hashlib.sha256(f"{model_digest}\0{benchmark_version}\0{split}".encode()).hexdigest()[:32]


def cached_tensors(cache: Path, key: str, compute: Callable[[], dict[str, torch.Tensor]]
                   ) -> tuple[dict[str, torch.Tensor], bool]:
    """(tensors, from_cache): `cache/<key>.pt` when it is there and readable, else computed and
    written there (atomically). Tensors are stored as given (dtype included), contiguous."""
    path = cache / f"{key}.pt"
    if path.is_file():
        try:
            stored = torch.load(path, weights_only=True)
            if isinstance(stored, dict) and all(torch.is_tensor(v) for v in stored.values()):
                log.info("features from the cache: %s", path)
                return stored, True
            log.warning("ignoring cached features %s: not a mapping of tensors", path)
        except Exception as exc:  # a damaged entry (whatever torch raises for it) is recomputed
            log.warning("ignoring unreadable cached features %s (%s)", path, exc)
    tensors = {name: value.contiguous() for name, value in compute().items()}
    with atomic_writer(path) as fh:  # streamed to the file: no second copy of them in memory
        torch.save(tensors, fh)
    return tensors, False
