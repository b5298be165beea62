"""End to end: the scheduled retrain against a PMC bucket that grows, with real services.

A copy of this project in a temp git repo retrains from an S3 endpoint in PMC's layout (moto's
server on loopback), pushes to a DVC remote in that same endpoint, registers into the project's
MLflow store and reports to a real Prefect server (`prefect server start`). The bucket gains
articles between cycles, exactly as PMC does:

1. cycle 1 mirrors 80 articles, trains, registers v1 and promotes it (no champion yet);
2. cycle 2 brings 25 new articles and one retraction: only those are fetched and ingested, v2
   is registered and the gate decides;
3. the deployment served by `biomedclip schedule` carries its cron schedule; two runs triggered
   at once run one after the other and find nothing new: nothing is registered.

Then: a retrain while another holds the workspace is skipped; a failing step is named and
changes nothing; `prefect.yaml` deploys the same schedule to a process work pool whose worker
runs it, pausable with Prefect's CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import mlflow
import pytest
import yaml

from biomedclip.demo.corpus import generate_corpus
from biomedclip.locks import held

from .conftest import BIN, SMALL_TAIL, clone_project, prefect_request, sh, small_params

pytestmark = pytest.mark.e2e
BUCKET, PREFIX, REMOTE = "pmc-oa-opendata-test", "oa", "dvc-remote"


@dataclass
class World:
    project: Path
    env: dict[str, str]
    api: str
    s3: object
    first: Path  # corpus of cycle 1
    later: Path  # articles PMC adds before cycle 2


def versions(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("PMC")}


def upload(s3, folder: Path) -> None:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{p.relative_to(folder).as_posix()}",
                                              Body=p.read_bytes()), files))


@pytest.fixture(scope="module")
def world(tmp_path_factory, moto_url, prefect_api):
    """The project retrains into its own MLflow store: no MLflow URI from the environment (an
    earlier test's `mlflow.set_tracking_uri` exports one for subprocesses)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        yield make_world(tmp_path_factory, moto_url, prefect_api)


def make_world(tmp_path_factory, moto_url: str, prefect_api: str) -> World:
    root = tmp_path_factory.mktemp("retrain")
    first = small_params(root / "pmc-first", articles=80)
    later = small_params(root / "pmc-later", articles=25, seed=7, first_pmcid=12_000_000)
    generate_corpus(first)
    generate_corpus(later)
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=REMOTE)
    upload(s3, first.out)
    project = clone_project(
        root / "project", **SMALL_TAIL,
        train={"samples_per_epoch": 128},
        validate={"split_tolerance": 0.1},  # a 100-article corpus's split fractions vary more
        retrain={"source": f"s3://{BUCKET}/{PREFIX}", "git_branch": "retrain",
                 "s3": {"endpoint_url": moto_url, "region": "us-east-1", "unsigned": False, "max_attempts": 3}})
    env = {"PREFECT_API_URL": prefect_api}
    sh(project, "dvc", "remote", "add", "--local", "-d", "s3", f"s3://{REMOTE}/store")
    sh(project, "dvc", "remote", "modify", "--local", "s3", "endpointurl", moto_url)
    return World(project, env, prefect_api, s3, first.out, later.out)


def retrain(world: World, *args: str) -> str:
    return sh(world.project, "biomedclip", "retrain", *args, env=world.env, timeout=900)


def registry(world: World) -> mlflow.MlflowClient:
    # The registry URI too: without it MLflow takes the process-wide one, which an earlier test
    # in the same session may have pointed at its own store.
    uri = f"sqlite:///{world.project / 'mlflow.db'}"
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def registered_versions(world: World) -> list[int]:
    return sorted(int(v.version) for v in registry(world).search_model_versions("name='biomedclip'"))


def api(world: World, method: str, path: str, **body) -> dict:
    return prefect_request(world.api, method, path, **body)


def last_artifact(world: World, key: str) -> str:
    found = api(world, "POST", "/artifacts/filter", artifacts={"key": {"any_": [key]}}, sort="CREATED_DESC", limit=1)
    return found[0]["data"]


def events(world: World, name: str) -> list[dict]:
    deadline = time.monotonic() + 30  # the server persists events asynchronously
    while True:
        found = api(world, "POST", "/events/filter", filter={"event": {"name": [name]}}, limit=50)["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(1)


def data_md5(project: Path) -> str:
    return yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]


