"""SHA-256 of files, read in 1 MiB chunks (shards and checkpoints are large): the one digest
that shard manifests, run digests and lineage tags all record."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
