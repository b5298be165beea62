"""Find article versions in a source and read each one's files, whatever the layout.

- "opendata": today's `s3://pmc-oa-opendata` layout, on S3 or mirrored in a folder: one prefix
  per version `PMC{id}.{v}/` with `.json` metadata, `.xml` and media. Listed by prefix, or from
  PMC's daily S3 inventory of `metadata/`.
- "legacy": the retired FTP layout, `oa_file_list.csv` + `oa_package/xx/yy/PMC{id}.tar.gz`.

Listing yields each article's versions together, newest last, so the newest wins and older ones
are recorded as superseded. Reading never writes anything to disk: package members are read in
memory and refused as a whole if any member is unsafe.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

from biomedclip.ingest.rejects import Reason, Rejected
from biomedclip.storage import MissingObject, ObjectStore, UnsafeKey

VERSION_PREFIX = re.compile(r"^(PMC[0-9]{1,12})\.([0-9]{1,6})$")  # ASCII digits, sane sizes
MAX_PACKAGE_BYTES = 2**30  # a legacy package that inflates beyond this is refused (gzip bombs)
INVENTORY_ROOT = "inventory-reports/pmc-oa-opendata/metadata"
FILE_LIST = "oa_file_list.csv"
FILE_LIST_HEADER = ["File", "Article Citation", "Accession ID",
                    "Last Updated (YYYY-MM-DD HH:MM:SS)", "PMID", "License"]


class ArticleRejected(Rejected):
    """An article version whose files cannot be used; `reason` is the reject code."""


@dataclass(frozen=True)
class VersionRef:
    """One article version in a source: where it is, and what the listing already says."""

    pmcid: str
    version: int
    key: str  # opendata: the prefix "PMC123.1"; legacy: the package path
    listed: dict[str, str] = field(default_factory=dict)  # legacy: its oa_file_list.csv row

    @property
    def number(self) -> int:
        return int(self.pmcid[3:])


@dataclass
class ArticleFiles:
    source_uri: str
    digest: str  # changes whenever anything the ingest reads changes
    meta: dict[str, Any]
    xml: Callable[[], bytes]  # loaded only when the article is (re)processed
    media: dict[str, Callable[[], bytes]]  # media file name → loader


def _numeric(pmcid: str) -> int:
    return int(pmcid[3:])


def _group(refs: Iterator[VersionRef]) -> Iterator[list[VersionRef]]:
    """Group a listing sorted by key into per-article lists, versions ascending."""
    current: list[VersionRef] = []
    for ref in refs:
        if current and ref.pmcid != current[0].pmcid:
            yield sorted(current, key=lambda r: r.version)
            current = []
        current.append(ref)
    if current:
        yield sorted(current, key=lambda r: r.version)


def _from_prefixes(store: ObjectStore) -> Iterator[VersionRef]:
    # S3 lists keys in byte order, in which "PMC123." sorts before "PMC1230": all versions of
    # one article are adjacent, so grouping streams without holding the listing in memory.
    for name in store.list_dirs(""):
        match = VERSION_PREFIX.match(name)
        if match:
            yield VersionRef(match.group(1), int(match.group(2)), name)


def latest_inventory(store: ObjectStore) -> str:
    manifests = sorted(d for d in store.list_dirs(INVENTORY_ROOT) if not d.endswith("/data"))
    if not manifests:
        raise FileNotFoundError(f"no inventory under {store.uri_of(INVENTORY_ROOT)}")
    return f"{manifests[-1]}/manifest.json"


def _from_inventory(store: ObjectStore) -> Iterator[VersionRef]:
    manifest = json.loads(store.get(latest_inventory(store)))
    if [c.strip() for c in manifest["fileSchema"].split(",")][:2] != ["Bucket", "Key"]:
        raise ValueError(f"unexpected inventory schema {manifest['fileSchema']!r}")
    versions: dict[str, set[int]] = defaultdict(set)
    for entry in manifest["files"]:
        text = gzip.decompress(store.get(entry["key"])).decode()
        for row in csv.reader(io.StringIO(text)):
            match = re.fullmatch(r"metadata/(PMC[0-9]{1,12})\.([0-9]{1,6})\.json", row[1])
            if match:
                versions[match.group(1)].add(int(match.group(2)))
    for pmcid in sorted(versions, key=_numeric):
        for version in sorted(versions[pmcid]):
            yield VersionRef(pmcid, version, f"{pmcid}.{version}")


def _from_file_list(store: ObjectStore) -> Iterator[VersionRef]:
    text = store.get(FILE_LIST).decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    if header[:6] != FILE_LIST_HEADER:
        raise ValueError(f"{store.uri_of(FILE_LIST)}: unexpected header {header}")
    rows: dict[str, list[dict[str, str]]] = defaultdict(list)
    for values in reader:
        if len(values) >= 6 and re.fullmatch(r"PMC[0-9]{1,12}", values[2]):
            rows[values[2]].append(dict(zip(["file", "citation", "pmcid", "updated", "pmid",
                                             "license"], values, strict=False)))
    for pmcid in sorted(rows, key=_numeric):
        # The list has one row per package; should a PMCID repeat, the last updated wins.
        for version, row in enumerate(sorted(rows[pmcid], key=lambda r: r["updated"]), start=1):
            yield VersionRef(pmcid, version, row["file"], row)


def list_articles(store: ObjectStore, layout: str, listing: str) -> Iterator[list[VersionRef]]:
    """Each article's versions (ascending), articles in PMCID order (numeric or key order)."""
    if layout == "legacy":
        return _group(_from_file_list(store))
    if listing == "inventory":
        return _group(_from_inventory(store))
    return _group(_from_prefixes(store))


