"""The shard stage: the ingested manifest + image store → WebDataset tar shards per split.

Inputs are the real ingest output of the noisy demo corpus (`ingested_noisy`). That ingest puts
every article in train or test (val is empty at this size), so most tests use a derived manifest,
"resplit": the same pairs and image store, with articles spread over train/val/test and half of
the val/test PMCIDs renumbered to fewer digits (PMC9xxx), so the numeric (PMCID, pair_id) order
of val/test differs from a plain string sort. Small shards (25 samples) give several per split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from biomedclip.ingest.params import IngestOutputs, IngestParams
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.shard.writer import ShardInputError, write_shards

from .conftest import REPO

SPLITS = ("train", "val", "test")
PER = 25  # samples per shard
# What each sample's .json must carry, each equal to the manifest row's value.
METADATA = ("pair_id", "pmcid", "pmid", "fig_id", "label", "panels", "image_key", "image_sha256",
            "width", "height", "license", "split", "source_uri")


# ---------------------------------------------------------------------------------------------
# Helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_params(root: Path, *, seed: int = 0, per: int = PER) -> ShardParams:
    return ShardParams(samples_per_shard=per, seed=seed,
                       outputs=ShardOutputs(shards=root, manifest=root / "manifest.json",
                                            report=root.parent / "shard-report.json"))


def shard(pairs: Path, images: Path, root: Path, **kw) -> dict:
    ingest = IngestParams(outputs=IngestOutputs(pairs=pairs, images=images))
    return write_shards(ingest, shard_params(root, **kw))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` (hidden ones included), relative path → bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tars(root: Path, split: str | None = None) -> dict[str, bytes]:
    return {name: data for name, data in tree(root).items()
            if name.endswith(".tar") and (split is None or name.startswith(f"{split}/"))}


def keys_in_order(root: Path, split: str) -> list[str]:
    """The sample keys of a split, in shard order then member order (read with tarfile)."""
    keys: list[str] = []
    for path in sorted((root / split).glob("*.tar")):
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                key = m.name.rsplit(".", 1)[0]
                if not keys or keys[-1] != key:
                    keys.append(key)
    return keys


def leftovers(root: Path) -> list[str]:
    """Temp files under the shard folder and scratch folders beside it."""
    found = list(root.rglob(".*.tmp")) if root.exists() else []
    found += list(root.parent.glob(".shard-*"))
    return sorted(str(p) for p in found)


def manifest_rows(pairs: Path) -> dict[str, dict]:
    rows = pq.read_table(pairs).to_pylist()
    by_id = {r["pair_id"]: r for r in rows}
    assert len(by_id) == len(rows), "test precondition: pair_id is unique in the manifest"
    return by_id


def pmcid_order(row: dict) -> tuple[int, str]:
    return int(row["pmcid"].removeprefix("PMC")), row["pair_id"]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def ingest_manifest(ingested_noisy) -> tuple[Path, Path]:
    params, _, _ = ingested_noisy
    return params.outputs.pairs, params.outputs.images


@pytest.fixture(scope="module")
def resplit(ingest_manifest, tmp_path_factory) -> tuple[Path, Path]:
    """The ingest manifest with articles spread over all three splits and mixed PMCID lengths."""
    pairs, images = ingest_manifest
    table = pq.read_table(pairs)
    rows = table.to_pylist()
    articles = sorted({r["pmcid"] for r in rows})
    split_of, renamed = {}, {}
    for i, pmcid in enumerate(articles):
        split_of[pmcid] = {0: "val", 1: "test"}.get(i % 5, "train")
        if split_of[pmcid] != "train" and i % 2 == 0:
            renamed[pmcid] = f"PMC{9000 + i}"  # shorter: sorts after PMC11... as a string, before as a number
    for r in rows:
        r["split"] = split_of[r["pmcid"]]
        r["pmcid"] = renamed.get(r["pmcid"], r["pmcid"])
    out = tmp_path_factory.mktemp("resplit") / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    return out, images


@pytest.fixture(scope="module")
def manifests(ingest_manifest, resplit) -> dict[str, tuple[Path, Path]]:
    return {"ingest": ingest_manifest, "resplit": resplit}


@pytest.fixture(scope="module")
def reference(resplit, tmp_path_factory) -> Path:
    """An uninterrupted run over `resplit` with seed 0 into a fresh folder."""
    root = tmp_path_factory.mktemp("reference") / "shards"
    shard(*resplit, root)
    counts = {s: len(list((root / s).glob("*.tar"))) for s in SPLITS}
    assert counts["train"] >= 5 and counts["val"] >= 2 and counts["test"] >= 2, counts
    return root


# ---------------------------------------------------------------------------------------------
# 1. Round trip


@pytest.mark.unit
@pytest.mark.parametrize("which", ["ingest", "resplit"])
def test_every_pair_round_trips_through_the_shards_of_its_split(manifests, which, tmp_path):
    pairs, images = manifests[which]
    root = tmp_path / "shards"
    report = shard(pairs, images, root)
    rows = manifest_rows(pairs)
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["splits"]) == set(SPLITS)
    seen: dict[str, str] = {}
    for split in SPLITS:
        count = sum(r["split"] == split for r in rows.values())
        entries = manifest["splits"][split]["shards"]
        sizes = json.loads((root / split / "sizes.json").read_text())
        on_disk = sorted(p.name for p in (root / split).glob("*.tar"))
        assert on_disk == [f"{i:06d}.tar" for i in range(math.ceil(count / PER))]
        assert [e["path"] for e in entries] == [f"{split}/{name}" for name in on_disk]
        assert sizes == {Path(e["path"]).name: e["samples"] for e in entries}
        assert [e["samples"] for e in entries] == [min(PER, count - i * PER) for i in range(len(entries))]
        assert manifest["splits"][split]["samples"] == count
        assert report[split] == {"samples": count, "figures": count, "panels": 0, "shards": len(entries),
                                 "bytes": sum(e["bytes"] for e in entries)}
        for entry in entries:
            path = root / entry["path"]
            data = path.read_bytes()
            assert entry["bytes"] == len(data) and entry["sha256"] == sha256(data), entry["path"]
            samples = list(wds.WebDataset([str(path)], shardshuffle=False))
            assert len(samples) == entry["samples"] == sizes[path.name]
            for sample in samples:
                key = sample["__key__"]
                assert key in rows, f"{entry['path']}: sample {key} is not a pair of the manifest"
                assert key not in seen, f"pair {key} appears twice ({seen[key]} and {split})"
                seen[key] = split
                row = rows[key]
                assert row["split"] == split
                assert {k for k in sample if not k.startswith("__")} == {"jpg", "txt", "json"}
                assert sample["jpg"] == (images / row["image_key"]).read_bytes()
                assert sha256(sample["jpg"]) == row["image_sha256"]
                assert sample["txt"].decode("utf-8") == row["caption"]
                meta = json.loads(sample["json"].decode("utf-8"))
                assert set(METADATA) <= set(meta), sorted(set(METADATA) - set(meta))
                assert meta == {k: row[k] for k in meta}, key
    assert seen.keys() == rows.keys(), f"missing from the shards: {sorted(rows.keys() - seen.keys())[:5]}"
    assert report["manifest_sha256"] == sha256((root / "manifest.json").read_bytes())
    assert json.loads((root.parent / "shard-report.json").read_text()) == report
    assert not (root / ".shard-state.json").exists()
    assert leftovers(root) == []


@pytest.mark.unit
def test_shards_load_as_open_clip_reads_them(resplit, reference):
    """open_clip_train's webdataset pipeline: decode("pilrgb"), image from jpg, text from txt."""
    rows = manifest_rows(resplit[0])
    for split in SPLITS:
        urls = [str(p) for p in sorted((reference / split).glob("*.tar"))]
        dataset = (wds.WebDataset(urls, shardshuffle=False).decode("pilrgb")
                   .rename(image="jpg;png;jpeg;webp", text="txt", key="__key__").to_tuple("image", "text", "key"))
        loaded = list(dataset)
        assert len(loaded) == sum(r["split"] == split for r in rows.values())
        for image, text, key in loaded:
            assert image.mode == "RGB" and image.size == (rows[key]["width"], rows[key]["height"]), key
            assert text == rows[key]["caption"]


