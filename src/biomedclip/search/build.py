"""The `index` stage: an embeddings table → a searchable, versioned index folder.

`<index.out>/` holds, written as one atomic folder:
- `index.faiss`: the FAISS index over the image embeddings (family by `families.plan_index`);
- `metadata.sqlite`: one row per vector (`pos` = its position in the index): id, kind, PMCID,
  figure id and label, panel letter, caption (a panel's: shared caption and sub-caption), licence,
  year, split, image key, figure type; looked up by position for the few results a query returns;
- `facets.npz`: licence, year, split, kind and figure type per vector, what filters read;
- `index.json`: the family and its tuned search effort, the model (source and weights sha256)
  and the embeddings (sha256) it was built from, the figure-type taxonomy, recall@10.
The metrics (`index.metrics`) add the build time, the index's size against the flat float32
matrix, every search effort tried and its recall.

Figure types: each vector is labelled by zero-shot over the dataset card's taxonomy
(`card.figure_types.classes`, ImageCLEF 2015's modality classes), with the card's method
(`biomedclip.evaluate.classification.class_embeddings`, the paper's prompt templates) and the
index's own model: an estimate by that model, as the card says of its own.

Memory: the embeddings are read in blocks; what is held is the index itself, the queries, the
IVF training sample and one block.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes
from biomedclip.digests import file_sha256
from biomedclip.embed.run import read_metadata, vectors_of
from biomedclip.ingest.licenses import CODES
from biomedclip.ingest.split import SPLITS
from biomedclip.search import families
from biomedclip.search.facets import Facets, code_of
from biomedclip.search.filters import KINDS
from biomedclip.search.params import IndexParams
from biomedclip.tables import open_table, read_batches

log = logging.getLogger(__name__)

FORMAT = 1
INDEX_FILE, METADATA_FILE, FACETS_FILE, MANIFEST_FILE = "index.faiss", "metadata.sqlite", "facets.npz", "index.json"
BLOCK_ROWS = 8192
META_COLUMNS = ("pos", "id", "kind", "pmcid", "figure", "label", "panel", "caption", "license", "year", "split",
                "image_key", "type")


class IndexInputError(ValueError):
    """The embeddings (or the tables beside them) cannot make an index; names the file."""


def _blocks(path: Path, columns: tuple[str, ...]) -> Iterator[Any]:
    parquet = open_table(path, "embeddings table", columns, error=IndexInputError)
    yield from read_batches(parquet, BLOCK_ROWS, columns)


def _image_blocks(path: Path, dim: int) -> Iterator[np.ndarray]:
    """The image vectors, in index order (rows without an image skipped), a block at a time."""
    for batch in _blocks(path, ("image_embedding",)):
        vectors, present = vectors_of(batch.column("image_embedding"), dim)
        if present.any():
            yield vectors[present]


def _first_pass(path: Path, db: sqlite3.Connection, params: IndexParams, total_rows: int,
                dim: int) -> tuple[int, np.ndarray, str]:
    """Number the image vectors into `vectors`; draw the recall queries: the text embeddings of a
    seeded sample of the rows that have both (their captions, as users search), else image ones."""
    db.execute("CREATE TABLE vectors (pos INTEGER PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL)")
    rng = np.random.default_rng(params.seed)
    wanted = set(rng.choice(total_rows, size=min(total_rows, 2 * params.recall_queries), replace=False).tolist()) \
        if total_rows else set()
    texts, images = [], []
    n = row = 0
    for batch in _blocks(path, ("id", "kind", "image_embedding", "text_embedding")):
        image, has_image = vectors_of(batch.column("image_embedding"), dim)
        text, has_text = vectors_of(batch.column("text_embedding"), dim)
        ids, kinds = batch.column("id").to_pylist(), batch.column("kind").to_pylist()
        keep = np.flatnonzero(has_image)
        db.executemany("INSERT INTO vectors VALUES (?, ?, ?)",
                       ((n + j, ids[i], kinds[i]) for j, i in enumerate(keep.tolist())))
        for i in (r - row for r in range(row, row + batch.num_rows) if r in wanted):
            if has_image[i]:
                (texts if has_text[i] else images).append(text[i] if has_text[i] else image[i])
        n += len(keep)
        row += batch.num_rows
    kind = "caption" if texts else "image"
    queries = np.stack((texts or images)[: params.recall_queries]) if (texts or images) else \
        np.zeros((0, 1), np.float32)
    return n, queries.astype(np.float32), kind


def _training_sample(path: Path, dim: int, n: int, size: int, seed: int) -> np.ndarray:
    chosen = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(n, size), replace=False))
    parts, offset = [], 0
    for block in _image_blocks(path, dim):
        inside = chosen[(chosen >= offset) & (chosen < offset + len(block))] - offset
        parts.append(block[inside])
        offset += len(block)
    return np.concatenate(parts).astype(np.float32)


def _classes(figure_types: Mapping[str, str], model: str, digest: str, tracking: Any) -> tuple[np.ndarray, list]:
    """(C, D) class embeddings of the taxonomy by the embeddings' own model (checked by digest)."""
    from biomedclip.evaluate.classification import PAPER_TEMPLATES, class_embeddings
    from biomedclip.evaluate.embedding import embed_texts
    from biomedclip.models import load_model

    loaded = load_model(model, tracking=tracking)
    if loaded.digest != digest:
        raise IndexInputError(f"the model {model} (weights sha256 {loaded.digest[:12]}) is not the one the "
                              f"embeddings were made with ({digest[:12]}): re-run the embed stage")
    codes = list(figure_types)
    classes = class_embeddings(lambda texts: embed_texts(loaded, texts, 32), [figure_types[c] for c in codes],
                               PAPER_TEMPLATES)
    return classes.numpy().astype(np.float32), [[c, figure_types[c]] for c in codes]


