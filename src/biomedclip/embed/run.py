"""`embed`: rows of images and/or texts → a Parquet of float16 embeddings, resumable, bounded.

Output columns: `id`, `kind`, `image_embedding` and `text_embedding` (fixed-size lists of
float16, null where the row has no image or no text), `model_sha256` (the weights' digest). The
Parquet's key-value metadata (`biomedclip`) records the model, its digest, the input's digest and
the counts. Rows whose image cannot be used go to `<out stem>.rejects.parquet` with the ingest's
reason codes (`id, kind, reason, detail`), counted in the summary.

How it runs: the input is read `chunk_rows` rows at a time; a chunk is embedded `batch_size`
rows per forward pass through the evaluation's own embedding code
(`biomedclip.evaluate.embedding`), and written as one Parquet file into `.<out>.partial/`
(atomically) the moment it is done, so memory holds a window of chunks, never the corpus. On a
GPU the model runs in this process and `workers` threads decode the next images meanwhile; on a
CPU, `workers` processes embed chunks in parallel, one torch thread each. When every chunk is
there they are copied, one row group each, into `out` (atomically) and the folder is removed.

A killed run, re-run on the same input, model and settings, keeps the chunks already written and
does the rest: the output is byte-identical to an uninterrupted run's (a chunk's rows are embedded
in the same batches either way). A finished output for the same input and model is not redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_write_bytes, atomic_writer
from biomedclip.console import progress
from biomedclip.embed.inputs import EmbedInput, EmbedRow, ImageSource, RowRejected
from biomedclip.ingest.rejects import Reason
from biomedclip.streams import chunked, in_order_window

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the output layout changes: older outputs and chunks are then redone
METADATA_KEY = b"biomedclip"
STATE_FILE = "state.json"
REJECT_SCHEMA = pa.schema([("id", pa.string()), ("kind", pa.string()), ("reason", pa.string()),
                           ("detail", pa.string())])


class Reject(NamedTuple):
    id: str
    kind: str
    reason: str
    detail: str


def output_schema(dim: int) -> pa.Schema:
    # Variable-size lists: Parquet readers refuse a null in a fixed-size list column (pyarrow 25:
    # "Expected all lists to be of size=D"); every non-null one holds `dim` values.
    vector = pa.list_(pa.float16())
    return pa.schema([("id", pa.string()), ("kind", pa.string()), ("image_embedding", vector),
                      ("text_embedding", vector), ("model_sha256", pa.string())])


def rejects_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.rejects.parquet")


def partial_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


# -- one chunk -----------------------------------------------------------------------------------
def _load(images: ImageSource, row: EmbedRow) -> Any:
    """The row's PIL image, None without one, or the RowRejected saying why not."""
    if row.image is None:
        return None
    try:
        return images.load(row.image)
    except RowRejected as exc:
        return exc


def _vectors(features: Any, present: list[bool], dim: int) -> pa.ListArray:
    """(M, D) float32 features for the rows where `present` → a float16 list column, null elsewhere."""
    values = features.numpy().astype(np.float16).reshape(-1) if len(features) else np.zeros(0, np.float16)
    lengths = np.where(np.asarray(present, dtype=bool), dim, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    mask = pa.array([not p for p in present], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, type=pa.float16()), mask=mask)