@pytest.mark.unit
def test_tar_members_are_grouped_per_sample_with_fixed_metadata(reference):
    shards = sorted(reference.glob("*/*.tar"))
    assert shards
    for path in shards:
        with tarfile.open(path) as tf:
            assert tf.pax_headers == {}
            members = tf.getmembers()
        assert len(members) % 3 == 0, path
        keys = []
        for i in range(0, len(members), 3):
            group = [m.name for m in members[i:i + 3]]
            key = group[0].rsplit(".", 1)[0]
            assert sorted(group) == sorted(f"{key}.{ext}" for ext in ("jpg", "txt", "json")), (path, group)
            keys.append(key)
        assert len(set(keys)) == len(keys), f"{path}: a sample's members are not together"
        for m in members:
            assert m.isreg() and "/" not in m.name, (path, m.name)
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644), (path, m.name)
            assert m.pax_headers == {}, (path, m.name)


# ---------------------------------------------------------------------------------------------
# 2. Determinism and order


@pytest.mark.unit
def test_two_runs_give_byte_identical_outputs(resplit, reference, tmp_path):
    again = tmp_path / "elsewhere" / "shards"
    shard(*resplit, again)
    assert tree(again) == tree(reference)  # tars, sizes.json and manifest.json, nothing else


@pytest.mark.unit
def test_manifest_row_order_does_not_change_the_shards(resplit, reference, tmp_path):
    pairs, images = resplit
    table = pq.read_table(pairs)
    shuffled = tmp_path / "pairs.parquet"
    order = sorted(range(table.num_rows), key=lambda i: hashlib.md5(str(i).encode()).hexdigest())
    pq.write_table(table.take(order), shuffled)
    root = tmp_path / "shards"
    shard(shuffled, images, root)
    assert tars(root) == tars(reference)


