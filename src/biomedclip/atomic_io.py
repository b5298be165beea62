"""Atomic outputs: a file or a folder appears complete or not at all.

Every stage writes its outputs through these functions, so a run killed at any point (SIGKILL
included) leaves either the previous output or none, never a half-written one, and the next run
starts clean. A file is replaced by one rename. A folder takes two: the old one is renamed aside,
then the new one into place; a kill between the two leaves no folder at the final path (the old
one sits aside as `.NAME.old-PID` and the next run removes it).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


class UnsafeOutput(ValueError):
    """Replacing this output folder could destroy files the command did not write."""


def check_replaceable(final: Path, marker: str, *, force: bool = False) -> None:
    """Refuse to replace a folder unless it is new, empty, or carries `marker` (or `force`).

    Never the current folder, one of its parents, the home folder or a filesystem root, even
    with `force`: a typo'd output path must not wipe a project.
    """
    here = Path.cwd()
    target = final.absolute()
    if target == here or target in here.parents or target == Path.home() or target == Path(target.anchor):
        raise UnsafeOutput(f"refusing to replace {final}: it is the current folder, one of its "
                           "parents, the home folder or a filesystem root")
    if target.exists() and not target.is_dir():
        raise UnsafeOutput(f"refusing to replace {final}: it exists and is not a folder")
    if force or not target.is_dir() or (target / marker).exists():
        return
    if any(target.iterdir()):
        raise UnsafeOutput(f"refusing to replace {final}: it holds files this command did not "
                           f"write (no {marker} marker); choose a new or empty folder, or force it")


@cache
def file_mode() -> int:
    """The mode a new file gets from this process's umask (0644 under the usual 022): what an
    output written through a temp file must end with (`mkstemp` makes its files 0600, which a
    teammate on a shared workspace could not read)."""
    try:  # Linux says it without changing it; os.umask would, for every thread, for a moment
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a unique temp file in the same folder and `os.replace`
    (safe when several threads or processes write the same path at once)."""
    with atomic_writer(path) as fh:
        fh.write(data)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle for output too big to hold in memory: written to a unique temp file
    beside `path`, fsynced, then renamed over it; deleted if the block raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), file_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stale_siblings(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".{final.name}.partial-*")) + sorted(
        final.parent.glob(f".{final.name}.old-*")
    )


@contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces `final`: the old folder is renamed
    aside, the staging folder renamed to `final`, then the old one deleted.

    Leftovers of a killed earlier run (`.NAME.partial-*`, `.NAME.old-*`) are removed first.
    If the block raises, the staging folder is deleted and `final` is untouched.
    """
    final = final.absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_siblings(final):
        log.info("removing leftover of an interrupted run: %s", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