def _stage_tables(db: sqlite3.Connection, pairs: Path | None, panels: Path | None) -> None:
    db.execute("CREATE TEMP TABLE pairs (pair_id TEXT PRIMARY KEY, pmcid TEXT, fig_id TEXT, label TEXT, "
               "caption TEXT, license TEXT, year INTEGER, split TEXT, image_key TEXT)")
    db.execute("CREATE TEMP TABLE panels (panel_id TEXT PRIMARY KEY, pair_id TEXT, letter TEXT, text TEXT, "
               "image_key TEXT)")
    for path, table, columns in ((pairs, "pairs", ("pair_id", "pmcid", "fig_id", "label", "caption", "license",
                                                  "year", "split", "image_key")),
                                 (panels, "panels", ("panel_id", "pair_id", "letter", "text", "image_key"))):
        if path is None or not path.is_file():
            continue
        parquet = open_table(path, f"{table} table", columns, error=IndexInputError)
        for batch in read_batches(parquet, BLOCK_ROWS, columns):
            data = batch.to_pydict()
            db.executemany(f"INSERT OR IGNORE INTO temp.{table} VALUES ({', '.join('?' * len(columns))})",
                           zip(*(data[c] for c in columns), strict=True))


def _metadata(db: sqlite3.Connection, types: np.ndarray | None) -> None:
    """The `meta` table: each vector with what a result shows, joined from the staged tables."""
    db.execute("CREATE TEMP TABLE types (pos INTEGER PRIMARY KEY, type INTEGER)")
    if types is not None:
        db.executemany("INSERT INTO temp.types VALUES (?, ?)", enumerate(types.tolist()))
    db.execute("CREATE TABLE meta (pos INTEGER PRIMARY KEY, id TEXT, kind TEXT, pmcid TEXT, figure TEXT, "
               "label TEXT, panel TEXT, caption TEXT, license TEXT, year INTEGER, split TEXT, image_key TEXT, "
               "type INTEGER)")
    db.execute("""INSERT INTO meta SELECT v.pos, v.id, v.kind, f.pmcid, f.fig_id, f.label, q.letter,
                  COALESCE(q.text, f.caption), f.license, f.year, f.split, COALESCE(q.image_key, f.image_key), t.type
                  FROM vectors v
                  LEFT JOIN temp.panels q ON v.kind = 'panel' AND q.panel_id = v.id
                  LEFT JOIN temp.pairs f ON f.pair_id = CASE WHEN v.kind = 'panel' THEN q.pair_id ELSE v.id END
                  LEFT JOIN temp.types t ON t.pos = v.pos ORDER BY v.pos""")
    db.execute("DROP TABLE vectors")
    db.commit()


def _facets(db: sqlite3.Connection, n: int, classes: list) -> Facets:
    license_, year = np.full(n, 255, np.uint8), np.zeros(n, np.int16)
    split, kind, kinds = np.full(n, 255, np.uint8), np.full(n, 255, np.uint8), np.full(n, 255, np.uint8)
    rows = db.execute("SELECT pos, license, year, split, kind, type FROM meta ORDER BY pos")
    while chunk := rows.fetchmany(BLOCK_ROWS):
        for pos, lic, yr, spl, knd, typ in chunk:
            license_[pos], year[pos] = code_of(lic, CODES), yr or 0
            split[pos], kind[pos] = code_of(spl, SPLITS), code_of(knd, KINDS)
            kinds[pos] = 255 if typ is None else typ
    return Facets(license_, year, split, kind, kinds, tuple((c, name) for c, name in classes))