@pytest.mark.unit
def test_seed_changes_the_train_order_only(resplit, reference, tmp_path):
    root = tmp_path / "shards"
    shard(*resplit, root, seed=1)
    train0, train1 = keys_in_order(reference, "train"), keys_in_order(root, "train")
    assert sorted(train0) == sorted(train1)
    assert train0 != train1
    assert [k for k in train0[:PER]] != [k for k in train1[:PER]]
    for split in ("val", "test"):
        assert tars(root, split) == tars(reference, split), split
        assert (root / split / "sizes.json").read_bytes() == (reference / split / "sizes.json").read_bytes()


@pytest.mark.unit
def test_train_is_shuffled_not_in_manifest_or_pmcid_order(resplit, reference):
    rows = manifest_rows(resplit[0])
    train = keys_in_order(reference, "train")
    in_manifest = [k for k in rows if rows[k]["split"] == "train"]
    assert train != in_manifest
    assert train != sorted(in_manifest, key=lambda k: pmcid_order(rows[k]))
    assert train != sorted(in_manifest)
    # Articles are mixed: the first shard holds pairs of many articles, not a handful of neighbours.
    first = {rows[k]["pmcid"] for k in train[:PER]}
    assert len(first) >= PER // 2


@pytest.mark.unit
def test_val_and_test_are_in_numeric_pmcid_then_pair_id_order(resplit, reference):
    rows = manifest_rows(resplit[0])
    for split in ("val", "test"):
        expected = sorted((k for k in rows if rows[k]["split"] == split), key=lambda k: pmcid_order(rows[k]))
        as_strings = sorted(expected, key=lambda k: (rows[k]["pmcid"], k))
        assert expected != as_strings, "test precondition: numeric and string PMCID order differ"
        assert keys_in_order(reference, split) == expected, split


# ---------------------------------------------------------------------------------------------
# 3. Kill and resume

CHILD = r"""
import json, sys, time
from pathlib import Path

from biomedclip.ingest.params import IngestOutputs, IngestParams
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.shard import writer

args = json.loads(sys.argv[1])
real_sample, calls = writer._sample, 0

def stalling_sample(*a, **kw):  # test-only: hang mid-shard so the parent can SIGKILL us there
    global calls
    calls += 1
    if calls == args["stall_at"]:
        Path(args["marker"]).write_text("stalled")
        time.sleep(600)
    return real_sample(*a, **kw)

writer._sample = stalling_sample
root = Path(args["root"])
writer.write_shards(
    IngestParams(outputs=IngestOutputs(pairs=Path(args["pairs"]), images=Path(args["images"]))),
    ShardParams(samples_per_shard=args["per"], seed=args["seed"],
                outputs=ShardOutputs(shards=root, manifest=root / "manifest.json",
                                     report=root.parent / "shard-report.json")))
"""


