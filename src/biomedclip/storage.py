"""One object-store interface over a local folder and any S3-compatible bucket.

A folder whose tree mirrors the bucket keys and the bucket itself are read by the same code:
`list_dirs`, `list`, `get`. Keys are POSIX paths relative to the store root; a key that would
escape the root (absolute, `..`, a link out of the tree) is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from biomedclip.config import S3Params

log = logging.getLogger(__name__)


class MissingObject(LookupError):
    """The key does not exist in the store."""


class ObjectReadError(OSError):
    """The store did not give an object's bytes, retries included; the message names it."""


class UnsafeKey(ValueError):
    """The key would escape the store's root."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    tag: str = ""  # changes when the object does: S3's ETag; a file's size and mtime


def check_key(key: str) -> str:
    path = PurePosixPath(key)
    if not key or key.startswith("/") or "\\" in key or "\x00" in key or ".." in path.parts:
        raise UnsafeKey(f"unsafe object key {key!r}")
    return key


class ObjectStore(Protocol):
    uri: str

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        """Immediate sub-folders of `prefix` (without trailing slash), in lexicographic order."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, recursively, in lexicographic key order."""
        ...

    def get(self, key: str) -> bytes: ...

    def download(self, key: str, path: Path) -> None:
        """The object into the file `path`, streamed: never whole in memory (large files: PCam's)."""
        ...

    def uri_of(self, key: str) -> str: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"source folder {root} does not exist")
        self.root = root
        self._real_root = root.resolve()
        self.uri = str(root)

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        real = path.resolve()
        if real != self._real_root and self._real_root not in real.parents:
            raise UnsafeKey(f"object key {key!r} resolves outside {self.root}")
        return path

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        names = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        yield from (f"{prefix.rstrip('/')}/{n}".lstrip("/") for n in names)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_symlink():
                    continue
                stat = path.stat()
                yield ObjectInfo(path.relative_to(self.root).as_posix(), stat.st_size,
                                 f"{stat.st_size}:{stat.st_mtime_ns}")

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if path.is_symlink() or not path.is_file():
            raise MissingObject(f"{self.uri_of(key)} does not exist")
        return path.read_bytes()

    def download(self, key: str, path: Path) -> None:
        source = self._path(key)
        if source.is_symlink() or not source.is_file():
            raise MissingObject(f"{self.uri_of(key)} does not exist")
        shutil.copyfile(source, path)

    def uri_of(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"


class S3Store:
    """A bucket (and optional key prefix) through boto3, with retries and backoff."""

    def __init__(self, uri: str, params: S3Params) -> None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {uri!r}")
        self.bucket, self.prefix, self.uri = bucket, prefix.strip("/"), uri.rstrip("/")
        self.max_attempts = params.max_attempts
        config = Config(
            # "standard": exponential backoff with jitter per request. ("adaptive" also throttles
            # the whole client after one SlowDown, stalling every worker thread sharing it.)
            retries={"total_max_attempts": params.max_attempts, "mode": "standard"},
            signature_version=UNSIGNED if params.unsigned else None,
            connect_timeout=10, read_timeout=60,
        )
        self.client = boto3.client("s3", endpoint_url=params.endpoint_url,
                                   region_name=params.region, config=config)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def _base(self, prefix: str) -> str:
        base = self._key(prefix.rstrip("/")) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        return base

    def list_dirs(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base(prefix), Delimiter="/"):
            for entry in page.get("CommonPrefixes", []):
                yield self._strip(entry["Prefix"].rstrip("/"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base(prefix)):
            for entry in page.get("Contents", []):
                yield ObjectInfo(self._strip(entry["Key"]), int(entry["Size"]), entry.get("ETag", "").strip('"'))

    def get(self, key: str) -> bytes:
        """The object's bytes. botocore retries the request (throttling, 5xx, connection errors)
        with exponential backoff; a body cut off or corrupted mid-read is fetched again here.
        What still fails raises ObjectReadError naming the object."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            FlexibleChecksumError,
            IncompleteReadError,
            ResponseStreamingError,
        )

        uri = self.uri_of(key)
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") in ("NoSuchKey", "404"):
                    raise MissingObject(f"{uri} does not exist") from None
                raise ObjectReadError(f"{uri}: {error.get('Code', 'error')} ({error.get('Message', exc)})") from exc
            except BotoCoreError as exc:  # connection errors, after botocore's own retries
                raise ObjectReadError(f"{uri}: {exc}") from exc
            try:
                return response["Body"].read()
            except (ConnectionError, IncompleteReadError, ResponseStreamingError, FlexibleChecksumError) as exc:
                if attempt == self.max_attempts:
                    raise ObjectReadError(f"{uri}: reading the body failed {attempt} times ({exc})") from exc
                delay = min(30.0, 0.5 * 2 ** (attempt - 1))
                log.warning("reading %s failed (%s); retry %d in %.1fs", uri, exc, attempt, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def download(self, key: str, path: Path) -> None:
        """boto3's managed transfer: multipart, streamed to the file, retried per part."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise MissingObject(f"{self.uri_of(key)} does not exist") from None
            raise ObjectReadError(f"{self.uri_of(key)}: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectReadError(f"{self.uri_of(key)}: {exc}") from exc

    def uri_of(self, key: str) -> str:
        return f"{self.uri}/{key}"


def open_store(source: str, s3: S3Params) -> ObjectStore:
    """`s3://bucket/prefix` → S3Store; anything else is a local folder."""
    if source.startswith("s3://"):
        return S3Store(source, s3)
    return LocalStore(Path(source))
