"""Write `shards/{train,val,test}/NNNNNN.tar`, a `sizes.json` per split and a shard manifest.

Order: train is shuffled with a seeded, keyed hash of `pair_id` (the same seed and pairs give the
same order on any machine), val and test are in a stable (PMCID, pair_id) order. The order is
computed by an on-disk SQLite sort, so memory stays flat at PMC-15M's size.

Each sample is `<key>.jpg` (the image store's bytes, unchanged and checked against
`image_sha256`), `<key>.txt` (the caption, UTF-8) and `<key>.json` (the metadata). `shard.unit`
says what a sample is (README "Panels"):
- `figure`: each figure–caption pair (`pairs.parquet`), as PMC-15M;
- `panel`: each panel pair (`panels.parquet`: crop, shared caption + sub-caption) where the ingest
  split the figure, and the figure itself where it did not (its key is the `panel_id`, and its
  metadata adds `panel_id`, `letter` and `box`);
- `both`: every figure and every panel.
A panel is in its figure's split (by article): panels never cross splits.

Atomic and resumable: a shard is written to a temp file and renamed into place, and the shard
list is saved after each one with a digest of the inputs. A killed run, re-run on the same inputs,
keeps the shards already written and writes the rest (a finished run on the same inputs writes
nothing); on other inputs it starts over. Shards are byte-identical either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_write_bytes, atomic_writer
from biomedclip.console import progress
from biomedclip.digests import file_sha256
from biomedclip.ingest.params import IngestParams
from biomedclip.ingest.split import SPLITS
from biomedclip.shard.params import ShardParams
from biomedclip.shard.tar import add_sample, sample_tar
from biomedclip.streams import chunked
from biomedclip.tables import open_table, read_batches

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the shard layout changes: old shards are then rewritten
STATE_FILE = ".shard-state.json"
SCRATCH = ".scratch"
METADATA = ("pair_id", "pmcid", "pmid", "fig_id", "label", "panels", "image_key", "image_sha256",
            "width", "height", "license", "split", "source_uri")
READ_COLUMNS = (*METADATA, "caption")
NOT_NULL = ("pair_id", "pmcid", "split", "image_key", "image_sha256", "caption")
PANEL_COLUMNS = ("panel_id", "pair_id", "split", "letter", "x0", "y0", "x1", "y1", "text", "image_key",
                 "image_sha256", "width", "height")
BATCH_ROWS = 5_000  # manifest rows staged at a time (as Python rows: memory flat past this size)


class ShardInputError(ValueError):
    """The manifest or the image store does not match what sharding needs (names the item)."""


def order_key(split: str, pair_id: str, pmcid: str, seed: int) -> str:
    """Sort key of a pair within its split: a keyed hash for train, (PMCID, pair_id) otherwise."""
    if split == "train":
        return hashlib.sha256(f"{seed}:{pair_id}".encode()).hexdigest()[:24]
    return f"{pmcid.removeprefix('PMC').zfill(12)}:{pair_id}"


def _stage(pairs: Path, panels: Path, unit: str, db: sqlite3.Connection, seed: int) -> dict[str, dict[str, int]]:
    """Stage the samples of `unit` into table `samples`, with each one's order key; returns the
    samples per split, as figures and as panels."""
    db.execute("CREATE TABLE samples (split TEXT, key TEXT, pair_id TEXT, image_key TEXT, "
               "image_sha256 TEXT, caption TEXT, meta TEXT, kind TEXT)")
    # The figures' metadata, by pair: what each of its panels also carries (licence, source).
    db.execute("CREATE TABLE figures (pair_id TEXT PRIMARY KEY, split TEXT, pmcid TEXT, meta TEXT)")
    for batch in chunked(_read(pairs, READ_COLUMNS, "pairs manifest"), BATCH_ROWS):
        figures, samples = [], []
        for pair in batch:
            if nulls := [c for c in NOT_NULL if pair[c] is None]:
                raise ShardInputError(f"{pairs}: pair {pair['pair_id']} has no {', '.join(nulls)} "
                                      "(run the validate stage first)")
            split = pair["split"]
            if split not in SPLITS:
                raise ShardInputError(f"{pairs}: pair {pair['pair_id']} has split {split!r}, not one "
                                      f"of {SPLITS} (run the validate stage first)")
            meta = json.dumps({k: pair[k] for k in METADATA}, sort_keys=True, ensure_ascii=False)
            figures.append((pair["pair_id"], split, pair["pmcid"], meta))
            samples.append((split, order_key(split, pair["pair_id"], pair["pmcid"], seed), pair["pair_id"],
                            pair["image_key"], pair["image_sha256"], pair["caption"], meta))
        db.executemany("INSERT INTO figures VALUES (?, ?, ?, ?)", figures)
        db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, 'figure')", samples)
    if unit != "figure":
        split_figures = set()
        for panel in _read(panels, PANEL_COLUMNS, "panel table"):
            figure = db.execute("SELECT split, pmcid, meta FROM figures WHERE pair_id = ?",
                                (panel["pair_id"],)).fetchone()
            if figure is None:
                raise ShardInputError(f"{panels}: panel {panel['panel_id']} belongs to pair {panel['pair_id']}, "
                                      "which is not in the pairs manifest (re-run the ingest stage)")
            split, pmcid, figure_meta = figure
            if panel["split"] != split:
                raise ShardInputError(f"{panels}: panel {panel['panel_id']} is in split {panel['split']!r}, "
                                      f"its figure in {split!r}: panels never cross splits")
            split_figures.add(panel["pair_id"])
            meta = {**json.loads(figure_meta), "panel_id": panel["panel_id"], "letter": panel["letter"],
                    "box": [round(panel[c], 6) for c in ("x0", "y0", "x1", "y1")],
                    **{k: panel[k] for k in ("image_key", "image_sha256", "width", "height")}}
            db.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, 'panel')", (
                split, order_key(split, panel["panel_id"], pmcid, seed), panel["panel_id"], panel["image_key"],
                panel["image_sha256"], panel["text"], json.dumps(meta, sort_keys=True, ensure_ascii=False)))
        if unit == "panel":  # a split figure is replaced by its panels
            db.executemany("DELETE FROM samples WHERE kind = 'figure' AND pair_id = ?",
                           ((p,) for p in sorted(split_figures)))
    db.execute("CREATE INDEX samples_order ON samples (split, key)")
    db.commit()
    counts = {split: {"figures": 0, "panels": 0} for split in SPLITS}
    for split, kind, n in db.execute("SELECT split, kind, COUNT(*) FROM samples GROUP BY split, kind"):
        counts[split][f"{kind}s"] = n
    return counts


def _read(path: Path, columns: tuple[str, ...], what: str):
    """The rows of a Parquet table, a batch at a time; names the file and missing columns."""
    parquet = open_table(path, what, columns, error=ShardInputError)
    for batch in read_batches(parquet, BATCH_ROWS, columns):
        yield from batch.to_pylist()


def _sample(images: Path, pair_id: str, image_key: str, image_sha256: str, caption: str,
            meta: str) -> dict[str, bytes]:
    path = images / image_key
    try:
        jpeg = path.read_bytes()
    except OSError as exc:
        raise ShardInputError(f"pair {pair_id}: image {path} cannot be read ({exc.strerror}); "
                              "re-run the ingest stage to restore the image store") from None
    if hashlib.sha256(jpeg).hexdigest() != image_sha256:
        raise ShardInputError(f"pair {pair_id}: image {path} does not match its image_sha256 "
                              "(the image store was modified); re-run the ingest stage")
    return {"jpg": jpeg, "txt": caption.encode("utf-8"), "json": meta.encode("utf-8")}


def _load_state(root: Path, manifest: Path, digest: str) -> dict[str, dict[str, Any]]:
    """Shards already written for the same inputs (by a killed run, or a finished one), still
    present; for other inputs, wipe the split folders and return nothing.

    Shards appear only by atomic rename, so a shard present at its recorded size is the one
    written; re-hashing every shard is `biomedclip lineage --verify`'s job, not a resume's.
    """
    state = None
    for source in (root / STATE_FILE, manifest):  # the run in progress, else the finished one
        try:
            state = json.loads(source.read_text())
        except (OSError, ValueError):
            continue
        if source == manifest and isinstance(state, dict):
            state = {"inputs": state.get("inputs"),
                     "shards": {s["path"]: {k: s[k] for k in ("samples", "bytes", "sha256")}
                                for split in state.get("splits", {}).values() for s in split["shards"]}}
        break
    if not isinstance(state, dict) or state.get("inputs") != digest:
        if any((root / split).exists() for split in SPLITS):
            log.info("%s holds shards of other inputs: writing all shards", root)
        # Claim the folder for these inputs before deleting anything, so a run killed in between
        # can never take the old shards (or the old manifest) for this run's.
        manifest.unlink(missing_ok=True)
        _save_state(root, digest, {})
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        return {}
    kept = {name: entry for name, entry in state["shards"].items()
            if (root / name).is_file() and (root / name).stat().st_size == entry["bytes"]}
    log.info("%d shards already written for these inputs", len(kept))
    return kept


def _save_state(root: Path, digest: str, written: dict[str, dict[str, Any]]) -> None:
    atomic_write_bytes(root / STATE_FILE, json.dumps({"inputs": digest, "shards": written},
                                                     sort_keys=True).encode())


def _remove_leftovers(root: Path) -> None:
    """Temp files of shards a killed run was writing, and its scratch folder."""
    for split in SPLITS:
        for tmp in (root / split).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    shutil.rmtree(root / SCRATCH, ignore_errors=True)


def _inputs_digest(pairs: Path, panels: Path, params: ShardParams) -> str:
    spec = {"format": FORMAT, "manifest_sha256": file_sha256(pairs),
            "samples_per_shard": params.samples_per_shard, "seed": params.seed}
    if params.unit != "figure":
        spec |= {"unit": params.unit, "panels_sha256": file_sha256(panels)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def write_shards(ingest: IngestParams, params: ShardParams) -> dict[str, Any]:
    """Shard the manifest at `ingest.outputs.pairs` (and its panels, by `params.unit`); returns the
    report (also written as metrics)."""
    pairs, images, root = ingest.outputs.pairs, ingest.outputs.images, params.outputs.shards
    root.mkdir(parents=True, exist_ok=True)
    digest = _inputs_digest(pairs, ingest.outputs.panels, params)
    _remove_leftovers(root)
    written = _load_state(root, params.outputs.manifest, digest)
    per = params.samples_per_shard
    scratch = root / SCRATCH  # the on-disk sort; removed at the end, or by the next run if killed
    scratch.mkdir()
    try:
        db = sqlite3.connect(scratch / "order.sqlite")
        try:
            kinds = _stage(pairs, ingest.outputs.panels, params.unit, db, params.seed)
            counts = {split: sum(kinds[split].values()) for split in SPLITS}
            plan = [(split, i) for split in SPLITS for i in range(-(-counts[split] // per))]
            todo = sum(f"{split}/{index:06d}.tar" not in written for split, index in plan)
            for (split, index), rows in progress(_iter_missing(db, plan, written, per), total=todo,
                                                 description="writing shards"):
                name = f"{split}/{index:06d}.tar"
                path = root / name
                with atomic_writer(path) as fh, sample_tar(fh) as tar:
                    for row in rows:
                        add_sample(tar, row[0], _sample(images, *row))
                written[name] = {"samples": len(rows), "bytes": path.stat().st_size,
                                 "sha256": file_sha256(path)}
                _save_state(root, digest, written)
        finally:
            db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _finish(root, params, digest, kinds, written, plan)


def _iter_missing(db: sqlite3.Connection, plan: list[tuple[str, int]], written: dict, per: int):
    """(split, shard index) and the rows of each shard not yet written, in order: one sorted scan
    per split (an index range scan, no OFFSET), skipping the shards a killed run already wrote."""
    for split in SPLITS:
        cursor = db.execute("SELECT pair_id, image_key, image_sha256, caption, meta FROM samples "
                            "WHERE split = ? ORDER BY key", (split,))
        for index in (i for s, i in plan if s == split):
            rows = cursor.fetchmany(per)
            if f"{split}/{index:06d}.tar" not in written:
                yield (split, index), rows


def _finish(root: Path, params: ShardParams, digest: str, kinds: dict[str, dict[str, int]],
            written: dict[str, dict[str, Any]], plan: list[tuple[str, int]]) -> dict[str, Any]:
    """sizes.json per split, the shard manifest, stale shards removed; returns the report."""
    names = {f"{split}/{index:06d}.tar" for split, index in plan}
    splits: dict[str, Any] = {}
    for split in SPLITS:
        folder = root / split
        folder.mkdir(exist_ok=True)
        for stale in folder.glob("*.tar"):
            if f"{split}/{stale.name}" not in names:
                stale.unlink()
        shards = [{"path": name, **written[name]} for name in sorted(names) if name.startswith(split + "/")]
        atomic_write_bytes(folder / "sizes.json", json.dumps(
            {Path(s["path"]).name: s["samples"] for s in shards}, indent=2, sort_keys=True).encode())
        splits[split] = {"samples": sum(kinds[split].values()), **kinds[split], "shards": shards,
                         "bytes": sum(s["bytes"] for s in shards)}
    manifest = {"format": FORMAT, "inputs": digest, "samples_per_shard": params.samples_per_shard,
                "seed": params.seed, "unit": params.unit, "splits": splits}
    atomic_write_bytes(params.outputs.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    (root / STATE_FILE).unlink(missing_ok=True)
    report: dict[str, Any] = {split: {"samples": v["samples"], "figures": v["figures"], "panels": v["panels"],
                                      "shards": len(v["shards"]), "bytes": v["bytes"]}
                              for split, v in splits.items()}
    report["unit"] = params.unit
    report["manifest_sha256"] = file_sha256(params.outputs.manifest)
    atomic_write_bytes(params.outputs.report, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode())
    log.info("shards: %s", ", ".join(f"{s} {report[s]['samples']} samples in {report[s]['shards']} shards"
                                     for s in SPLITS))
    return report