def kill_mid_run(pairs: Path, images: Path, root: Path, *, stall_at: int, seed: int = 0) -> None:
    """Run `write_shards` in a child process and SIGKILL it while it writes the shard holding the
    `stall_at`-th sample. To land the kill there every time, the child (only the child) wraps the
    writer's `_sample` so that call hangs after dropping a marker file; the parent waits for it."""
    marker = root.parent / "stalled"
    log = root.parent / "child.log"
    args = {"pairs": str(pairs), "images": str(images), "root": str(root), "per": PER,
            "seed": seed, "stall_at": stall_at, "marker": str(marker)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO,
                                env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, f"child exited early ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, "child never reached the stall point"
            time.sleep(0.02)
        assert (root / ".shard-state.json").exists(), "no state file after the first shards"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def killed_and_resumed(resplit, tmp_path_factory):
    """Killed while writing train/000003.tar (three shards done), then re-run to completion."""
    root = tmp_path_factory.mktemp("killed") / "shards"
    kill_mid_run(*resplit, root, stall_at=3 * PER + 7)
    state = json.loads((root / ".shard-state.json").read_text())
    before = {name: (root / name).stat().st_ino for name in state["shards"]}
    interrupted = tree(root)
    report = shard(*resplit, root)
    return root, state, before, interrupted, report


@pytest.mark.integration
def test_the_kill_landed_mid_shard(killed_and_resumed):
    """Precondition of the resume tests: three shards recorded, the fourth half-written."""
    _, state, _, interrupted, _ = killed_and_resumed
    assert sorted(state["shards"]) == ["train/000000.tar", "train/000001.tar", "train/000002.tar"]
    assert "train/000003.tar" not in interrupted and "manifest.json" not in interrupted


@pytest.mark.integration
def test_resumed_run_equals_an_uninterrupted_one(killed_and_resumed, reference):
    root, _, _, _, report = killed_and_resumed
    assert tars(root) == tars(reference)
    for name in ("manifest.json", *(f"{s}/sizes.json" for s in SPLITS)):
        assert (root / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (root / ".shard-state.json").exists()
    assert report["train"]["samples"] == sum(1 for _ in keys_in_order(reference, "train"))


@pytest.mark.integration
def test_resume_keeps_the_shards_already_written(killed_and_resumed):
    root, _, before, _, _ = killed_and_resumed
    assert before, "the killed run recorded no shard"
    assert {name: (root / name).stat().st_ino for name in before} == before, "kept shards were rewritten"


@pytest.mark.integration
def test_resume_leaves_no_temp_files(killed_and_resumed):
    """The killed run left a half-written `.000003.tar.*.tmp` and its `.shard-*` scratch folder
    (with the SQLite sort of the whole manifest); the completed run must not leave them behind."""
    root, _, _, _, _ = killed_and_resumed
    assert leftovers(root) == []
    assert set(tree(root)) == set(tars(root)) | {"manifest.json", *(f"{s}/sizes.json" for s in SPLITS)}


@pytest.mark.integration
def test_resume_rewrites_kept_shards_that_are_gone_or_cut_short(resplit, reference, tmp_path):
    root = tmp_path / "shards"
    kill_mid_run(*resplit, root, stall_at=3 * PER + 3)
    (root / "train" / "000000.tar").unlink()
    cut = root / "train" / "000002.tar"
    cut.write_bytes(cut.read_bytes()[:-10240])
    intact = (root / "train" / "000001.tar").stat().st_ino
    shard(*resplit, root)
    assert tars(root) == tars(reference)
    assert (root / "train" / "000001.tar").stat().st_ino == intact
    assert not (root / ".shard-state.json").exists()


@pytest.mark.unit
def test_rerun_of_a_finished_run_rewrites_nothing_but_repairs_the_folder(resplit, reference, tmp_path):
    root = tmp_path / "shards"
    shard(*resplit, root)
    inodes = {name: (root / name).stat().st_ino for name in tars(root)}
    shard(*resplit, root)
    assert {name: (root / name).stat().st_ino for name in tars(root)} == inodes
    (root / "val" / "000001.tar").unlink()
    (root / "train" / "000777.tar").write_bytes(b"not one of ours")
    shard(*resplit, root)
    assert tree(root) == tree(reference)
    assert (root / "train" / "000000.tar").stat().st_ino == inodes["train/000000.tar"]


@pytest.mark.unit
def test_stale_shards_of_other_inputs_are_fully_rewritten(resplit, reference, tmp_path):
    root = tmp_path / "shards"
    shard(*resplit, root, seed=1)
    assert tars(root, "train") != tars(reference, "train")
    (root / "train" / "000777.tar").write_bytes(b"left over")
    (root / "val" / "000050.tar").write_bytes(b"left over")
    shard(*resplit, root, seed=0)
    assert tree(root) == tree(reference)


@pytest.mark.integration
def test_stale_killed_run_of_other_inputs_is_discarded(resplit, reference, tmp_path):
    root = tmp_path / "shards"
    kill_mid_run(*resplit, root, stall_at=2 * PER + 3, seed=1)
    shard(*resplit, root, seed=0)
    assert tars(root) == tars(reference)
    assert not (root / ".shard-state.json").exists()


@pytest.mark.unit
def test_leftover_shards_of_a_bigger_earlier_run_are_removed(resplit, tmp_path):
    pairs, images = resplit
    table = pq.read_table(pairs)
    articles = sorted(set(table.column("pmcid").to_pylist()))
    smaller = tmp_path / "smaller.parquet"
    pq.write_table(table.filter(pc.is_in(table.column("pmcid"), pa.array(articles[: len(articles) // 3]))), smaller)
    root = tmp_path / "shards"
    shard(pairs, images, root)
    bigger = set(tars(root))
    shard(smaller, images, root)
    fresh = tmp_path / "fresh" / "shards"
    shard(smaller, images, fresh)
    assert set(tars(root)) < bigger
    assert tree(root) == tree(fresh)


# ---------------------------------------------------------------------------------------------
# 4. Input errors name the bad item


@pytest.fixture
def store_copy(resplit, tmp_path) -> tuple[Path, Path, dict[str, dict]]:
    pairs, images = resplit
    copy = tmp_path / "images"
    shutil.copytree(images, copy)
    return pairs, copy, manifest_rows(pairs)


def unique_image(rows: dict[str, dict], split: str) -> dict:
    uses: dict[str, int] = {}
    for r in rows.values():
        uses[r["image_key"]] = uses.get(r["image_key"], 0) + 1
    return next(r for r in rows.values() if r["split"] == split and uses[r["image_key"]] == 1)


def assert_failed_cleanly(root: Path) -> None:
    assert not (root / "manifest.json").exists(), "a failed run wrote the shard manifest"
    assert leftovers(root) == []


@pytest.mark.unit
def test_missing_image_names_the_pair_and_path(store_copy, tmp_path):
    pairs, images, rows = store_copy
    row = unique_image(rows, "test")
    path = images / row["image_key"]
    path.unlink()
    root = tmp_path / "shards"
    with pytest.raises(ShardInputError) as info:
        shard(pairs, images, root)
    assert row["pair_id"] in str(info.value) and str(path) in str(info.value)
    assert_failed_cleanly(root)


@pytest.mark.unit
def test_modified_image_fails_its_sha256_check(store_copy, tmp_path):
    pairs, images, rows = store_copy
    row = unique_image(rows, "val")
    path = images / row["image_key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    root = tmp_path / "shards"
    with pytest.raises(ShardInputError) as info:
        shard(pairs, images, root)
    message = str(info.value)
    assert "image_sha256" in message and row["pair_id"] in message and str(path) in message
    assert_failed_cleanly(root)


@pytest.mark.unit
@pytest.mark.parametrize("column", ["caption", "image_sha256", "split", "image_key", "pmcid"])
def test_manifest_missing_a_column_is_named(resplit, tmp_path, column):
    pairs, images = resplit
    table = pq.read_table(pairs)
    broken = tmp_path / "pairs.parquet"
    pq.write_table(table.drop_columns([column]), broken)
    root = tmp_path / "shards"
    with pytest.raises(ShardInputError, match=column):
        shard(broken, images, root)
    assert_failed_cleanly(root)


@pytest.mark.unit
def test_unknown_split_value_is_named(resplit, tmp_path):
    pairs, images = resplit
    rows = pq.read_table(pairs).to_pylist()
    rows[len(rows) // 2]["split"] = "validation"
    bad_id = rows[len(rows) // 2]["pair_id"]
    broken = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(pairs)), broken)
    root = tmp_path / "shards"
    with pytest.raises(ShardInputError) as info:
        shard(broken, images, root)
    assert "validation" in str(info.value) and bad_id in str(info.value)
    assert_failed_cleanly(root)


@pytest.mark.unit
def test_unreadable_manifest_is_a_shard_input_error(resplit, tmp_path):
    broken = tmp_path / "pairs.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ShardInputError, match=r"pairs\.parquet"):
        shard(broken, resplit[1], tmp_path / "shards")
