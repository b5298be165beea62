"""The ingest's memory between runs: per-article results in one SQLite file.

Each article's pairs and rejects are stored with the digest of what was read, in one
transaction per batch: a run killed at any point leaves whole articles or none, and the next run
re-reads only articles that are new, changed, or not yet stored. A change to the params that
shape per-article results (licences, captions, images, layout) empties the state.

The final outputs are assembled from the articles seen by the current run, so an incremental run
yields exactly what a run from scratch yields. Everything streams through SQLite: memory does
not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from biomedclip.config import IngestParams
from biomedclip.ingest.extract import ArticleResult
from biomedclip.ingest.panels import PANEL_COLUMNS

SCHEMA_VERSION = "3"  # a new version drops the tables: an older file's columns do not fit
PAIR_COLUMNS = ("pair_id", "pmcid", "pmid", "version", "fig_id", "label", "caption", "panels",
                "image_key", "image_sha256", "width", "height", "phash", "license", "source_uri",
                "ordinal", "caption_sha256", "panel_status", "panel_detail", "year", "source_format",
                "source_mode", "source_width", "source_height")
REJECT_COLUMNS = ("level", "reason", "detail", "pmcid", "version", "fig_id", "href", "source_uri")

_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    pmcid TEXT PRIMARY KEY, number INTEGER NOT NULL, version INTEGER NOT NULL,
    digest TEXT NOT NULL, source_uri TEXT NOT NULL, figures INTEGER NOT NULL,
    graphics INTEGER NOT NULL, seen_run INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS articles_seen ON articles (seen_run, number);
CREATE TABLE IF NOT EXISTS pairs (
    {", ".join(c + (" TEXT PRIMARY KEY" if c == "pair_id" else "") for c in PAIR_COLUMNS)},
    number INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS pairs_article ON pairs (pmcid);
CREATE INDEX IF NOT EXISTS pairs_order ON pairs (number, ordinal);
CREATE TABLE IF NOT EXISTS rejects (
    article TEXT NOT NULL, number INTEGER NOT NULL, seq INTEGER NOT NULL,
    {", ".join(REJECT_COLUMNS)});
CREATE INDEX IF NOT EXISTS rejects_article ON rejects (article);
CREATE TABLE IF NOT EXISTS panels (
    {", ".join(c + (" TEXT PRIMARY KEY" if c == "panel_id" else "") for c in PANEL_COLUMNS)},
    pmcid TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS panels_article ON panels (pmcid);
CREATE INDEX IF NOT EXISTS panels_pair ON panels (pair_id, panel_index);
"""
TABLES = ("articles", "pairs", "rejects", "panels")


# The modules whose code decides per-article results: a change to any of them is a change of
# results, so stored articles are read again (as a run from scratch would).
# Paths relative to the package.
EXTRACTION_CODE = ("ingest/extract.py", "ingest/images.py", "ingest/jats.py", "ingest/licenses.py",
                   "ingest/rejects.py", "ingest/sources.py", "storage.py")
PANEL_CODE = ("ingest/panels.py", "panels/captions.py", "panels/gutters.py", "panels/layout.py",
              "panels/letters.py", "panels/match.py", "panels/scoring.py", "panels/seams.py",
              "panels/sheet.py")