def build_index(params: IndexParams, *, embeddings: Path, pairs: Path | None = None, panels: Path | None = None,
                figure_types: Mapping[str, str] | None = None, model: str | None = None,
                tracking: Any = None) -> dict[str, Any]:
    """Build the index folder `params.out` from `embeddings` (what `biomedclip embed` writes) and
    the ingest's `pairs` / `panels` tables (the metadata); write the metrics to `params.metrics`
    and return them. `figure_types` (class code → name) labels each vector with its model, which
    is `model` or the one the embeddings record (its weights must be those the embeddings name)."""
    import faiss

    start = time.monotonic()
    recorded = read_metadata(embeddings)
    if recorded is None:
        raise IndexInputError(f"{embeddings}: not an embeddings table written by `biomedclip embed` "
                              "(no `biomedclip` metadata)")
    faiss.omp_set_num_threads(params.threads)
    total_rows = pq.ParquetFile(embeddings).metadata.num_rows
    classes_matrix, classes = (None, []) if not (params.figure_types and figure_types) else \
        _classes(figure_types, model or recorded["model"], recorded["model_sha256"], tracking)
    with atomic_directory(params.out) as staging:
        db = sqlite3.connect(staging / METADATA_FILE)
        dim = int(recorded["dim"])
        n, queries, query_kind = _first_pass(embeddings, db, params, total_rows, dim)
        if n == 0:
            raise IndexInputError(f"{embeddings}: no image embeddings to index")
        plan = families.plan_index(n, dim, family=params.family, exact_below=params.exact_below,
                                   memory_budget_mb=params.memory_budget_mb, hnsw_m=params.hnsw_m,
                                   ef_construction=params.hnsw_ef_construction, nlist=params.nlist,
                                   pq_bytes=params.pq_bytes)
        log.info("index of %d vectors: %s (%s)", n, plan.factory, plan.reason)
        index = families.new_index(plan)
        if plan.needs_training:
            index.train(_training_sample(embeddings, dim, n, max(params.train_sample, 39 * (plan.nlist or 1)),
                                         params.seed))
        types = np.full(n, 255, np.uint8) if classes_matrix is not None else None
        offset = 0
        for block in _image_blocks(embeddings, dim):
            index.add(block)
            if classes_matrix is not None and types is not None:
                types[offset:offset + len(block)] = (block @ classes_matrix.T).argmax(axis=1)
            offset += len(block)
        built = time.monotonic() - start
        truth = families.exact_neighbours(queries, _image_blocks(embeddings, dim))
        effort, tuned, recall, tried = families.tune(index, plan, queries, truth, params.target_recall)
        _stage_tables(db, pairs, panels)
        _metadata(db, types)
        facets = _facets(db, n, classes)
        db.execute("VACUUM")
        db.close()
        facets.save(staging / FACETS_FILE)
        faiss.write_index(index, str(staging / INDEX_FILE))
        index_bytes = (staging / INDEX_FILE).stat().st_size
        manifest = {"format": FORMAT, "family": plan.family, "factory": plan.factory, "reason": plan.reason,
                    "vectors": n, "dim": plan.dim, "search": effort.as_dict(),
                    "model": {"source": recorded["model"], "sha256": recorded["model_sha256"]},
                    "embeddings": {"file": embeddings.name, "sha256": file_sha256(embeddings),
                                   "input_sha256": recorded.get("input_sha256")},
                    "figure_types": {"classes": classes, "method": "zero-shot by the index's model over the "
                                     "dataset card's taxonomy"} if classes else None,
                    "recall_at_10": round(recall, 4), "target_recall": params.target_recall}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    metrics = {**{k: v for k, v in manifest.items() if k != "figure_types"},
               "typed": bool(classes), "build_seconds": round(built, 3),
               "total_seconds": round(time.monotonic() - start, 3), "index_bytes": index_bytes,
               "flat_float32_bytes": n * plan.dim * 4, "memory_ratio": round(index_bytes / (n * plan.dim * 4), 4),
               "recall_queries": len(queries), "query_kind": query_kind, "recall_at_10_tuning": tuned,
               "tried": tried}
    atomic_write_bytes(params.metrics, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    log.info("index %s: %s, %d vectors, recall@10 %.3f against exact search (%s)", params.out, plan.factory, n,
             recall, effort.as_dict())
    return metrics
