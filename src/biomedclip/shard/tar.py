"""Byte-reproducible tar members: the same samples always make the same shard bytes.

Every member has fixed metadata (mtime 0, owner 0:0 with empty names, mode 0644, USTAR format,
no PAX headers), so a shard's SHA-256, and DVC's hash of the shard folder, depend only on its
samples.
"""

from __future__ import annotations

import io
import tarfile
from typing import BinaryIO

MEMBER_MODE = 0o644


def member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def sample_tar(fh: BinaryIO) -> tarfile.TarFile:
    """A tar writer on `fh`: use as a context manager, add samples with `add_sample`."""
    return tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT)


def add_sample(tar: tarfile.TarFile, key: str, files: dict[str, bytes]) -> None:
    """One WebDataset sample: `<key>.<ext>` members, together, in the order given."""
    for ext, data in files.items():
        tar.addfile(member(f"{key}.{ext}", len(data)), io.BytesIO(data))
