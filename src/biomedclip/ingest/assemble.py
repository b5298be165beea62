"""From the per-article state to the stage outputs: decontamination, dedup, split, Parquet,
report, image GC.

Pairs whose image, or any of whose panel crops, is within `decontaminate.max_distance` pHash bits
of a benchmark image become `benchmark_overlap` rejects naming the benchmark image
(`biomedclip.ingest.decontaminate`): a benchmark image shown as panel C of a compound figure is
caught too. Exact duplicates (same stored image bytes, same caption) keep the pair of the lowest
PMCID and become rejects pointing at it; near-duplicates (64-bit pHash within `max_distance`, same
caption) likewise. Panels exist only for kept pairs, and are deduplicated among themselves the
same way (same crop and text: `panel_duplicate_*`). The dedup runs inside SQLite (window
functions, on-disk sorts), so memory stays flat. Outputs are written to temp files and renamed
into place.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.ingest.decontaminate import BenchmarkHashes, load_hashes
from biomedclip.ingest.panel_examples import write_examples
from biomedclip.ingest.panels import OUTCOMES, SPLIT
from biomedclip.ingest.params import IngestParams
from biomedclip.ingest.rejects import LEVEL_OF, LEVELS, Reason
from biomedclip.ingest.split import SPLITS, split_of
from biomedclip.ingest.state import REJECT_COLUMNS, IngestState
from biomedclip.streams import chunked

log = logging.getLogger(__name__)

PAIRS_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("pmcid", pa.string()), ("pmid", pa.string()),
    ("version", pa.int32()), ("fig_id", pa.string()), ("label", pa.string()),
    ("caption", pa.string()), ("panels", pa.int16()), ("image_key", pa.string()),
    ("image_sha256", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("phash", pa.int64()), ("license", pa.string()), ("split", pa.string()),
    ("source_uri", pa.string()),
    # The article and the image as published (before normalisation): for the dataset card.
    ("year", pa.int16()), ("source_format", pa.string()), ("source_mode", pa.string()),
    ("source_width", pa.int32()), ("source_height", pa.int32()),
])
# The rejects table holds the ingest state's reject rows as they are (`IngestState.rejects()`).
REJECTS_SCHEMA = pa.schema([(c, pa.int32() if c == "version" else pa.string()) for c in REJECT_COLUMNS])
REASON = REJECT_COLUMNS.index("reason")
PANELS_SCHEMA = pa.schema([
    ("panel_id", pa.string()), ("pair_id", pa.string()), ("pmcid", pa.string()),
    ("split", pa.string()), ("panel_index", pa.int16()), ("letter", pa.string()),
    ("x0", pa.float32()), ("y0", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32()),
    ("subcaption", pa.string()), ("text", pa.string()), ("confidence", pa.float32()),
    ("method", pa.string()), ("image_key", pa.string()), ("image_sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("phash", pa.int64()),
])
# Rows per Parquet row group, and per batch converted from SQLite rows: a writer holds one batch
# of Python rows (~3 KB each), a reader one row group; both stay flat past this size.
ROWS_PER_GROUP = 5_000
KEPT_PANELS = """
    SELECT q.*, p.number, p.ordinal FROM panels q JOIN pairs p ON p.pair_id = q.pair_id
    JOIN articles a ON a.pmcid = p.pmcid
    WHERE a.seen_run = ? AND p.pair_id NOT IN (SELECT pair_id FROM temp.dup)"""


def _near_duplicates(rows: Any, limit: int, reason: Reason, what: str) -> list[tuple[str, str, str]]:
    """Rows `(group, phash, id)` sorted by group then precedence: within a group (the same text),
    an image within `limit` bits of an earlier kept one is its duplicate. Groups are small (the
    same caption is rare), so each member is compared with the group's kept ones."""
    group: str | None = None
    kept: list[tuple[int, str]] = []
    near: list[tuple[str, str, str]] = []
    for key, phash, row_id in rows:
        if key != group:
            group, kept = key, []
        match = next((first for h, first in kept if (h ^ phash).bit_count() <= limit), None)
        if match is None:
            kept.append((phash, row_id))
        else:
            near.append((row_id, reason.value, f"same image and {what} {match}"))
    return near


