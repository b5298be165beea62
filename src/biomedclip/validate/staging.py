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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from biomedclip.tables import open_table, read_batches

PAIRS_TABLE = "pairs"
PANELS_TABLE = "panels"
REPORT_TABLE = "ingest_report"
# One row per article: what split-level checks look at (leakage, fractions, figures per article).
ARTICLES_QUERY = f"""
    SELECT pmcid, COUNT(*) AS figures, COUNT(DISTINCT split) AS splits,
           MAX(split = 'train') AS train, MAX(split = 'val') AS val, MAX(split = 'test') AS test
    FROM {PAIRS_TABLE} GROUP BY pmcid
"""
# One row per split figure: its panel count, whether its pair is in the manifest, how many of its
# panels sit in another split than the figure, and the most any panel shares with another (as a
# fraction of the smaller box).
PANEL_FIGURES_QUERY = f"""
    SELECT q.pair_id, COUNT(*) AS panels, MAX(p.pair_id IS NOT NULL) AS in_manifest,
           COALESCE(SUM(p.split IS NOT NULL AND q.split != p.split), 0) AS off_split,
           COALESCE(MAX(o.overlap), 0.0) AS max_overlap
    FROM {PANELS_TABLE} q LEFT JOIN {PAIRS_TABLE} p ON p.pair_id = q.pair_id
    LEFT JOIN (
        SELECT a.panel_id, MAX(
            MAX(0.0, MIN(a.x1, b.x1) - MAX(a.x0, b.x0)) * MAX(0.0, MIN(a.y1, b.y1) - MAX(a.y0, b.y0))
            / MIN(a.box_width * a.box_height, b.box_width * b.box_height)) AS overlap
        FROM {PANELS_TABLE} a JOIN {PANELS_TABLE} b ON a.pair_id = b.pair_id AND a.panel_id != b.panel_id
        GROUP BY a.panel_id) o ON o.panel_id = q.panel_id
    GROUP BY q.pair_id
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


def stage_manifest(manifest: Path, report: Path, db_path: Path, *, batch_rows: int,
                   panels: Path | None = None) -> int:
    """Copy the manifest into table `pairs` (+ `caption_words`), the panel table (if given) into
    `panels` (+ `box_width`, `box_height`) and the report's reject rate into `ingest_report`;
    returns the manifest's row count. Raises `ValidationInputError` naming the bad file."""
    try:
        reject_rate = json.loads(report.read_text())["reject_rate"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValidationInputError(f"{report}: cannot read reject_rate from the ingest report: "
                                   f"{type(exc).__name__}: {exc}") from None
    if isinstance(reject_rate, bool) or not isinstance(reject_rate, int | float):
        raise ValidationInputError(f"{report}: reject_rate must be a number, got {reject_rate!r}")
    db = sqlite3.connect(db_path)
    try:
        rows = _copy(manifest, "pairs manifest", PAIRS_TABLE, db, batch_rows, "caption_words INTEGER",
                     lambda names, values: [len(c.split()) if isinstance(c, str) else None
                                            for c in values[names.index("caption")]]
                     if "caption" in names else [None] * len(values[0]))
        db.execute(f"CREATE INDEX {PAIRS_TABLE}_id ON {PAIRS_TABLE} (pair_id)")
        if panels is not None:
            _copy(panels, "panel table", PANELS_TABLE, db, batch_rows, "box_width REAL, box_height REAL", None)
            db.execute(f"UPDATE {PANELS_TABLE} SET box_width = x1 - x0, box_height = y1 - y0")
            db.execute(f"CREATE INDEX {PANELS_TABLE}_pair ON {PANELS_TABLE} (pair_id)")
        db.execute(f"CREATE TABLE {REPORT_TABLE} (reject_rate REAL)")
        db.execute(f"INSERT INTO {REPORT_TABLE} VALUES (?)", (reject_rate,))
        db.commit()
    finally:
        db.close()
    return rows


def _copy(path: Path, what: str, table: str, db: sqlite3.Connection, batch_rows: int, extra: str,
          derive: Callable[[list[str], list[list[Any]]], list[Any]] | None) -> int:
    """Stream a Parquet file into `table`, its types carried, plus the `extra` columns: filled by
    `derive(names, column values)` (one column) or left NULL for SQL to fill."""
    parquet = open_table(path, what, error=ValidationInputError)
    fields = [(f.name, sql_type(f.type)) for f in parquet.schema_arrow]
    names = [name for name, _ in fields]
    columns = ", ".join(f"{_quote(name)} {kind}" for name, kind in fields)
    db.execute(f"CREATE TABLE {table} ({columns}, {extra})")
    marks = ", ".join("?" * (len(fields) + (derive is not None)))
    insert = f"INSERT INTO {table} ({', '.join(map(_quote, names))}{', ' + extra.split()[0] if derive else ''}) " \
             f"VALUES ({marks})"
    rows = 0
    for batch in read_batches(parquet, batch_rows):
        values = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        if derive is not None:
            values.append(derive(names, values))
        db.executemany(insert, zip(*values, strict=True))
        db.commit()  # one transaction per batch: SQLite's dirty pages stay bounded
        rows += batch.num_rows
        del values, batch
    return rows