def embed_chunk(encoder: Any, rows: list[EmbedRow], images: ImageSource, *, batch_size: int, dim: int,
                digest: str, decoders: Executor | None = None) -> tuple[pa.RecordBatch, list[Reject]]:
    """Embed one chunk, `batch_size` rows per forward pass; images are loaded by `decoders` (a
    thread pool, ahead of the model) or inline. Returns its rows and its rejects, in input order."""
    from biomedclip.evaluate.embedding import embed_images, embed_texts

    loaded = (in_order_window(lambda r: decoders.submit(_load, images, r), rows, 2 * batch_size)
              if decoders is not None else (_load(images, r) for r in rows))
    ids, kinds, image_parts, text_parts, rejects = [], [], [], [], []
    for batch in chunked(zip(rows, loaded, strict=True), batch_size):
        kept = []
        for row, image in batch:
            if isinstance(image, RowRejected):
                rejects.append(Reject(row.id, row.kind, image.reason.value, image.detail))
            elif image is None and row.text is None:
                rejects.append(Reject(row.id, row.kind, Reason.MEDIA_MISSING.value, "neither an image nor a text"))
            else:
                kept.append((row, image))
        has_image = [image is not None for _, image in kept]
        has_text = [row.text is not None for row, _ in kept]
        image_features = embed_images(encoder, [image for _, image in kept if image is not None], batch_size)
        text_features = embed_texts(encoder, [row.text for row, _ in kept if row.text is not None], batch_size)
        ids += [row.id for row, _ in kept]
        kinds += [row.kind for row, _ in kept]
        image_parts.append(_vectors(image_features, has_image, dim))
        text_parts.append(_vectors(text_features, has_text, dim))
    schema = output_schema(dim)
    empty = pa.array([], type=schema.field("image_embedding").type)
    columns = [pa.array(ids, pa.string()), pa.array(kinds, pa.string()),
               pa.concat_arrays(image_parts) if image_parts else empty,
               pa.concat_arrays(text_parts) if text_parts else empty,
               pa.array([digest] * len(ids), pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=schema), rejects


# -- CPU worker processes -----------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _start_worker(folder: str, images: ImageSource, batch_size: int, dim: int, digest: str) -> None:
    import torch

    from biomedclip.models import load_folder

    torch.set_num_threads(1)  # one process per core: threads would fight over the same cores
    _WORKER.update(encoder=load_folder(Path(folder)), images=images, batch_size=batch_size, dim=dim,
                   digest=digest)


def _worker_chunk(job: tuple[int, list[EmbedRow]]) -> tuple[int, pa.RecordBatch, list[Reject]]:
    number, rows = job
    batch, rejects = embed_chunk(_WORKER["encoder"], rows, _WORKER["images"], batch_size=_WORKER["batch_size"],
                                 dim=_WORKER["dim"], digest=_WORKER["digest"])
    return number, batch, rejects


# -- chunks on disk ------------------------------------------------------------------------------
def _chunk_path(parts: Path, number: int) -> Path:
    return parts / f"chunk-{number:06d}.parquet"


def _write_chunk(parts: Path, number: int, batch: pa.RecordBatch, rejects: list[Reject]) -> None:
    """The chunk's rows (one row group) and its rejects (in the file's metadata), atomically."""
    table = pa.Table.from_batches([batch]).replace_schema_metadata(
        {b"rejects": json.dumps([list(r) for r in rejects]).encode()})
    with atomic_writer(_chunk_path(parts, number)) as fh:
        pq.write_table(table, fh, row_group_size=max(1, batch.num_rows), compression="zstd")


def _resume(parts: Path, key: str) -> set[int]:
    """Chunks already written for the same run key; for another key, a fresh folder."""
    try:
        same = json.loads((parts / STATE_FILE).read_text()).get("key") == key
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        atomic_write_bytes(parts / STATE_FILE, json.dumps({"key": key}).encode())
        return set()
    for tmp in parts.glob(".*.tmp"):  # a chunk a killed run was writing
        tmp.unlink(missing_ok=True)
    done = {int(p.stem.removeprefix("chunk-")) for p in parts.glob("chunk-*.parquet")}
    log.info("resuming: %d chunks already embedded in %s", len(done), parts)
    return done


def _merge(parts: Path, chunks: int, out: Path, schema: pa.Schema, metadata: dict[str, Any]) -> list[Reject]:
    """Copy the chunks, one row group each, into `out` (atomically); return every reject."""
    rejects: list[Reject] = []
    schema = schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    with atomic_writer(out) as fh, pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        for number in range(chunks):
            chunk = pq.ParquetFile(_chunk_path(parts, number))
            rejects += [Reject(*r) for r in json.loads(chunk.schema_arrow.metadata[b"rejects"])]
            table = chunk.read().replace_schema_metadata(schema.metadata)
            if table.num_rows:
                writer.write_table(table, row_group_size=table.num_rows)
    return rejects


def _write_rejects(path: Path, rejects: list[Reject]) -> None:
    columns = list(zip(*rejects, strict=True)) if rejects else [[] for _ in REJECT_SCHEMA]
    table = pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=REJECT_SCHEMA)
    with atomic_writer(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_metadata(path: Path) -> dict[str, Any] | None:
    """What an embeddings file records about itself (None when it is not one of ours)."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    return json.loads(raw[METADATA_KEY]) if METADATA_KEY in raw else None


# -- the run -------------------------------------------------------------------------------------
def _device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("embed.device is cuda but torch sees no GPU (device: auto uses one when there is)")
    return "cuda" if requested == "auto" and torch.cuda.is_available() else "cpu" if requested == "auto" \
        else requested


def _portable(source: str) -> str:
    """A model path inside the working folder, as a relative path (outputs hold no absolute path)."""
    path = Path(source)
    if path.is_absolute() and path.exists():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return source
    return source


def _pending(source: EmbedInput, chunk_rows: int, done: set[int]) -> Iterator[tuple[int, list[EmbedRow]]]:
    """The chunks not yet written, numbered: the rows of written chunks are read past, not kept."""
    for number, rows in enumerate(chunked(source.rows(), chunk_rows)):
        if number not in done:
            yield number, rows


def _in_process(loaded: Any, source: EmbedInput, jobs: Iterable[tuple[int, list[EmbedRow]]], *, batch_size: int,
                dim: int, digest: str, workers: int) -> Iterator[tuple[int, pa.RecordBatch, list[Reject]]]:
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="embed-decode") as decoders:
        for number, rows in jobs:
            batch, rejects = embed_chunk(loaded, rows, source.images, batch_size=batch_size, dim=dim,
                                         digest=digest, decoders=decoders)
            yield number, batch, rejects


def _in_processes(folder: Path, source: EmbedInput, jobs: Iterable[tuple[int, list[EmbedRow]]], *,
                  batch_size: int, dim: int, digest: str, workers: int
                  ) -> Iterator[tuple[int, pa.RecordBatch, list[Reject]]]:
    import multiprocessing

    # spawn: a forked child would inherit torch's thread pools and locks mid-use.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker,
                             initargs=(str(folder), source.images, batch_size, dim, digest)) as pool:
        yield from in_order_window(lambda job: pool.submit(_worker_chunk, job), jobs, 2 * workers)


def embed(source: EmbedInput, out: Path, *, model: str, batch_size: int = 64, chunk_rows: int = 1024,
          workers: int = 1, device: str = "auto", tracking: Any = None) -> dict[str, Any]:
    """Embed `source` with `model` (any source `biomedclip.models` takes) into the Parquet `out`
    and its rejects beside it; returns the summary (see the module's docstring)."""
    from biomedclip.digests import file_sha256
    from biomedclip.models import build, located

    if batch_size < 1 or chunk_rows < 1 or workers < 1:
        raise ValueError(f"batch_size ({batch_size}), chunk_rows ({chunk_rows}) and workers ({workers}) "
                         "must be at least 1")
    start = time.monotonic()
    run_device = _device(device)
    with located(model, tracking=tracking) as files:
        digest = file_sha256(files.weights)
        dim = int(files.model_cfg["embed_dim"])
        key = hashlib.sha256(json.dumps({"format": FORMAT, "input": source.digest, "model_sha256": digest,
                                         "chunk_rows": chunk_rows, "batch_size": batch_size}).encode()).hexdigest()
        finished = read_metadata(out) if out.is_file() else None
        if finished and finished.get("key") == key and rejects_path(out).is_file():
            log.info("%s is up to date (same input, model and settings): nothing to embed", out)
            return {**finished, "seconds": 0.0, "up_to_date": True}
        parts = partial_dir(out)
        done = _resume(parts, key)
        jobs = _pending(source, chunk_rows, done)
        settings = {"batch_size": batch_size, "dim": dim, "digest": digest, "workers": workers}
        if run_device == "cpu" and workers > 1:
            results = _in_processes(files.folder, source, jobs, **settings)
        else:
            results = _in_process(build(files, run_device), source, jobs, **settings)
        total = None if source.total is None else math.ceil(source.total / chunk_rows) - len(done)
        log.info("embedding %s with %s (%s, %d %s)", source.describe, model, run_device, workers,
                 "processes" if run_device == "cpu" and workers > 1 else "decoding threads")
        for number, batch, rejects in progress(results, total=total,
                                                description=f"embedding ({chunk_rows} rows a chunk)"):
            _write_chunk(parts, number, batch, rejects)
        chunks = len(list(parts.glob("chunk-*.parquet")))
        counts = _count(parts, chunks)
        metadata = {"format": FORMAT, "key": key, "model": _portable(model), "model_sha256": digest, "dim": dim,
                    "input": source.describe, "input_sha256": source.digest, "chunk_rows": chunk_rows,
                    "batch_size": batch_size, **counts}
        rejects = _merge(parts, chunks, out, output_schema(dim), metadata)
        _write_rejects(rejects_path(out), rejects)
    shutil.rmtree(parts, ignore_errors=True)
    seconds = time.monotonic() - start
    for reject in rejects[:5]:
        log.warning("rejected %s %s: %s (%s)", reject.kind, reject.id, reject.reason, reject.detail)
    log.info("%s: %d rows embedded, %d rejected, %.1fs on %s", out, counts["rows"], counts["rejected"], seconds,
             run_device)
    return {**metadata, "seconds": round(seconds, 3), "device": run_device, "workers": workers,
            "up_to_date": False}


def _count(parts: Path, chunks: int) -> dict[str, Any]:
    """Rows, images, texts and rejects (by reason) over the written chunks (from their metadata)."""
    rows = images = texts = 0
    reasons: Counter[str] = Counter()
    for number in range(chunks):
        path = _chunk_path(parts, number)
        if not path.is_file():
            raise RuntimeError(f"{path}: a chunk is missing after the run (was {parts} modified meanwhile?)")
        table = pq.read_table(path, columns=["image_embedding", "text_embedding"])
        rows += table.num_rows
        images += table.num_rows - table.column("image_embedding").null_count
        texts += table.num_rows - table.column("text_embedding").null_count
        meta = pq.read_schema(path).metadata or {}
        reasons.update(r[2] for r in json.loads(meta.get(b"rejects", b"[]")))
    return {"rows": rows, "images": images, "texts": texts, "rejected": sum(reasons.values()),
            "rejected_by_reason": dict(sorted(reasons.items()))}


def vectors_of(column: pa.Array | pa.ChunkedArray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column as ((N, D) float32, (N,) bool: the rows that have a vector); a null
    row's vector is zeros."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    present = ~np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    flat = np.zeros((len(array), dim), dtype=np.float32)
    values = np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    if len(values) != int(present.sum()) * dim:
        raise ValueError(f"an embedding column holds {len(values)} values for {int(present.sum())} vectors "
                         f"of width {dim}")
    flat[present] = values.reshape(-1, dim)
    return flat, present