def _mark_rejected_pairs(state: IngestState, params: IngestParams) -> dict[str, Any]:
    """Fill temp table `dup(pair_id, reason, detail)` with the pairs that leave the corpus at
    assembly: benchmark overlaps first (so a duplicate of a benchmark image is named for the
    benchmark, not for its twin), then exact and near duplicates among the rest. Returns the
    decontamination report."""
    db = state.db
    db.execute("DROP TABLE IF EXISTS temp.dup")
    db.execute("CREATE TEMP TABLE dup (pair_id TEXT PRIMARY KEY, reason TEXT, detail TEXT)")
    decontamination = _mark_overlaps(state, params)
    db.execute("""
        INSERT INTO temp.dup
        SELECT pair_id, ?, 'same image and caption as pair ' || first FROM (
            SELECT p.pair_id,
                   FIRST_VALUE(p.pair_id) OVER w AS first,
                   ROW_NUMBER() OVER w AS rank
            FROM pairs p JOIN articles a ON a.pmcid = p.pmcid
            WHERE a.seen_run = ? AND p.pair_id NOT IN (SELECT pair_id FROM temp.dup)
            WINDOW w AS (PARTITION BY p.image_sha256, p.caption_sha256
                         ORDER BY p.number, p.ordinal))
        WHERE rank > 1""", (Reason.DUPLICATE_EXACT.value, state.run))
    if params.dedup.near:
        rows = db.execute("""
            SELECT p.caption_sha256, p.phash, p.pair_id FROM pairs p
            JOIN articles a ON a.pmcid = p.pmcid
            WHERE a.seen_run = ? AND p.pair_id NOT IN (SELECT pair_id FROM temp.dup)
            ORDER BY p.caption_sha256, p.number, p.ordinal""", (state.run,))
        near = _near_duplicates(rows, params.dedup.max_distance, Reason.DUPLICATE_NEAR, "caption as pair")
        db.executemany("INSERT INTO temp.dup VALUES (?,?,?)", near)
    return decontamination


def _mark_panel_duplicates(state: IngestState, params: IngestParams) -> None:
    """Fill temp table `panel_dup(panel_id, reason, detail)`: panels of kept pairs with the same
    crop and text as an earlier one (two figures reusing a panel), exact then near."""
    db = state.db
    db.execute("DROP TABLE IF EXISTS temp.panel_dup")
    db.execute("CREATE TEMP TABLE panel_dup (panel_id TEXT PRIMARY KEY, reason TEXT, detail TEXT)")
    db.execute(f"""
        INSERT INTO temp.panel_dup
        SELECT panel_id, ?, 'same crop and text as panel ' || first FROM (
            SELECT panel_id, FIRST_VALUE(panel_id) OVER w AS first, ROW_NUMBER() OVER w AS rank
            FROM ({KEPT_PANELS})
            WINDOW w AS (PARTITION BY image_sha256, text ORDER BY number, ordinal, panel_index))
        WHERE rank > 1""", (Reason.PANEL_DUPLICATE_EXACT.value, state.run))
    if params.dedup.near:
        rows = db.execute(f"""
            SELECT text, phash, panel_id FROM ({KEPT_PANELS})
            WHERE panel_id NOT IN (SELECT panel_id FROM temp.panel_dup)
            ORDER BY text, number, ordinal, panel_index""", (state.run,))
        near = _near_duplicates(rows, params.dedup.max_distance, Reason.PANEL_DUPLICATE_NEAR,
                                "text as panel")
        db.executemany("INSERT INTO temp.panel_dup VALUES (?,?,?)", near)


def _mark_overlaps(state: IngestState, params: IngestParams) -> dict[str, Any]:
    """Pairs whose image is within `decontaminate.max_distance` bits of a benchmark image."""
    spec = params.decontaminate
    if not spec.enabled:
        return {"enabled": False}
    hashes = load_hashes(spec.hashes, spec.max_distance)
    images = hashes.counts()
    overlaps: Counter[str] = Counter(dict.fromkeys(images, 0))
    _overlapping(state, hashes, overlaps, "SELECT p.pair_id, p.phash, '' FROM pairs p JOIN articles a "
                 "ON a.pmcid = p.pmcid WHERE a.seen_run = ? ORDER BY p.number, p.ordinal")
    # A figure one of whose panels is a benchmark image leaves with it (the figure shows it too).
    _overlapping(state, hashes, overlaps, "SELECT q.pair_id, q.phash, 'panel ' || q.letter || ': ' "
                 "FROM panels q JOIN pairs p ON p.pair_id = q.pair_id JOIN articles a ON a.pmcid = p.pmcid "
                 "WHERE a.seen_run = ? ORDER BY p.number, p.ordinal, q.panel_index")
    return {"enabled": True, "max_distance": spec.max_distance,
            "benchmark_images": images, "overlaps": dict(sorted(overlaps.items()))}


