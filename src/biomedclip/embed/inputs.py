"""What `embed` reads: rows of (id, kind, image, text) from a folder, a table or the corpus.

An input is a stable, re-readable sequence of rows (the resume counts rows, so the same input must
give the same order every time) plus where its images come from:

- a folder of images: every image file below it, in path order; the id is the relative path;
- a Parquet or CSV table: an `id` column (else the row number), image paths in `image`,
  `image_path`, `path` or `file` (relative to the table's folder), texts in `text` or `caption`;
  either may be missing or empty in a row;
- the ingest's `pairs.parquet` (kind `figure`) and `panels.parquet` (kind `panel`): images from
  the content-addressed store the ingest writes, read through `biomedclip.storage.LocalStore`.

User images are checked as the ingest checks images (`ingest.images.decode_image`: the pixel
limit read from the header, the minimum side, a real image format); store images were checked
when they were stored. A row whose image cannot be used is rejected with the ingest's reason code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.csv as pacsv
from PIL import Image

from biomedclip.digests import file_sha256
from biomedclip.ingest.images import IMAGE_SUFFIXES, ImageRejected, decode_image
from biomedclip.ingest.params import ImageParams
from biomedclip.ingest.rejects import Reason
from biomedclip.storage import LocalStore, MissingObject, UnsafeKey
from biomedclip.tables import open_table, read_batches

BATCH_ROWS = 5_000  # table rows decoded at a time
ID_COLUMNS = ("id",)
IMAGE_COLUMNS = ("image", "image_path", "path", "file")
TEXT_COLUMNS = ("text", "caption")
PAIR_COLUMNS = ("pair_id", "image_key", "caption")
PANEL_COLUMNS = ("panel_id", "image_key", "text")


class EmbedInputError(ValueError):
    """An input `embed` cannot read at all (names the file and what it lacks)."""


class EmbedRow(NamedTuple):
    id: str
    kind: str  # figure | panel (the corpus), image | text (a user's rows)
    image: str | None  # a key of the input's image source
    text: str | None


class RowRejected(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class StoreImages:
    """The ingest's content-addressed store: JPEGs it normalised itself, read by key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._store: LocalStore | None = None

    def load(self, key: str) -> Image.Image:
        from biomedclip.evaluate.embedding import decode

        if self._store is None:
            self._store = LocalStore(self.root)
        try:
            return decode(self._store.get(key))
        except MissingObject:
            raise RowRejected(Reason.MEDIA_MISSING, f"{self.root / key} is not in the image store "
                              "(re-run the ingest to restore it)") from None
        except UnsafeKey as exc:
            raise RowRejected(Reason.MEDIA_NAME_UNSAFE, str(exc)) from None


class FileImages:
    """A user's image files, by path relative to `base` (or absolute), checked as the ingest checks
    images."""

    def __init__(self, base: Path, checks: ImageParams) -> None:
        self.base, self.checks = base, checks

    def load(self, key: str) -> Image.Image:
        path = Path(key) if Path(key).is_absolute() else self.base / key
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RowRejected(Reason.MEDIA_MISSING, f"{path}: {exc.strerror or exc}") from None
        try:
            return decode_image(data, self.checks, long_side=1024).rgb
        except ImageRejected as exc:
            raise RowRejected(exc.reason, f"{path}: {exc.detail}") from None


ImageSource = StoreImages | FileImages


@dataclass(frozen=True)
class EmbedInput:
    """Rows to embed: `rows()` gives them in the same order every call; `digest` changes when they
    (or their images) do; `total` is None when counting would mean reading everything."""

    describe: str
    rows: Callable[[], Iterator[EmbedRow]]
    images: ImageSource
    digest: str
    total: int | None
    columns: dict[str, str | None] = field(default_factory=dict)  # which column gave what (tables)


def _first(names: Sequence[str], choices: Sequence[str]) -> str | None:
    return next((c for c in choices if c in names), None)


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def folder_input(folder: Path, checks: ImageParams) -> EmbedInput:
    """Every image file below `folder` (by suffix, links skipped), in path order."""
    if not folder.is_dir():
        raise EmbedInputError(f"{folder}: not a folder")
    listing = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink())
    digest = hashlib.sha256()
    for name in listing:
        stat = (folder / name).stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())

    def rows() -> Iterator[EmbedRow]:
        return (EmbedRow(name, "image", name, None) for name in listing)
    return EmbedInput(f"{len(listing):,} images in {folder}", rows, FileImages(folder, checks),
                      digest.hexdigest(), len(listing))


