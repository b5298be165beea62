"""An evaluation is computed once: its result, kept by everything that decides it.

A result is decided by the model's weights and config, the test data (the split's shards, by the
shard manifest's digests), every benchmark's files and classes (`Benchmark.version()`, each split
the evaluation reads) and the evaluation's own params (ks, templates, benchmarks, the probe's
settings, the model tests'). Where all of these are the same, `evaluate` returns the recorded
result instead of embedding anything, and says so: `promote` re-evaluating a champion that the
last promotion evaluated, `compare @champion @baseline` after `promote`, the gate after `register`.
The model report's pictures (`search.examples`) are kept beside the result. The cache folder
(`evaluate.cache`) is not versioned; deleting it costs only the time to recompute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes
from biomedclip.evaluate.benchmarks import BenchmarkError, load_benchmark
from biomedclip.evaluate.params import EvaluateParams

log = logging.getLogger(__name__)
FORMAT = 1  # bumped when what a cached result holds changes: older entries are then ignored
RESULT, EXAMPLES = "result.json", "examples"  # an entry: <cache>/<key>/result.json (+ the pictures)
# Params that change how an evaluation runs, not what it finds.
HOW = {"model", "batch_size", "similarity_memory_mb", "outputs", "s3", "cache"}


def test_data_version(shards_dir: Path, split: str) -> str:
    """The split's shards, by the shard manifest's sha256 of each (or, without a manifest, by
    their names and sizes)."""
    manifest = shards_dir / "manifest.json"
    if manifest.is_file():
        shards = json.loads(manifest.read_text()).get("splits", {}).get(split, {}).get("shards", [])
        return hashlib.sha256(json.dumps([s["sha256"] for s in shards]).encode()).hexdigest()
    listed = sorted((p.name, p.stat().st_size) for p in (shards_dir / split).glob("*.tar"))
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def benchmark_versions(params: EvaluateParams) -> dict[str, dict[str, str]]:
    """{benchmark: {split: version}} for every split the evaluation reads (the probes read train
    and val beside test)."""
    versions: dict[str, dict[str, str]] = {}
    for spec in params.benchmarks:
        found = versions.setdefault(spec.name, {})
        for split in ("test", "train", "val") if params.linear_probe.enabled else ("test",):
            try:
                bench = load_benchmark(spec.name, spec.path, classes=spec.classes, format=spec.format,
                                       preset=spec.preset, s3=params.s3, split=split)
            except BenchmarkError:
                continue
            found[bench.split or "all"] = bench.version()
    return versions


def evaluation_key(weights_sha256: str, model_cfg: dict[str, Any], params: EvaluateParams, shards_dir: Path) -> str:
    what = {"format": FORMAT, "weights": weights_sha256, "config": model_cfg,
            "test_data": test_data_version(shards_dir, params.split), "benchmarks": benchmark_versions(params),
            "params": params.model_dump(mode="json", exclude=HOW)}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def recall(cache: Path, key: str) -> dict[str, Any] | None:
    """The result recorded under `key`, None when there is none (or it is unreadable)."""
    path = cache / key / RESULT
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): evaluating again", path, exc)
        return None


def record(cache: Path, key: str, result: dict[str, Any]) -> Path:
    """Keep `result` under `key`; returns where."""
    path = cache / key / RESULT
    atomic_write_bytes(path, (json.dumps(result, sort_keys=True) + "\n").encode())
    return path


def examples_of(cache: Path, key: str) -> Path:
    """Where the pictures of the result under `key` are kept (a folder; absent until recorded)."""
    return cache / key / EXAMPLES


def keep_examples(cache: Path, key: str, folder: Path) -> None:
    """Keep a copy of the pictures page `folder` beside the result under `key`."""
    with atomic_directory(examples_of(cache, key)) as staging:
        shutil.copytree(folder, staging, dirs_exist_ok=True)


def restore_examples(cache: Path, key: str, folder: Path) -> bool:
    """The kept pictures of `key` into `folder` (replaced atomically); False when none were kept."""
    kept = examples_of(cache, key)
    if not (kept / "index.html").is_file():
        return False
    with atomic_directory(folder) as staging:
        shutil.copytree(kept, staging, dirs_exist_ok=True)
    return True
