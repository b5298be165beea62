"""One writer at a time: OS file locks that name their holder and die with it.

A retrain holds the workspace (`retrain.lock`); every stage run holds its outputs while it writes
them (`biomedclip.pipeline.runner`), so a second `biomedclip ingest` in the same folder, or a
manual run while the scheduled retrain's `dvc repro` runs the same stage, waits or stops at once
naming who holds it, instead of writing beside it. The lock is the OS's (`fcntl` through
`filelock`): when its process dies, however it dies, the lock is free again; the `.holder` file
beside it only says who held it last.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class Busy(RuntimeError):
    """Another process holds the lock; the message names it (pid, host, since, command)."""


def holder_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder")


@contextmanager
def held(lock: Path, *, what: str, wait: bool, timeout_s: float) -> Iterator[None]:
    """Hold `lock` (for `what`, named in the message a second process gets). Busy: wait up to
    `timeout_s`, or (`wait` false) raise `Busy` at once, naming the holder."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(lock))
    try:
        file_lock.acquire(timeout=timeout_s if wait else 0)
    except Timeout:
        try:
            who = holder_path(lock).read_text().strip() or "unknown"
        except FileNotFoundError:
            who = "unknown"
        waited = f" (waited {timeout_s:g} s)" if wait else ""
        raise Busy(f"another process holds {what}: {who}{waited}") from None
    try:
        command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]) if sys.argv else "python"
        holder_path(lock).write_text(f"pid {os.getpid()} on {socket.gethostname()} since "
                                     f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} "
                                     f"({command})\n")
        yield
    finally:
        holder_path(lock).unlink(missing_ok=True)
        file_lock.release()