def _table_batches(path: Path) -> tuple[list[str], Callable[[], Iterator[pa.RecordBatch]], int | None]:
    if path.suffix.lower() == ".csv":
        try:
            names = pacsv.open_csv(path).schema.names
        except (OSError, pa.ArrowException) as exc:
            raise EmbedInputError(f"{path}: not a readable CSV file ({exc})") from None
        options = pacsv.ConvertOptions(column_types={n: pa.string() for n in names})

        def csv_batches() -> Iterator[pa.RecordBatch]:
            yield from pacsv.open_csv(path, convert_options=options)
        return names, csv_batches, None
    parquet = open_table(path, "embedding input", error=EmbedInputError)

    def parquet_batches() -> Iterator[pa.RecordBatch]:
        yield from read_batches(parquet, BATCH_ROWS)
    return parquet.schema_arrow.names, parquet_batches, parquet.metadata.num_rows


def table_input(path: Path, checks: ImageParams, *, images: Path | None = None) -> EmbedInput:
    """A Parquet or CSV table: the ingest's pairs or panels (by their columns), else a user's table
    of image paths and/or texts."""
    names, batches, total = _table_batches(path)
    store = images or path.parent / "images"  # where the ingest puts it, beside its tables
    if set(PANEL_COLUMNS) <= set(names):
        return corpus_input(None, path, store)
    if set(PAIR_COLUMNS) <= set(names):
        return corpus_input(path, None, store)
    id_column, image_column = _first(names, ID_COLUMNS), _first(names, IMAGE_COLUMNS)
    text_column = _first(names, TEXT_COLUMNS)
    if image_column is None and text_column is None:
        raise EmbedInputError(f"{path}: no image column ({', '.join(IMAGE_COLUMNS)}) and no text column "
                              f"({', '.join(TEXT_COLUMNS)}); columns: {', '.join(names)}")

    def rows() -> Iterator[EmbedRow]:
        number = 0
        for batch in batches():
            data = batch.to_pydict()
            for i in range(batch.num_rows):
                image = _text(data[image_column][i]) if image_column else None
                text = _text(data[text_column][i]) if text_column else None
                row_id = _text(data[id_column][i]) if id_column else None
                yield EmbedRow(row_id or str(number), "image" if image else "text", image, text)
                number += 1
    return EmbedInput(f"{path.name} ({total:,} rows)" if total is not None else path.name, rows,
                      FileImages(path.parent, checks), file_sha256(path), total,
                      {"id": id_column, "image": image_column, "text": text_column})


def corpus_input(pairs: Path | None, panels: Path | None, images: Path) -> EmbedInput:
    """The ingest's figure pairs (kind `figure`, text the caption) then its panel pairs (kind
    `panel`, text the shared caption and sub-caption), images from its store."""
    tables = [(p, kind, columns) for p, kind, columns in ((pairs, "figure", PAIR_COLUMNS),
                                                          (panels, "panel", PANEL_COLUMNS)) if p is not None]
    opened = [(open_table(p, f"{kind} table", columns, error=EmbedInputError), kind, columns)
              for p, kind, columns in tables]
    digest = hashlib.sha256(json.dumps([[str(p.name), file_sha256(p)] for p, _, _ in tables]).encode())

    def rows() -> Iterator[EmbedRow]:
        for parquet, kind, (id_column, key_column, text_column) in opened:
            for batch in read_batches(parquet, BATCH_ROWS, (id_column, key_column, text_column)):
                data = batch.to_pydict()
                for row_id, key, text in zip(data[id_column], data[key_column], data[text_column], strict=True):
                    yield EmbedRow(row_id, kind, key, _text(text))
    total = sum(parquet.metadata.num_rows for parquet, _, _ in opened)
    names = " + ".join(f"{p.name} ({o.metadata.num_rows:,})" for (p, _, _), (o, _, _) in zip(tables, opened,
                                                                                         strict=True))
    return EmbedInput(names, rows, StoreImages(images), digest.hexdigest(), total)


def open_input(path: Path, checks: ImageParams | None = None, *, images: Path | None = None) -> EmbedInput:
    """Any input `biomedclip embed` takes (see the module's docstring)."""
    checks = checks or ImageParams()
    if path.is_dir():
        return folder_input(path, checks)
    if not path.is_file():
        raise EmbedInputError(f"{path}: no such file or folder (a folder of images, a .parquet or a .csv)")
    if path.suffix.lower() not in (".parquet", ".csv"):
        raise EmbedInputError(f"{path}: not a folder, .parquet or .csv")
    return table_input(path, checks, images=images)

