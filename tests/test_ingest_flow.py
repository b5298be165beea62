"""The Prefect flow `ingest` on its two task runners: threads and a local Dask cluster.

Real Prefect runs (a temporary server in a temp PREFECT_HOME), a real 2-worker Dask cluster:
the manifest must not depend on where the batches ran.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, ingest_params

pytestmark = pytest.mark.integration


def run_flow(params, tmp_path: Path, name: str) -> str:
    params_file = tmp_path / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump({"ingest": params.model_dump(mode="json")}))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    result = subprocess.run([sys.executable, str(REPO / "flows" / "ingest.py"), "--params", str(params_file)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_threads_and_dask_give_the_same_manifest_as_the_library(tmp_path, noisy_corpus, ingested_noisy):
    corpus, _ = noisy_corpus
    reference, _, _ = ingested_noisy
    threads = ingest_params(corpus.out, tmp_path / "threads")
    dask = ingest_params(corpus.out, tmp_path / "dask", task_runner="dask")
    run_flow(threads, tmp_path, "threads")
    dask_log = run_flow(dask, tmp_path, "dask")
    # The Dask workers report to the flow's temporary server: one server, one SQLite writer.
    # (Each worker starting its own locked the database on a busy machine.)
    assert dask_log.count("Starting temporary server") == 1, dask_log[-3000:]
    expected = pd.read_parquet(reference.outputs.pairs)
    for params in (threads, dask):
        pd.testing.assert_frame_equal(pd.read_parquet(params.outputs.pairs), expected)
        pd.testing.assert_frame_equal(pd.read_parquet(params.outputs.rejects),
                                      pd.read_parquet(reference.outputs.rejects))
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        runs = db.execute("SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON r.flow_id = f.id").fetchall()
        tasks = db.execute("SELECT COUNT(*) FROM task_run WHERE state_type = 'COMPLETED'").fetchone()[0]
        artifacts = db.execute("SELECT key FROM artifact").fetchall()
    assert runs.count(("ingest", "COMPLETED")) == 2
    # On Dask every batch is a task (retried alone); on one machine the ingest's own threads share
    # the articles finer than batch tasks would (BENCHMARKS.md, "Both cores").
    assert tasks >= 160 // reference.batch_size
    assert ("ingest",) in artifacts  # the stage's report, under the stage's name
