"""Reading the pipeline's Parquet tables (the ingest's manifests) in bounded memory.

Every stage that reads a manifest (validate, shard, the dataset card) opens it here: one row group
in memory at a time (no pre-buffering of the whole file, no decoding threads holding several), the
file and the columns it lacks named when it is not what the stage needs. The ingest writes 5,000-row
groups, so a 15M-row manifest is read with the memory of a 5,000-row one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def open_table(path: Path, what: str, columns: Iterable[str] = (), *,
               error: type[Exception] = ValueError) -> pq.ParquetFile:
    """`path` opened to be read a row group at a time. A file Parquet cannot read, or one without
    all of `columns`, raises `error` naming the file, `what` it is and the columns it lacks."""
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as exc:
        raise error(f"{path}: the {what} is not a readable Parquet file ({exc})") from None
    names = parquet.schema_arrow.names
    if missing := [c for c in columns if c not in names]:
        raise error(f"{path}: the {what} has no column {', '.join(missing)} (columns: {', '.join(names)})")
    return parquet


def read_batches(parquet: pq.ParquetFile, batch_rows: int,
                 columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """The table's rows (only `columns`, or all), `batch_rows` at a time, decoded on this thread."""
    yield from parquet.iter_batches(batch_size=batch_rows, columns=None if columns is None else list(columns),
                                    use_threads=False)