# --- reading one version -------------------------------------------------------------------


def _media_name(url: str, prefix: str) -> str:
    """`s3://pmc-oa-opendata/PMC1.1/fig1.jpg?md5=...` → `fig1.jpg` (refusing anything else)."""
    path = urlparse(url).path.lstrip("/")
    parts = PurePosixPath(path).parts
    if prefix not in parts:
        raise UnsafeKey(f"media URL {url!r} is outside {prefix}/")
    rest = parts[parts.index(prefix) + 1:]
    if len(rest) != 1 or rest[0] in ("", ".", "..") or "\\" in rest[0]:
        raise UnsafeKey(f"media URL {url!r} names a path, not a file in {prefix}/")
    return rest[0]


def read_opendata(store: ObjectStore, ref: VersionRef) -> ArticleFiles:
    prefix = ref.key
    try:
        raw = store.get(f"{prefix}/{prefix}.json")
    except MissingObject:
        raise ArticleRejected(Reason.METADATA_INVALID, f"no {prefix}.json") from None
    except UnsafeKey as exc:
        raise ArticleRejected(Reason.METADATA_INVALID, f"{prefix}.json refused: {exc}") from None
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if f"{meta['pmcid']}.{meta['version']}" != prefix:
            raise ValueError(f"describes {meta['pmcid']}.{meta['version']}, not {prefix}")
        for name, kinds in (("license_code", (str, type(None))), ("is_retracted", (bool, type(None)))):
            if not isinstance(meta.get(name), kinds):
                raise ValueError(f"{name} is a {type(meta.get(name)).__name__}")
        urls = meta.get("media_urls")
        if urls is None:  # not stated: what the prefix holds
            names = [o.key.rpartition("/")[2] for o in store.list(prefix)]
        elif isinstance(urls, list):
            names = [_media_name(str(u), prefix) for u in urls]
        else:
            raise ValueError("media_urls is not a list")
    except (ValueError, KeyError, TypeError, UnsafeKey, RecursionError) as exc:
        reason = Reason.MEDIA_NAME_UNSAFE if isinstance(exc, UnsafeKey) else Reason.METADATA_INVALID
        raise ArticleRejected(reason, f"{prefix}.json: {exc}") from None
    own = {f"{prefix}.xml", f"{prefix}.txt", f"{prefix}.json", f"{prefix}.pdf"}
    media = {name: _loader(store, f"{prefix}/{name}") for name in names if name not in own}
    # The JSON lists the md5 of the XML and of every media file: its digest covers them all.
    return ArticleFiles(store.uri_of(prefix), hashlib.md5(raw, usedforsecurity=False).hexdigest(),
                        meta, _xml_loader(store, prefix), media)