def git(project: Path, *args: str) -> str:
    return sh(project, "git", *args).strip()


def test_cycle_1_mirrors_trains_registers_and_promotes_v1(world):
    recorded = data_md5(world.project)
    output = retrain(world)
    assert "retrain promoted" in output
    project = world.project
    assert versions(project / "data" / "raw") == versions(world.first)
    assert data_md5(project) != recorded  # data.dvc records the mirrored corpus
    assert json.loads((project / "metrics" / "register.json").read_text())["version"] == 1
    assert int(registry(world).get_model_version_by_alias("biomedclip", "champion").version) == 1
    # dvc push: the data version (its .dir listing) is in the S3 remote.
    digest = data_md5(project).removesuffix(".dir")
    keys = [o["Key"] for page in world.s3.get_paginator("list_objects_v2").paginate(Bucket=REMOTE)
            for o in page.get("Contents", [])]
    assert f"store/files/md5/{digest[:2]}/{digest[2:]}.dir" in keys
    # The lineage commit: data.dvc and dvc.lock as registered, on the branch; the version points at it.
    assert git(project, "show", "retrain:data.dvc") == (project / "data.dvc").read_text().strip()
    tip = git(project, "rev-parse", "retrain")
    tags = registry(world).get_model_version("biomedclip", "1").tags
    assert tags["biomedclip.git.data_commit"] == tip and tags["biomedclip.git.data_branch"] == "retrain"
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD") != "retrain"  # checkout untouched
    # The event automations hang on, and the decision for people.
    promoted = events(world, "biomedclip.model.promoted")
    assert [e["payload"]["version"] for e in promoted] == [1]
    assert promoted[0]["resource"]["prefect.resource.id"] == "biomedclip.model.biomedclip"
    assert "new champion" in last_artifact(world, "retrain-decision")


def test_cycle_2_fetches_only_what_pmc_added_and_gates_v2(world):
    project = world.project
    upload(world.s3, world.later)
    retracted = sorted(versions(world.first))[5]
    key = f"{PREFIX}/{retracted}/{retracted}.json"
    meta = json.loads(world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({**meta, "is_retracted": True}).encode())
    before = {p: p.stat().st_mtime_ns for p in (project / "data" / "raw").rglob("*") if p.is_file()}

    output = retrain(world)

    assert "retrain promoted" in output or "retrain not-promoted" in output
    raw = project / "data" / "raw"
    assert versions(raw) == versions(world.first) | versions(world.later)
    # What was there already was not fetched again (only the retracted version's JSON changed).
    rewritten = [p for p, mtime in before.items() if p.stat().st_mtime_ns != mtime]
    assert [p.relative_to(raw).as_posix() for p in rewritten] == [f"{retracted}/{retracted}.json"]
    decision = last_artifact(world, "retrain-decision")
    assert f"| new | {len(versions(world.later))} |" in decision and "| changed | 1 |" in decision
    assert "| retracted | 1 |" in decision
    # The ingest read only the new articles and the retracted one; the rest came from its state.
    ingested = json.loads((project / "data" / "ingest-state" / "last-run.json").read_text())
    articles = lambda folder: {v.split(".")[0] for v in versions(folder)}  # noqa: E731
    assert ingested["processed"] == len(articles(world.later)) + 1
    assert ingested["unchanged"] == len(articles(world.first)) - 1
    # v2 registered, the gate decided on today's test set, and the alias follows its decision.
    assert registered_versions(world) == [1, 2]
    record = json.loads((project / "registry" / "decisions.jsonl").read_text().splitlines()[-1])
    assert record["version"] == 2 and record["previous_champion"] == 1 and record["actor"] == "retrain"
    assert set(record["challenger_metrics"]) >= {"retrieval/image_to_text/recall_at_10"}
    champion = int(registry(world).get_model_version_by_alias("biomedclip", "champion").version)
    assert champion == (2 if record["promoted"] else 1)
    assert len(events(world, "biomedclip.model.promoted")) == (2 if record["promoted"] else 1)
    assert git(project, "log", "--format=%s", "-1", "retrain").endswith("models:/biomedclip/2")


