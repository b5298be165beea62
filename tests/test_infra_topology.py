"""The pipeline against the production topology, started by `infra/local/launch.py` on loopback.

Everything is real: PostgreSQL from the OS (MLflow's backend store and Prefect's database), an
S3 endpoint (moto's server: raw data, the DVC remote, MLflow's artifacts), `mlflow server` with
basic auth, `prefect server start` with API auth. The project is a fresh clone in a temp dir that
knows the topology only through the variables `launch.py` hands out (`STATE/pipeline.env`).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from .conftest import SMALL_TAIL, clone_project, merged

pytestmark = pytest.mark.e2e


def run(cwd: Path, env: dict[str, str], *args: str, transcript: list[str] | None = None,
        timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if transcript is not None:
        transcript.append(result.stdout + result.stderr)
    if check:
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def s3_client(env: dict[str, str]):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def keys(env: dict[str, str], bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def prefect_post(env: dict[str, str], path: str, body: dict | None = None, *, auth: bool = True):
    import httpx

    headers = {}
    if auth:
        token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    return httpx.post(f"{env['PREFECT_API_URL']}{path}", json=body or {}, headers=headers, timeout=30)


@pytest.fixture
def mlflow_client(topology, monkeypatch):
    """A client of the tracking server, authenticated as the pipeline (MLflow reads the
    credentials from the environment at each request)."""
    import mlflow

    for key, value in topology.pipeline_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = topology.pipeline_env()["MLFLOW_TRACKING_URI"]
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


# --- the launcher ------------------------------------------------------------------------------


def test_launcher_starts_healthy_services_that_refuse_unauthenticated_requests(topology):
    import httpx

    status = topology.launch("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        [name, "healthy"] for name in ("postgres", "s3", "mlflow", "prefect")]
    for name in ("secrets.env", "pipeline.env"):
        assert (topology.state / name).stat().st_mode & 0o077 == 0, f"{name} readable by others"

    env = topology.pipeline_env()
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{topology.ports['mlflow']}"
    assert env["PREFECT_API_URL"] == f"http://127.0.0.1:{topology.ports['prefect']}/api"
    search = f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    assert httpx.get(search, auth=(env["MLFLOW_TRACKING_USERNAME"], "wrong"), timeout=10).status_code == 401
    assert httpx.get(search, auth=(env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
                     timeout=10).status_code == 200
    assert httpx.get(f"{env['MLFLOW_TRACKING_URI']}/health", timeout=10).status_code == 200
    assert prefect_post(env, "/flows/filter", auth=False).status_code == 401
    assert prefect_post(env, "/flows/filter").status_code == 200

    # `up` again is a no-op that starts nothing and prints no secret.
    pids = json.loads((topology.state / "topology.json").read_text())["pids"]
    again = topology.launch("up")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("running") == 4
    assert json.loads((topology.state / "topology.json").read_text())["pids"] == pids
    for secret in topology.secrets().values():
        assert secret not in again.stdout + again.stderr + status.stdout


# --- the whole pipeline ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(topology, tmp_path_factory):
    """`dvc repro` in a fresh clone, every service remote: raw data pulled from the S3 DVC
    remote, ingest on a 2-worker Dask cluster, training under torchrun with 2 processes. A corpus
    of 120 articles: the services are under test here (the default corpus's pipeline, and its
    dvc.lock, are test_pipeline's)."""
    env = topology.env()
    project = clone_project(tmp_path_factory.mktemp("topology") / "project",
                            **merged(SMALL_TAIL, {"demo": {"articles": 120}}),
                            validate={"split_tolerance": 0.1},  # a small corpus's split fractions vary more
                            ingest={"task_runner": "dask", "workers": 2}, train={"nproc": 2})
    transcript: list[str] = []
    bucket = env["BIOMEDCLIP_DATA_BUCKET"]
    run(project, env, "dvc", "remote", "add", "-d", "store", f"{bucket}/dvc", transcript=transcript)
    run(project, env, "dvc", "remote", "modify", "store", "endpointurl", env["AWS_ENDPOINT_URL"],
        transcript=transcript)

    # Someone published the raw corpus to the team's S3 remote ...
    run(project, env, "biomedclip", "demo-data", "--no-benchmark", transcript=transcript)
    run(project, env, "dvc", "commit", "--force", "data.dvc", transcript=transcript)
    recorded = (project / "data.dvc").read_text()
    run(project, env, "dvc", "push", "data.dvc", transcript=transcript)
    shutil.rmtree(project / "data" / "raw")
    shutil.rmtree(project / ".dvc" / "cache")
    # ... and this machine starts from it.
    run(project, env, "dvc", "pull", "data.dvc", transcript=transcript)
    assert (project / "data.dvc").read_text() == recorded
    assert json.loads(run(project, env, "dvc", "status", "--json", "data.dvc").stdout.strip().splitlines()[-1]) == {}
    started = time.monotonic()
    run(project, env, "dvc", "repro", transcript=transcript)
    repro_s = time.monotonic() - started
    run(project, env, "dvc", "push", transcript=transcript)
    return {"project": project, "env": env, "transcript": transcript, "repro_s": repro_s}


def test_dvc_repro_against_the_services_keeps_every_record_on_them(pipeline, topology, mlflow_client):
    import psycopg

    project, env = pipeline["project"], pipeline["env"]
    # The ingest fanned its article batches out as tasks of its flow run, on the Dask cluster
    # (that Dask makes the library's manifest is test_ingest_flow's; here: it ran on the services).
    ingest_run = json.loads((project / "reports" / "flow-runs" / "ingest.json").read_text())["flow_run"]["id"]
    parts = prefect_post(env, "/task_runs/filter", {"flow_runs": {"id": {"any_": [ingest_run]}},
                                                    "task_runs": {"name": {"like_": "part"}}}).json()
    assert len(parts) >= 2 and {p["state_type"] for p in parts} == {"COMPLETED"}, parts

    # The DVC remote and MLflow's artifacts are in S3.
    dvc_objects = keys(env, "biomedclip-data", "dvc/")
    assert len(dvc_objects) > 100
    assert any(key.endswith(".dir") for key in dvc_objects)
    artifacts = keys(env, "mlflow-artifacts")
    assert any(key.endswith("open_clip_model.safetensors") for key in artifacts)
    assert not (project / "mlflow.db").exists() and not (project / ".prefect" / "prefect.db").exists()

    # torchrun with 2 processes logged exactly one training run, complete.
    registered = json.loads((project / "metrics" / "register.json").read_text())
    run_info = json.loads((project / "data" / "train" / "run.json").read_text())
    training = [r for e in mlflow_client.search_experiments()
                for r in mlflow_client.search_runs([e.experiment_id])
                if "biomedclip.digest" in r.data.tags]
    assert [r.info.run_id for r in training] == [run_info["mlflow_run_id"]]
    assert training[0].info.status == "FINISHED"
    losses = mlflow_client.get_metric_history(run_info["mlflow_run_id"], "loss")
    assert sorted(m.step for m in losses)[-1] == run_info["steps"]
    version = mlflow_client.get_model_version(registered["name"], str(registered["version"]))
    assert version.run_id == run_info["mlflow_run_id"]

    # Both servers keep their records in PostgreSQL.
    secret = {**topology.secrets()}
    pg = f"127.0.0.1:{topology.ports['postgres']}"
    with psycopg.connect(f"postgresql://mlflow:{secret['MLFLOW_DB_PASSWORD']}@{pg}/mlflow") as db:
        assert db.execute("SELECT count(*) FROM model_versions WHERE name = %s",
                          (registered["name"],)).fetchone()[0] >= 1
        assert db.execute("SELECT status FROM runs WHERE run_uuid = %s",
                          (run_info["mlflow_run_id"],)).fetchone()[0] == "FINISHED"
    with psycopg.connect(f"postgresql://prefect:{secret['PREFECT_DB_PASSWORD']}@{pg}/prefect") as db:
        done = {row[0] for row in db.execute(
            "SELECT f.name FROM flow_run r JOIN flow f ON r.flow_id = f.id WHERE r.state_type = 'COMPLETED'")}
    assert {"ingest", "validate", "shard", "tokenizer", "train", "evaluate", "register"} <= done

    # Promote, then audit the lineage from a workspace emptied and refilled from the S3 remote.
    promoted = run(project, env, "biomedclip", "promote", transcript=pipeline["transcript"])
    assert (mlflow_client.get_model_version_by_alias(registered["name"], "champion").version
            == str(registered["version"]))
    uri = f"models:/{registered['name']}/{registered['version']}"
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    run(project, env, "dvc", "pull", transcript=pipeline["transcript"])
    chain = json.loads(run(project, env, "biomedclip", "lineage", uri, "--json",
                           transcript=pipeline["transcript"]).stdout)
    assert set(chain["flow_runs"]) >= {"ingest", "validate", "shard", "train", "evaluate"}
    flow_runs = prefect_post(env, "/flow_runs/filter",
                             {"flow_runs": {"id": {"any_": list(chain["flow_runs"].values())}}})
    assert {r["state_type"] for r in flow_runs.json()} == {"COMPLETED"}
    assert len(flow_runs.json()) == len(chain["flow_runs"])
    verified = run(project, env, "biomedclip", "lineage", uri, "--verify", transcript=pipeline["transcript"])
    assert "verified" in verified.stdout + verified.stderr
    assert "champion" in promoted.stdout + promoted.stderr


def test_no_credential_reaches_logs_params_tags_artifacts_or_dvc_lock(pipeline, topology, mlflow_client):
    project, env = pipeline["project"], pipeline["env"]
    places: dict[str, str] = {"command output": "\n".join(pipeline["transcript"])}
    for name in ("dvc.lock", "params.yaml", ".dvc/config", "data.dvc"):
        places[name] = (project / name).read_text()
    places.update({str(p.relative_to(project)): p.read_text(errors="replace")
                   for p in (project / "metrics").rglob("*") if p.is_file()})
    for experiment in mlflow_client.search_experiments():
        for found in mlflow_client.search_runs([experiment.experiment_id]):
            places[f"run {found.info.run_id} params+tags"] = json.dumps(
                [found.data.params, found.data.tags, found.data.metrics])
    for model in mlflow_client.search_registered_models():
        for version in mlflow_client.search_model_versions(f"name = '{model.name}'"):
            places[f"{model.name} v{version.version} tags"] = json.dumps([version.tags, version.source])
    for kind in ("artifacts", "logs", "flow_runs"):
        found = prefect_post(env, f"/{kind}/filter", {"limit": 200})
        assert found.status_code == 200
        places[f"Prefect {kind}"] = found.text
    assert len(places["Prefect logs"]) > 1000 and len(places["Prefect artifacts"]) > 1000
    leaks = [(where, key) for key, secret in topology.secrets().items()
             for where, text in places.items() if secret in text]
    assert leaks == []


# --- faults ------------------------------------------------------------------------------------


def test_training_outlives_an_mlflow_server_restart_and_loses_no_metric(pipeline, topology, mlflow_client, tmp_path):
    """The tracking server goes down mid-training and comes back: training keeps stepping,
    the metrics of the outage are buffered, sent afterwards, and the run finishes complete."""
    project, env = pipeline["project"], pipeline["env"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    out = tmp_path / "train"
    params["train"].update(nproc=1, samples_per_epoch=32 * 40, log_every=1, checkpoint_every=1000,
                           outputs={"dir": str(out), "run_info": str(out / "run.json"),
                                    "loss_curve": str(out / "loss.csv"), "metrics": str(out / "metrics.json")})
    params["tracking"]["experiment"] = "restart-drill"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "train.log"
    with log.open("w") as sink:
        trainer = subprocess.Popen(["biomedclip", "--params", str(tmp_path / "params.yaml"), "train"],
                                   cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while "step 5/" not in log.read_text():
            assert trainer.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "training did not reach step 5"
            time.sleep(1)
        down = topology.launch("down", "mlflow")
        assert down.returncode == 0, down.stderr
        steps_at_down = log.read_text().count(" step ")
        time.sleep(10)
        steps_while_down = log.read_text().count(" step ") - steps_at_down
        up = topology.launch("up", "mlflow")
        assert up.returncode == 0, up.stderr
        assert trainer.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
    text = log.read_text()
    assert steps_while_down > 0, "training stalled while the tracking server was down"
    run_id = json.loads((out / "run.json").read_text())["mlflow_run_id"]
    finished = mlflow_client.get_run(run_id)
    assert finished.info.status == "FINISHED"
    total = json.loads((out / "run.json").read_text())["steps"]
    for key in ("loss", "lr", "samples_per_s"):
        steps = sorted(m.step for m in mlflow_client.get_metric_history(run_id, key))
        assert steps == list(range(1, total + 1)), f"{key}: {len(steps)} of {total} steps logged"
    assert len((out / "loss.csv").read_text().splitlines()) == 1 + total  # the local copy agrees
    assert not [key for key, secret in topology.secrets().items() if secret in text]


def test_a_workspace_that_started_on_the_embedded_store_carries_over_to_the_server(pipeline, topology,
                                                                                    mlflow_client, tmp_path):
    """Every workspace starts on `sqlite:///mlflow.db`. Pointed at the team's server (auth on), a
    command naming its training run says the run is not there and how to carry it over (not
    "Permission denied"); `biomedclip carry-over` then puts the run, the registered versions with
    their lineage and aliases on the server, and the same commands work there."""
    from biomedclip.register.params import RegisterParams
    from biomedclip.register.registry import register
    from biomedclip.tracking import TrackingParams, new_run

    project, env = pipeline["project"], pipeline["env"]
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    embedded = TrackingParams(uri=f"sqlite:///{workspace / 'mlflow.db'}", experiment="biomedclip")
    model_dir = project / "data" / "train" / "final"
    with pytest.MonkeyPatch.context() as mp:  # the embedded store, whatever an earlier test exported
        mp.chdir(workspace)
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            mp.delenv(name, raising=False)
        run_id = new_run(embedded, "trained here", {"biomedclip.profile": "biomedclip-tiny"})
        info = {"mlflow_run_id": run_id, "model_dir": str(model_dir),
                "model_sha256": json.loads((project / "data" / "train" / "run.json").read_text())["model_sha256"]}
        (workspace / "run.json").write_text(json.dumps(info))
        done = register(RegisterParams(model_name="carried", decision_log=workspace / "decisions.jsonl"), embedded,
                        train_info=info, lineage={"biomedclip.lineage.key": "k1", "biomedclip.data.version": "v1"})
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["register"]["model_name"] = "carried"
    params["train"]["outputs"]["run_info"] = str(workspace / "run.json")
    params["tracking"]["uri"] = embedded.uri
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))

    before = run(workspace, env, "biomedclip", "lineage", "@challenger", check=False)
    assert before.returncode == 1 and "has no registered model 'carried'" in before.stderr
    assert "biomedclip carry-over" in before.stderr and "Permission denied" not in before.stderr
    carried = run(workspace, env, "biomedclip", "carry-over")
    assert "Carried over from" in carried.stdout
    version = mlflow_client.get_model_version_by_alias("carried", "challenger")
    assert version.tags["biomedclip.lineage.key"] == "k1" and int(version.version) == done["version"]
    copy = mlflow_client.get_run(version.run_id)
    assert copy.data.tags["biomedclip.carried_from.run_id"] == run_id and copy.info.run_id != run_id
    shown = json.loads(run(workspace, env, "biomedclip", "lineage", "@challenger", "--json").stdout)
    assert shown["run_id"] == copy.info.run_id and shown["version"] == done["version"]
    again = run(workspace, env, "biomedclip", "carry-over")
    assert "0 copied now" in again.stdout
