"""Stage the pairs manifest into SQLite, so Great Expectations validates it in bounded memory.

The manifest may hold 15M rows. It is streamed into an on-disk SQLite table in batches of Parquet
rows; Great Expectations' SQL execution engine then computes every metric inside the database
(counts, uniqueness, group-bys, medians sort on disk), never in a DataFrame. Column types are
carried from the Parquet schema, so a manifest whose `width` arrives as text fails the type check
instead of being coerced. Users with a warehouse point the same suite at their own table
(README: validating on Spark or PostgreSQL).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PAIRS_TABLE = "pairs"
REPORT_TABLE = "ingest_report"
# One row per article: what split-level checks look at (leakage, fractions, figures per article).
ARTICLES_QUERY = f"""
    SELECT pmcid, COUNT(*) AS figures, COUNT(DISTINCT split) AS splits,
           MAX(split = 'train') AS train, MAX(split = 'val') AS val, MAX(split = 'test') AS test
    FROM {PAIRS_TABLE} GROUP BY pmcid
"""


class ValidationInputError(ValueError):
    """The manifest or the ingest report cannot be read at all (names the file)."""


def sql_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "INTEGER"
    if pa.types.is_floating(arrow_type):
        return "REAL"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BLOB"
    return "TEXT"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def stage_manifest(manifest: Path, report: Path, db_path: Path, *, batch_rows: int) -> int:
    """Copy the manifest into table `pairs` (+ `caption_words`) and the report's reject rate into
    `ingest_report`; returns the row count. Raises `ValidationInputError` naming the bad file."""
    try:
        parquet = pq.ParquetFile(manifest, pre_buffer=False)  # read one row group at a time
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValidationInputError(f"{manifest}: cannot read the pairs manifest: {exc}") from None
    try:
        reject_rate = json.loads(report.read_text())["reject_rate"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationInputError(f"{report}: cannot read reject_rate from the ingest report: "
                                   f"{type(exc).__name__}: {exc}") from None
    if isinstance(reject_rate, bool) or not isinstance(reject_rate, int | float):
        raise ValidationInputError(f"{report}: reject_rate must be a number, got {reject_rate!r}")
    fields = [(f.name, sql_type(f.type)) for f in parquet.schema_arrow]
    names = [name for name, _ in fields]
    db = sqlite3.connect(db_path)
    try:
        columns = ", ".join(f"{_quote(name)} {kind}" for name, kind in fields)
        db.execute(f"CREATE TABLE {PAIRS_TABLE} ({columns}, caption_words INTEGER)")
        insert = (f"INSERT INTO {PAIRS_TABLE} VALUES ({', '.join('?' * (len(fields) + 1))})")
        caption_at = names.index("caption") if "caption" in names else None
        rows = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            captions = values[caption_at] if caption_at is not None else [None] * batch.num_rows
            words = [len(c.split()) if isinstance(c, str) else None for c in captions]
            db.executemany(insert, zip(*values, words, strict=True))
            db.commit()  # one transaction per batch: SQLite's dirty pages stay bounded
            rows += batch.num_rows
            del values, captions, words, batch
        db.execute(f"CREATE TABLE {REPORT_TABLE} (reject_rate REAL)")
        db.execute(f"INSERT INTO {REPORT_TABLE} VALUES (?)", (reject_rate,))
        db.commit()
    finally:
        db.close()
    return rows
