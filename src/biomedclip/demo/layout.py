"""Write article versions in PMC's two distribution layouts.

`OpenDataLayout` mirrors today's `s3://pmc-oa-opendata` bucket: one prefix per article version
(`PMC{id}.{v}/` with `.xml`, `.txt`, `.json` and media under their original names), a copy of
each JSON under `metadata/`, and the daily S3 inventory of `metadata/` under
`inventory-reports/pmc-oa-opendata/metadata/`.

`LegacyLayout` mirrors the retired FTP service: `oa_package/xx/yy/PMC{id}.tar.gz` packages with
the `.nxml` and media of the newest version, and `oa_file_list.csv`.

Every byte is a function of the articles: no wall-clock times, fixed tar and gzip headers.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import tarfile
import uuid
from pathlib import Path

import deflate

from biomedclip.demo.article import ArticleVersion
from biomedclip.demo.jats import article_text, article_xml

BUCKET = "pmc-oa-opendata"
INVENTORY_PREFIX = f"inventory-reports/{BUCKET}/metadata"
INVENTORY_SCHEMA = "Bucket, Key, LastModifiedDate, ETag"
FILE_LIST_HEADER = ["File", "Article Citation", "Accession ID",
                    "Last Updated (YYYY-MM-DD HH:MM:SS)", "PMID", "License"]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def metadata_json(a: ArticleVersion, files: dict[str, bytes]) -> bytes:
    """The per-version JSON, with the field names and URL form PMC publishes."""

    def url(name: str) -> str:
        return f"s3://{BUCKET}/{a.prefix}/{name}?md5={md5_hex(files[name])}"

    doc = {
        "pmcid": a.pmcid,
        "version": a.version,
        "pmid": a.pmid,
        "doi": a.doi,
        "title": a.title,
        "citation": a.citation,
        "is_pmc_openaccess": True,
        "is_manuscript": a.journal.manuscript,
        "is_historical_ocr": False,
        "is_retracted": a.retracted,
        "license_code": a.license_code,
        "xml_url": url(f"{a.prefix}.xml"),
        "text_url": url(f"{a.prefix}.txt"),
        "pdf_url": None,
        "media_urls": [url(name) for name in sorted(a.media)],
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


class OpenDataLayout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.inventory: list[tuple[str, dt.datetime, str]] = []
        self.files = 0
        self.bytes = 0

    def write(self, a: ArticleVersion) -> None:
        files = {f"{a.prefix}.xml": article_xml(a, "opendata"),
                 f"{a.prefix}.txt": article_text(a).encode(), **a.media}
        meta = metadata_json(a, files)
        files[f"{a.prefix}.json"] = meta
        for name, data in files.items():
            _write(self.root / a.prefix / name, data)
        _write(self.root / "metadata" / f"{a.prefix}.json", meta)
        self.inventory.append((f"metadata/{a.prefix}.json", a.last_updated, md5_hex(meta)))
        self.files += len(files) + 1
        self.bytes += sum(map(len, files.values())) + len(meta)

    def finish(self, snapshot: dt.date) -> None:
        """Write the S3 inventory of `metadata/` as of `snapshot` (manifest + one CSV.gz)."""
        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for key, modified, etag in sorted(self.inventory):
            writer.writerow([BUCKET, key, f"{modified:%Y-%m-%dT%H:%M:%S}.000Z", etag])
        data = deflate.gzip_compress(buf.getvalue().encode(), 9)
        name = uuid.UUID(md5_hex(data)).hex  # stable stand-in for S3's random file id
        data_key = f"{INVENTORY_PREFIX}/data/{name[:8]}-{name[8:12]}-{name[12:16]}-{name[16:20]}-{name[20:]}.csv.gz"
        _write(self.root / data_key, data)
        stamp = dt.datetime.combine(snapshot, dt.time(1, 0), tzinfo=dt.UTC)
        manifest = {
            "sourceBucket": BUCKET,
            "destinationBucket": f"arn:aws:s3:::{BUCKET}",
            "version": "2016-11-30",
            "creationTimestamp": str(int(stamp.timestamp() * 1000)),
            "fileFormat": "CSV",
            "fileSchema": INVENTORY_SCHEMA,
            "files": [{"key": data_key, "size": len(data), "MD5checksum": md5_hex(data)}],
        }
        body = (json.dumps(manifest, indent=2) + "\n").encode()
        folder = self.root / INVENTORY_PREFIX / f"{snapshot:%Y-%m-%d}T01-00Z"
        _write(folder / "manifest.json", body)
        _write(folder / "manifest.checksum", (md5_hex(body) + "\n").encode())


def _tar_member(name: str, data: bytes | None, mtime: int) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return info, None
    info.mode = 0o644
    info.size = len(data)
    return info, io.BytesIO(data)


def legacy_package_path(pmcid: str) -> str:
    digest = md5_hex(pmcid.encode())
    return f"oa_package/{digest[:2]}/{digest[2:4]}/{pmcid}.tar.gz"


class LegacyLayout:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[list[str]] = []

    def write(self, a: ArticleVersion) -> None:
        mtime = int(a.last_updated.replace(tzinfo=dt.UTC).timestamp())
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            tar.addfile(*_tar_member(f"{a.pmcid}/", None, mtime))
            files = {f"{a.publisher_id}.nxml": article_xml(a, "legacy"), **a.media}
            for name in sorted(files):
                tar.addfile(*_tar_member(f"{a.pmcid}/{name}", files[name], mtime))
        rel = legacy_package_path(a.pmcid)
        _write(self.root / rel, deflate.gzip_compress(buf.getvalue(), 9))
        self.rows.append([rel, a.citation, a.pmcid, f"{a.last_updated:%Y-%m-%d %H:%M:%S}",
                          str(a.pmid), a.license_code])

    def finish(self) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(FILE_LIST_HEADER)
        writer.writerows(sorted(self.rows, key=lambda row: row[2]))
        _write(self.root / "oa_file_list.csv", buf.getvalue().encode())
