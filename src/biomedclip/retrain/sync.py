"""Mirror new, changed and removed PMC article versions from a source into the raw folder.

The source is anything the ingest reads in the opendata layout: a folder, any S3 bucket/prefix,
or PMC's public bucket listed by prefix or through its daily inventory. The target is the local
folder `data.dvc` versions (`ingest.source`). Only article-version prefixes (`PMC{id}.{v}/`) are
mirrored; anything else in the target is left alone.

- What is already here is not fetched again: each object's listing tag (S3 ETag; a file's size
  and mtime) is remembered in a small SQLite state beside the data (not versioned). Without a
  remembered tag, a local file of the right size is compared by content (its MD5 against a plain
  S3 ETag, else against the source bytes) before anything is downloaded.
- A version whose files changed upstream (e.g. its JSON now says `is_retracted`) is fetched
  again; files it no longer lists are deleted. A version gone from the source is removed, but
  never more than `max_removed_fraction` of the local versions at once: a mistyped prefix or an
  empty listing stops the sync instead of emptying the corpus.
- Nothing touches the target until every download has succeeded: files are staged (size and
  MD5 checked) beside it, then moved in with atomic renames, then the state is committed. A sync
  killed at any point leaves the previous corpus or one that a re-run completes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.console import progress
from biomedclip.ingest.sources import VERSION_PREFIX, VersionRef, list_articles
from biomedclip.storage import ObjectInfo, ObjectStore, check_key
from biomedclip.streams import in_order_window

log = logging.getLogger(__name__)
PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")  # an ETag that is the object's MD5 (not multipart)


class SyncError(RuntimeError):
    """The sync cannot go on; the message names the object."""


class RemovalRefused(SyncError):
    """The source lacks more of the local versions than the guard allows (not transient)."""


@dataclass
class SyncReport:
    source: str
    target: str
    listed: int = 0  # article versions in the source
    unchanged: int = 0
    new: list[str] = field(default_factory=list)  # version prefixes, e.g. PMC123.2
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retracted: list[str] = field(default_factory=list)  # new or changed versions flagged retracted
    fetched_objects: int = 0
    fetched_bytes: int = 0
    deleted_objects: int = 0
    seconds: float = 0.0

    @property
    def anything(self) -> bool:
        return bool(self.new or self.changed or self.removed)

    def summary(self) -> str:
        return (f"{self.listed:,} versions listed: {len(self.new):,} new, {len(self.changed):,} changed, "
                f"{len(self.removed):,} removed, {self.unchanged:,} unchanged; {self.fetched_objects:,} "
                f"objects ({self.fetched_bytes / 1e6:,.1f} MB) fetched in {self.seconds:.1f}s")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "anything": self.anything}


@dataclass
class _Plan:
    """What one source version needs: objects to fetch (already staged) and local files to drop."""

    ref: VersionRef
    exists: bool  # the version folder was already in the target
    staged: list[ObjectInfo]
    stale: list[str]  # target keys the source no longer has
    confirmed: list[ObjectInfo]  # same content, tag not remembered yet
    retracted: bool = False
    empty: bool = False  # the source prefix lists no files


class SyncState:
    """Listing tag of every object mirrored into the target, by key."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, tag TEXT NOT NULL, "
                        "size INTEGER NOT NULL)")

    def under(self, prefix: str) -> dict[str, tuple[str, int]]:
        rows = self.db.execute("SELECT key, tag, size FROM objects WHERE key >= ? AND key < ?",
                               (f"{prefix}/", f"{prefix}0"))  # "0" sorts right after "/"
        return {key: (tag, size) for key, tag, size in rows}

    def record(self, objects: list[ObjectInfo]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)",
                            [(o.key, o.tag, o.size) for o in objects])

    def forget(self, keys: list[str]) -> None:
        self.db.executemany("DELETE FROM objects WHERE key = ?", [(k,) for k in keys])

    def forget_prefix(self, prefix: str) -> None:
        self.db.execute("DELETE FROM objects WHERE key >= ? AND key < ?", (f"{prefix}/", f"{prefix}0"))

    def commit(self) -> None:
        self.db.commit()

    def close(self) -> None:
        self.db.close()


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _same_content(store: ObjectStore, obj: ObjectInfo, local: Path) -> bool:
    if PLAIN_MD5.match(obj.tag):
        return _md5_file(local) == obj.tag
    source = hashlib.md5(store.get(obj.key), usedforsecurity=False).hexdigest()
    return _md5_file(local) == source


def _stage(store: ObjectStore, obj: ObjectInfo, staging: Path) -> None:
    data = store.get(obj.key)
    if len(data) != obj.size:
        raise SyncError(f"{store.uri_of(obj.key)}: read {len(data):,} bytes, the listing says {obj.size:,}")
    if PLAIN_MD5.match(obj.tag) and hashlib.md5(data, usedforsecurity=False).hexdigest() != obj.tag:
        raise SyncError(f"{store.uri_of(obj.key)}: content does not match its ETag {obj.tag}")
    path = staging / obj.key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _is_retracted(path: Path) -> bool:
    try:
        return json.loads(path.read_bytes()).get("is_retracted") is True
    except (ValueError, AttributeError, OSError):
        return False  # the ingest rejects an unreadable JSON with its reason