def _loader(store: ObjectStore, key: str) -> Callable[[], bytes]:
    return lambda: store.get(key)


def _xml_loader(store: ObjectStore, prefix: str) -> Callable[[], bytes]:
    def load() -> bytes:
        try:
            return store.get(f"{prefix}/{prefix}.xml")
        except MissingObject:
            raise ArticleRejected(Reason.XML_MISSING, f"no {prefix}.xml") from None
        except UnsafeKey as exc:
            raise ArticleRejected(Reason.XML_MISSING, f"{prefix}.xml refused: {exc}") from None

    return load


def _gunzip(data: bytes) -> bytes:
    """Inflate a whole gzip member, checking its CRC-32 and length (tarfile alone stops at the
    tar end-of-archive block and never reads the trailer) and refusing gzip bombs."""
    inflater = zlib.decompressobj(wbits=31)
    payload = inflater.decompress(data, MAX_PACKAGE_BYTES + 1)
    if len(payload) > MAX_PACKAGE_BYTES:
        raise ArticleRejected(Reason.ARCHIVE_CORRUPT, f"inflates beyond {MAX_PACKAGE_BYTES:,} bytes")
    if not inflater.eof:
        raise EOFError("gzip stream ends before its trailer (truncated)")
    return payload


def read_legacy(store: ObjectStore, ref: VersionRef) -> ArticleFiles:
    """Open one `oa_package` tarball in memory; any unsafe member refuses the whole package."""
    try:
        data = store.get(ref.key)
    except MissingObject:
        raise ArticleRejected(Reason.XML_MISSING, f"package {ref.key} is missing") from None
    except UnsafeKey as exc:
        raise ArticleRejected(Reason.ARCHIVE_UNSAFE, str(exc)) from None
    files: dict[str, bytes] = {}
    try:
        payload = _gunzip(data) if data[:2] == b"\x1f\x8b" else data
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
            for member in tar:
                name = member.name
                parts = PurePosixPath(name).parts
                if name.startswith("/") or ".." in parts or "\\" in name:
                    raise ArticleRejected(Reason.ARCHIVE_UNSAFE, f"member path {name!r} escapes the package")
                if member.issym() or member.islnk():
                    raise ArticleRejected(Reason.ARCHIVE_UNSAFE, f"member {name!r} is a link")
                if member.isdev() or member.isfifo():
                    raise ArticleRejected(Reason.ARCHIVE_UNSAFE, f"member {name!r} is a device or FIFO")
                if member.isfile():
                    extracted = tar.extractfile(member)
                    files[parts[-1]] = extracted.read() if extracted else b""
    except ArticleRejected:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError, gzip.BadGzipFile) as exc:
        raise ArticleRejected(Reason.ARCHIVE_CORRUPT, f"{ref.key}: {type(exc).__name__}: {exc}") from None
    articles = sorted(n for n in files if n.endswith((".nxml", ".xml")))
    if not articles:
        raise ArticleRejected(Reason.XML_MISSING, f"{ref.key} holds no .nxml")
    xml = files.pop(articles[0])
    row = ref.listed
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    media = {name: (lambda payload=payload: payload) for name, payload in files.items()}
    meta = {"pmcid": ref.pmcid, "version": ref.version, "pmid": row.get("pmid"),
            "license_code": row.get("license"), "is_retracted": False}
    return ArticleFiles(store.uri_of(ref.key), digest, meta, lambda: xml, media)


def read_version(store: ObjectStore, ref: VersionRef, layout: str) -> ArticleFiles:
    return read_legacy(store, ref) if layout == "legacy" else read_opendata(store, ref)