def test_the_served_deployment_has_its_schedule_and_runs_one_trigger_at_a_time(world):
    env = {**os.environ, **world.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_HOME", None)
    log_path = world.project / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(["biomedclip", "schedule", "--cron", "0 4 * * *", "--timezone", "Europe/Berlin"],
                                  cwd=world.project, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                deployment = api(world, "GET", "/deployments/name/retrain/weekly")
                break
            except httpx.HTTPStatusError:
                assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(1)
        schedule = deployment["schedules"][0]["schedule"]
        assert (schedule["cron"], schedule["timezone"]) == ("0 4 * * *", "Europe/Berlin")
        assert deployment["global_concurrency_limit"]["limit"] == 1
        runs = [api(world, "POST", f"/deployments/{deployment['id']}/create_flow_run")["id"] for _ in range(2)]
        deadline = time.monotonic() + 300
        while True:
            states = [api(world, "GET", f"/flow_runs/{run}") for run in runs]
            if all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in states):
                break
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(2)
        finished = sorted(states, key=lambda r: r["start_time"])
        assert [r["state"]["type"] for r in finished] == ["COMPLETED", "COMPLETED"], log_path.read_text()[-3000:]
        assert finished[0]["end_time"] <= finished[1]["start_time"]  # never two at once (same ISO format)
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert "Nothing new" in last_artifact(world, "retrain-decision")
    assert registered_versions(world) == [1, 2]  # cycle 3: nothing new, nothing registered


def test_a_retrain_while_another_holds_the_workspace_is_skipped(world):
    md5 = data_md5(world.project)
    with held(world.project / ".retrain.lock", what="the workspace", wait=False, timeout_s=0):
        output = retrain(world, "--force")
    assert "retrain skipped" in output and f"pid {os.getpid()}" in output
    assert data_md5(world.project) == md5 and registered_versions(world) == [1, 2]


def test_a_failing_step_is_named_and_leaves_data_and_registry_as_they_were(world):
    """The source emptied (a wrong prefix): the removal guard stops the sync, not retried."""
    project = world.project
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["retrain"]["source"] = f"s3://{BUCKET}/no-such-prefix"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    raw = sorted(p.relative_to(project).as_posix() for p in (project / "data" / "raw").rglob("*"))
    md5 = data_md5(project)
    env = {**os.environ, **world.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PREFECT_HOME", None)
    try:
        result = subprocess.run(["biomedclip", "retrain"], cwd=project, env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        (project / "params.yaml").write_text(original)
    assert result.returncode == 1
    assert "retrain failed at step 'sync'" in result.stderr and "max_removed_fraction" in result.stderr
    assert sorted(p.relative_to(project).as_posix() for p in (project / "data" / "raw").rglob("*")) == raw
    assert data_md5(project) == md5 and registered_versions(world) == [1, 2]
    assert "failed: **sync**" in last_artifact(world, "retrain-decision")


def test_prefect_yaml_deploys_the_schedule_to_a_process_pool_its_worker_runs_it_and_it_pauses(world):
    sh(world.project, "prefect", "work-pool", "create", "biomedclip-process", "--type", "process", env=world.env)
    sh(world.project, "prefect", "--no-prompt", "deploy", "--all", env=world.env)
    deployment = api(world, "GET", "/deployments/name/retrain/weekly")
    assert deployment["work_pool_name"] == "biomedclip-process"
    assert deployment["entrypoint"] == "flows/retrain.py:retrain_flow"
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    (schedule,) = deployment["schedules"]
    assert ((schedule["schedule"]["cron"], schedule["schedule"]["timezone"], schedule["active"])
            == ("0 3 * * 1", "UTC", True))
    # A process worker picks a triggered run up and runs it in this checkout.
    run = api(world, "POST", f"/deployments/{deployment['id']}/create_flow_run")["id"]
    sh(world.project, "prefect", "worker", "start", "--pool", "biomedclip-process", "--run-once", env=world.env,
       timeout=300)
    assert api(world, "GET", f"/flow_runs/{run}")["state"]["type"] == "COMPLETED"
    sh(world.project, "prefect", "deployment", "schedule", "pause", "retrain/weekly", schedule["id"], env=world.env)
    assert not api(world, "GET", "/deployments/name/retrain/weekly")["schedules"][0]["active"]