def _plan(store: ObjectStore, target: Path, staging: Path, ref: VersionRef,
          known: dict[str, tuple[str, int]]) -> _Plan:
    folder = target / ref.key
    exists = folder.is_dir()
    listed = [o for o in store.list(ref.key) if not o.key.rpartition("/")[2].startswith(".")]
    staged, confirmed = [], []
    for obj in listed:
        check_key(obj.key)
        local = target / obj.key
        same_size = local.is_file() and not local.is_symlink() and local.stat().st_size == obj.size
        if same_size and known.get(obj.key) == (obj.tag, obj.size):
            continue
        if same_size and _same_content(store, obj, local):
            confirmed.append(obj)
            continue
        _stage(store, obj, staging)
        staged.append(obj)
    wanted = {o.key for o in listed}
    stale = sorted(p.relative_to(target).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.relative_to(target).as_posix() not in wanted) if exists else []
    json_key = f"{ref.key}/{ref.key}.json"
    retracted = any(o.key == json_key for o in staged) and _is_retracted(staging / json_key)
    return _Plan(ref, exists, staged, stale, confirmed, retracted, empty=not listed)


def _local_versions(target: Path) -> set[str]:
    if not target.is_dir():
        return set()
    return {e.name for e in os.scandir(target) if e.is_dir(follow_symlinks=False) and VERSION_PREFIX.match(e.name)}


def _versions(store: ObjectStore, listing: str) -> Iterator[VersionRef]:
    for versions in list_articles(store, "opendata", listing):
        yield from versions


def sync(store: ObjectStore, target: Path, state_dir: Path, *, listing: str = "prefix", workers: int = 8,
         max_removed_fraction: float = 0.05) -> SyncReport:
    """Bring `target` to the source's set of article versions; returns what changed."""
    start = time.monotonic()
    report = SyncReport(source=store.uri, target=str(target))
    staging = state_dir / "staging"
    shutil.rmtree(staging, ignore_errors=True)  # a killed sync's downloads: never half-applied
    staging.mkdir(parents=True)
    state = SyncState(state_dir / "sync.sqlite")
    local = _local_versions(target)
    seen: set[str] = set()
    plans: list[_Plan] = []
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
            def jobs() -> Iterator[Any]:
                for ref in _versions(store, listing):
                    seen.add(ref.key)
                    report.listed += 1
                    yield ref, state.under(ref.key)  # read here: SQLite stays on this thread

            results = in_order_window(lambda job: pool.submit(_plan, store, target, staging, *job),
                                      jobs(), window=4 * workers)
            for plan in progress(results, total=None, description="sync versions", every_items=500):
                if plan.empty:
                    log.warning("%s lists no files: left as it is", store.uri_of(plan.ref.key))
                    report.unchanged += 1
                elif plan.staged or plan.stale or not plan.exists:
                    plans.append(plan)
                else:
                    report.unchanged += 1
                if plan.confirmed:
                    state.record(plan.confirmed)
        gone = sorted(local - seen)
        if gone and len(gone) > max_removed_fraction * len(local):
            raise RemovalRefused(
                f"{len(gone):,} of the {len(local):,} local versions are missing from {store.uri} "
                f"({report.listed:,} listed), more than retrain.max_removed_fraction "
                f"({max_removed_fraction:.0%}) allows: is the source right? First missing: {gone[0]}")
        _apply(plans, gone, target, staging, state, report)
        state.commit()
    finally:
        state.close()
        shutil.rmtree(staging, ignore_errors=True)
    report.seconds = time.monotonic() - start
    log.info("sync %s → %s: %s", store.uri, target, report.summary())
    return report


def _apply(plans: list[_Plan], gone: list[str], target: Path, staging: Path, state: SyncState,
           report: SyncReport) -> None:
    """Move staged files in (atomic renames), drop stale files and removed versions."""
    for plan in plans:
        for obj in plan.staged:
            final = target / obj.key
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / obj.key, final)
            report.fetched_objects += 1
            report.fetched_bytes += obj.size
        for key in plan.stale:
            (target / key).unlink(missing_ok=True)
            report.deleted_objects += 1
        state.record(plan.staged)
        state.forget(plan.stale)
        (report.changed if plan.exists else report.new).append(plan.ref.key)
        if plan.retracted:
            report.retracted.append(plan.ref.key)
    trash = staging / ".removed"
    for prefix in gone:
        folder = target / prefix
        report.deleted_objects += sum(1 for p in folder.rglob("*") if p.is_file())
        trash.mkdir(parents=True, exist_ok=True)
        os.replace(folder, trash / prefix)  # out of the corpus in one rename, then deleted
        shutil.rmtree(trash / prefix)
        state.forget_prefix(prefix)
        report.removed.append(prefix)