def code_digest(panels: bool = False) -> str:
    package = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for name in EXTRACTION_CODE + (PANEL_CODE if panels else ()):
        digest.update(name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def params_digest(params: IngestParams) -> str:
    """What per-article results depend on: the code and the params that shape them (split,
    dedup and outputs are applied at assembly). The panel splitter's code and params count only
    when it is on."""
    shaping = params.model_dump(include={"layout", "licenses", "caption", "image", "panels"}, mode="json")
    if not params.panels.enabled:
        shaping["panels"] = None
    blob = json.dumps([SCHEMA_VERSION, code_digest(params.panels.enabled), shaping], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class IngestState:
    def __init__(self, path: Path, digest: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)  # explicit transactions below
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self.db.execute("SELECT value FROM meta WHERE key='params'").fetchone()
        if row is None or row[0] != digest:
            with self.transaction():
                for table in TABLES:
                    self.db.execute(f"DROP TABLE IF EXISTS {table}")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('params', ?)", (digest,))
            self.reset = row is not None
        else:
            self.reset = False
        self.db.executescript(_DDL)
        self.run = self._next_run()

    def transaction(self) -> sqlite3.Connection:
        class _Tx:
            def __init__(self, db: sqlite3.Connection) -> None:
                self.db = db

            def __enter__(self) -> sqlite3.Connection:
                self.db.execute("BEGIN IMMEDIATE")
                return self.db

            def __exit__(self, kind: Any, *_: Any) -> None:
                self.db.execute("COMMIT" if kind is None else "ROLLBACK")

        return _Tx(self.db)  # type: ignore[return-value]

    def _next_run(self) -> int:
        with self.transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key='run'").fetchone()
            run = int(row[0]) + 1 if row else 1
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('run', ?)", (str(run),))
        return run

    def known_digests(self, pmcids: Iterable[str]) -> dict[str, str]:
        ids = list(pmcids)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(f"SELECT pmcid, digest FROM articles WHERE pmcid IN ({marks})", ids)
        return dict(rows.fetchall())

    def record(self, results: Iterable[ArticleResult]) -> None:
        """Store a batch of article results in one transaction; unchanged ones are only marked."""
        with self.transaction() as db:
            for r in results:
                number = int(r.pmcid[3:])
                if r.unchanged:
                    db.execute("UPDATE articles SET seen_run=? WHERE pmcid=?", (self.run, r.pmcid))
                    continue
                db.execute("DELETE FROM pairs WHERE pmcid=?", (r.pmcid,))
                db.execute("DELETE FROM panels WHERE pmcid=?", (r.pmcid,))
                db.execute("DELETE FROM rejects WHERE article=?", (r.pmcid,))
                db.execute("INSERT OR REPLACE INTO articles VALUES (?,?,?,?,?,?,?,?)",
                           (r.pmcid, number, r.version, r.digest, r.source_uri, r.figures,
                            r.graphics, self.run))
                db.executemany(
                    f"INSERT INTO pairs VALUES ({','.join('?' * (len(PAIR_COLUMNS) + 1))})",
                    [(*tuple(p[c] for c in PAIR_COLUMNS), number) for p in r.pairs])
                db.executemany(
                    f"INSERT INTO panels VALUES ({','.join('?' * (len(PANEL_COLUMNS) + 1))})",
                    [(*tuple(p[c] for c in PANEL_COLUMNS), r.pmcid) for p in r.panels])
                db.executemany(
                    f"INSERT INTO rejects VALUES ({','.join('?' * (len(REJECT_COLUMNS) + 3))})",
                    [(r.pmcid, number, seq, *(rej.row()[c] for c in REJECT_COLUMNS))
                     for seq, rej in enumerate(r.rejects)])

    def articles_missing_images(self, images_root: Path) -> list[str]:
        """Seen articles whose stored pairs point at images no longer in the store (a DVC
        checkout of older outputs, a deleted file): they must be read again."""
        missing: set[str] = set()
        cursor = self.db.execute(
            "SELECT p.pmcid, p.image_key FROM pairs p JOIN articles a ON a.pmcid = p.pmcid "
            "WHERE a.seen_run = ? UNION ALL SELECT q.pmcid, q.image_key FROM panels q "
            "JOIN articles a ON a.pmcid = q.pmcid WHERE a.seen_run = ?", (self.run, self.run))
        for pmcid, key in cursor:
            if pmcid not in missing and not (images_root / key).is_file():
                missing.add(pmcid)
        return sorted(missing, key=lambda p: int(p[3:]))

    def forget(self, pmcids: list[str]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE articles SET digest = '' WHERE pmcid = ?", [(p,) for p in pmcids])

    def totals(self) -> dict[str, int]:
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(figures),0), COALESCE(SUM(graphics),0) "
                              "FROM articles WHERE seen_run=?", (self.run,)).fetchone()
        return {"articles": row[0], "figures": row[1], "graphics": row[2]}

    def rejects(self) -> Iterator[tuple]:
        """This run's article, figure and image rejects, as rows of `REJECT_COLUMNS`."""
        yield from self.db.execute(
            f"SELECT {', '.join('r.' + c for c in REJECT_COLUMNS)} FROM rejects r "
            f"JOIN articles a ON a.pmcid = r.article WHERE a.seen_run = ? ORDER BY r.number, r.seq",
            (self.run,))

    def close(self) -> None:
        self.db.close()