def _overlapping(state: IngestState, hashes: BenchmarkHashes, overlaps: Counter[str], query: str) -> None:
    """Insert into temp.dup the pairs of `query`'s rows `(pair_id, phash, detail prefix)` that
    match a benchmark image, counting them per benchmark; a pair already there keeps its reason."""
    cursor = state.db.execute(query, (state.run,))
    while chunk := cursor.fetchmany(ROWS_PER_GROUP):
        rows, distances = hashes.index.nearest(np.array([h for _, h, _ in chunk], dtype=np.int64))
        for (pair, _, prefix), row, distance in zip(chunk, rows.tolist(), distances.tolist(), strict=True):
            if row < 0:
                continue
            added = state.db.execute("INSERT OR IGNORE INTO temp.dup VALUES (?,?,?)", (
                pair, Reason.BENCHMARK_OVERLAP.value, prefix + hashes.describe(row, distance))).rowcount
            overlaps[hashes.benchmark[row]] += added


def _batches(rows: Iterator[tuple], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Rows (tuples in the schema's column order) as record batches, built column by column: a
    row as a dict costs several times its tuple until the batch is built."""
    for chunk in chunked(rows, ROWS_PER_GROUP):
        columns = zip(*chunk, strict=True)
        yield pa.RecordBatch.from_arrays([pa.array(values, type=field.type)
                                          for values, field in zip(columns, schema, strict=True)], schema=schema)


def _splitter(schema: pa.Schema, params: IngestParams
              ) -> tuple[list[str], Callable[[Sequence[Any]], tuple[tuple, str]]]:
    """The columns of `schema` but `split` (what to select), and the function that turns a row of
    them into a row of `schema`, its split (by its article) inserted; it returns the split too."""
    columns = [c for c in schema.names if c != "split"]
    at, pmcid = schema.names.index("split"), columns.index("pmcid")

    def with_split(row: Sequence[Any]) -> tuple[tuple, str]:
        split = split_of(row[pmcid], params.split)
        return (*row[:at], split, *row[at:]), split
    return columns, with_split


def _write_parquet(path: Path, rows: Iterator[tuple], schema: pa.Schema) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed run
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in _batches(rows, schema):
                writer.write_batch(batch, row_group_size=ROWS_PER_GROUP)
                count += batch.num_rows
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def assemble(state: IngestState, params: IngestParams, counts: dict[str, int]) -> dict[str, Any]:
    """Write pairs, panels, rejects, the report (and the panel examples page); drop store images
    nothing references. Returns the report."""
    out = params.outputs
    db = state.db
    decontamination = _mark_rejected_pairs(state, params)
    _mark_panel_duplicates(state, params)
    db.execute("DROP TABLE IF EXISTS temp.kept")
    db.execute("CREATE TEMP TABLE kept (image_key TEXT PRIMARY KEY)")
    # Keep the images of duplicates too (of pairs and their panels): if the pair they duplicate
    # leaves the corpus, they are back in the manifest without their article being read again.
    db.execute("INSERT INTO temp.kept SELECT DISTINCT p.image_key FROM pairs p JOIN articles a "
               "ON a.pmcid = p.pmcid WHERE a.seen_run = ?", (state.run,))
    db.execute("INSERT OR IGNORE INTO temp.kept SELECT DISTINCT q.image_key FROM panels q JOIN articles a "
               "ON a.pmcid = q.pmcid WHERE a.seen_run = ?", (state.run,))
    splits: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    def kept_pairs() -> Iterator[tuple]:
        columns, with_split = _splitter(PAIRS_SCHEMA, params)
        cursor = db.execute(f"SELECT {', '.join('p.' + c for c in columns)}, p.panel_status FROM pairs p "
                            "JOIN articles a ON a.pmcid = p.pmcid WHERE a.seen_run = ? "
                            "AND p.pair_id NOT IN (SELECT pair_id FROM temp.dup) ORDER BY p.number, p.ordinal",
                            (state.run,))
        for *values, status in cursor:
            row, split = with_split(values)
            splits[split] += 1
            outcomes[status] += 1
            yield row

    total_pairs = _write_parquet(out.pairs, kept_pairs(), PAIRS_SCHEMA)
    panel_splits: Counter[str] = Counter()

    def kept_panels() -> Iterator[tuple]:
        columns, with_split = _splitter(PANELS_SCHEMA, params)
        cursor = db.execute(f"SELECT {', '.join(columns)} FROM ({KEPT_PANELS}) "
                            "WHERE panel_id NOT IN (SELECT panel_id FROM temp.panel_dup) "
                            "ORDER BY number, ordinal, panel_index", (state.run,))
        for values in cursor:
            row, split = with_split(values)
            panel_splits[split] += 1
            yield row

    total_panels = _write_parquet(out.panels, kept_panels(), PANELS_SCHEMA)
    rejects: Counter[str] = Counter()

    def all_rejects() -> Iterator[tuple]:
        for row in state.rejects():  # rows of REJECT_COLUMNS, REJECTS_SCHEMA's columns
            rejects[row[REASON]] += 1
            yield row
        cursor = db.execute(
            "SELECT d.reason, d.detail, p.pmcid, p.version, p.fig_id, p.source_uri FROM temp.dup d "
            "JOIN pairs p ON p.pair_id = d.pair_id ORDER BY p.number, p.ordinal")
        cursor = _chain(cursor, db.execute(
            "SELECT d.reason, 'panel ' || q.letter || ' (' || q.panel_id || '): ' || d.detail, p.pmcid, "
            "p.version, p.fig_id, p.source_uri FROM temp.panel_dup d JOIN panels q ON q.panel_id = d.panel_id "
            "JOIN pairs p ON p.pair_id = q.pair_id ORDER BY p.number, p.ordinal, q.panel_index"))
        for reason, detail, pmcid, version, fig_id, uri in cursor:
            rejects[reason] += 1
            yield LEVEL_OF[Reason(reason)], reason, detail, pmcid, version, fig_id, "", uri

    total_rejects = _write_parquet(out.rejects, all_rejects(), REJECTS_SCHEMA)
    stored, removed = _collect_garbage(out.images, db)
    totals = state.totals()
    by_level = Counter(dict.fromkeys(LEVELS, 0))
    for reason, n in rejects.items():
        by_level[LEVEL_OF[Reason(reason)]] += n
    attempted = total_pairs + by_level["figure"] + by_level["image"] + by_level["corpus"]
    report = {  # a function of the data and params only: the same after any run history
        "articles": {"listed": counts["listed"], "in_manifest": totals["articles"]},
        "figures": totals["figures"],
        "graphics": totals["graphics"],
        "pairs": {"total": total_pairs, **{s: splits[s] for s in SPLITS}},
        "rejects": {"total": total_rejects, "by_level": dict(sorted(by_level.items())),
                    "by_reason": {r.value: rejects[r.value] for r in Reason}},
        "reject_rate": round(1 - total_pairs / attempted, 6) if attempted else 0.0,
        "images": {"stored": stored, "removed_unreferenced": removed},
        "decontamination": decontamination,
        "panels": _panel_report(params, outcomes, total_panels, panel_splits, by_level["panel"]),
    }
    if params.panels.enabled:
        write_examples(out.panels, out.pairs, out.images, out.panel_examples, report["panels"])
    atomic_write_bytes(out.report, (json.dumps(report, indent=2) + "\n").encode())
    # How this run got there (read vs. reused from the state) is for logs and people, not metrics.
    report["articles"] |= {"processed": counts["processed"], "unchanged": counts["unchanged"]}
    return report


def _chain(*cursors: Any) -> Iterator[Any]:
    for cursor in cursors:
        yield from cursor


def _panel_report(params: IngestParams, outcomes: Counter[str], panels: int, splits: Counter[str],
                  duplicates: int) -> dict[str, Any]:
    """What became of the kept figures: split (into how many panel pairs) or kept whole, why."""
    if not params.panels.enabled:
        return {"enabled": False}
    split = outcomes[SPLIT]
    return {
        "enabled": True, "min_confidence": params.panels.min_confidence,
        "figures": sum(outcomes.values()),
        "captions_naming_panels": sum(outcomes.values()) - outcomes["no_panel_markers"],
        "split": split, "panels": panels, **{s: splits[s] for s in SPLITS},
        "panels_per_split_figure": round((panels + duplicates) / split, 3) if split else 0.0,
        "duplicates_dropped": duplicates,
        "kept_whole": {code: outcomes[code] for code in OUTCOMES if code != SPLIT},
    }


def _files(root: Path) -> Iterator[Path]:
    """The files under `root`, a folder at a time: never the whole store's listing in memory (at
    PMC's scale, tens of millions of paths)."""
    folders = [root] if root.is_dir() else []
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            listing = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_dir in sorted(listing):
            if is_dir:
                folders.append(folder / name)
            else:
                yield folder / name


def _collect_garbage(root: Path, db: Any) -> tuple[int, int]:
    """Delete store images no pair of the current articles references (articles that left the
    corpus or changed their images; files of a killed run)."""
    stored = removed = 0
    for path in _files(root):
        if path.name.startswith("."):  # a temp file of a write a killed run never finished
            path.unlink()
            continue
        key = path.relative_to(root).as_posix()
        if db.execute("SELECT 1 FROM temp.kept WHERE image_key = ?", (key,)).fetchone():
            stored += 1
        else:
            path.unlink()
            removed += 1
    return stored, removed
