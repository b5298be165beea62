"""End to end: a copy of this project in a temp dir, real git, real DVC, real Prefect runs.

These are the users' first steps on a fresh clone: the demo corpus regenerates exactly the
version `data.dvc` records, and `dvc repro` runs the stages through their Prefect flows, then
re-runs only what a change touches.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import BIN, clone_project, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return clone_project(tmp_path_factory.mktemp("clone") / "project")


def test_fresh_clone_regenerates_exactly_the_data_version_in_data_dvc(project):
    assert not (project / "data" / "raw").exists()
    recorded = (project / "data.dvc").read_text()
    sh(project, "biomedclip", "demo-data", "--no-benchmark")
    # DVC hashes the regenerated tree into its cache; data.dvc must not change.
    sh(project, "dvc", "commit", "--force", "data.dvc")
    assert (project / "data.dvc").read_text() == recorded, "regenerated data/raw differs"
    status = json.loads(sh(project, "dvc", "status", "--json", "data.dvc").strip().splitlines()[-1])
    assert status == {}


def test_dvc_repro_runs_stages_through_prefect_then_only_what_changed(project):
    first = sh(project, "dvc", "repro")
    assert "Running stage 'demo_benchmark'" in first
    labels = project / "data" / "benchmarks" / "pmc-figure-types" / "labels.csv"
    assert len(labels.read_text().splitlines()) == 1 + 16 * 20
    with sqlite3.connect(project / ".prefect" / "prefect.db") as db:
        runs = db.execute("SELECT f.name, r.state_type FROM flow_run r JOIN flow f "
                          "ON r.flow_id = f.id").fetchall()
        artifacts = db.execute("SELECT key FROM artifact").fetchall()
    assert ("demo-data", "COMPLETED") in runs
    assert ("demo-data",) in artifacts
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")

    report = json.loads((project / "metrics" / "ingest.json").read_text())
    assert report["pairs"]["total"] > 1000
    assert min(report["pairs"]["val"], report["pairs"]["test"]) > 20
    for flow in ("validate", "shard", "tokenizer", "train"):
        assert (flow, "COMPLETED") in runs, flow
    assert {("validation-report",), ("shard-report",), ("train-report",)} <= set(artifacts)
    run_info = json.loads((project / "data" / "train" / "run.json").read_text())
    assert (project / run_info["model_dir"] / "open_clip_model.safetensors").is_file()
    assert run_info["mlflow_run_id"] and (project / "mlflow.db").is_file()
    assert json.loads((project / "metrics" / "validate.json").read_text())["success"] is True
    assert (project / "reports" / "validation" / "index.html").is_file()
    for split in ("train", "val", "test"):
        sizes = json.loads((project / "data" / "shards" / split / "sizes.json").read_text())
        assert sum(sizes.values()) == report["pairs"][split]
    again = sh(project, "dvc", "repro")
    assert "Running stage" not in again

    # The registered version's lineage, verified against this workspace, then a byte changed.
    registered = json.loads((project / "metrics" / "register.json").read_text())
    uri = f"models:/{registered['name']}/{registered['version']}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_HOME", None)
    shown = subprocess.run(["biomedclip", "lineage", uri, "--json"], cwd=project, env=env, capture_output=True,
                           text=True, timeout=600)
    assert shown.returncode == 0, shown.stderr
    chain = json.loads(shown.stdout)
    assert chain["run_id"] == run_info["mlflow_run_id"]
    assert {"ingest", "validate", "shard", "tokenizer", "train", "evaluate"} <= set(chain["dvc_lock"]["stages"])
    assert {"ingest", "validate", "shard", "train", "evaluate"} <= set(chain["flow_runs"])
    assert chain["data"]["version"] == yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert "verified" in sh(project, "biomedclip", "lineage", uri, "--verify")
    shard = sorted((project / "data" / "shards" / "train").glob("*.tar"))[0]
    original = shard.read_bytes()
    shard.write_bytes(original[:2000] + bytes([original[2000] ^ 0xFF]) + original[2001:])
    failed = subprocess.run(["biomedclip", "lineage", uri, "--verify"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and shard.name in failed.stdout + failed.stderr
    shard.write_bytes(original)

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["demo"]["noise"]["tiff"] = 0.05  # the corpus's knob: the benchmark does not read it
    params["ingest"]["workers"] = 1  # how the ingest runs, not what it produces
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")
    params["shard"]["samples_per_shard"] = 100  # re-runs shard (and what follows) only
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh(project, "dvc", "status")
    assert "shard:" in status and "validate:" not in status and "ingest:" not in status
    params["ingest"]["caption"]["min_words"] = 6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = sh(project, "dvc", "status")
    assert "ingest" in status and "demo_benchmark" not in status
    params["demo"]["benchmark"]["per_class"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "demo_benchmark" in sh(project, "dvc", "status")
    assert "Running stage 'demo_benchmark'" in sh(project, "dvc", "repro")
    assert len(labels.read_text().splitlines()) == 1 + 16 * 3


def test_a_failing_critical_check_stops_dvc_repro_before_shard(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validate"]["min_pairs"] = 10**9
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_HOME", None)
    result = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "min_pairs" in output and "critical expectation(s) failed" in output
    assert "Running stage 'shard'" not in output
    assert json.loads((project / "metrics" / "validate.json").read_text())["success"] is False
