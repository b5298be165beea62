"""Infrastructure faults: a flaky or refusing S3, a PostgreSQL that is down.

What is real: moto's S3 server on 127.0.0.1 holding a demo corpus in PMC's layout; the Prefect
flow `flows/ingest.py` in its own process (reporting to the session's Prefect server);
boto3's retries; `infra/local/launch.py` starting and stopping PostgreSQL (OS binaries), moto,
`mlflow server` and `prefect server`; the `biomedclip` CLI in its own process.

What is simulated, and why: S3's failures. moto never throttles or fails, so a small HTTP proxy
on loopback (stdlib) forwards every request verbatim to moto and answers chosen object GETs
itself with S3's own XML errors (503 SlowDown for a window of requests, 500 InternalError forever
for one key). That is the real wire protocol boto3 sees from AWS, only the decision to fail is
ours, so it is repeatable. A PostgreSQL that is "down" is a real closed port (one nothing listens
on) or the topology's own server stopped by the launcher. No request leaves 127.0.0.1.

The test on the shared topology is last: it stops and restarts services, and leaves them healthy.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml

from biomedclip.config import S3Params
from biomedclip.demo.corpus import generate_corpus
from biomedclip.ingest.run import run_ingest
from biomedclip.storage import ObjectReadError

from .conftest import (
    BIN,
    LAUNCH,
    REPO,
    SLOWDOWN,
    Fault,
    FaultProxy,
    Topology,
    free_port,
    ingest_params,
    s3_error,
    small_params,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

BUCKET = "faults"
PREFIX = "pmc/2026-11"
SOURCE = f"s3://{BUCKET}/{PREFIX}"
@pytest.fixture
def make_proxy(moto_url):
    proxies: list[FaultProxy] = []

    def make(fault: Fault) -> FaultProxy:
        proxies.append(FaultProxy(moto_url, fault))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


# --- a corpus in a bucket, and what a clean run makes of it ----------------------------------


@pytest.fixture(scope="module")
def bucket(moto_url, tmp_path_factory) -> str:
    """30 demo articles (the default noise: some rejects), key for key under s3://faults/pmc/2026-11/."""
    folder = tmp_path_factory.mktemp("faults-corpus") / "raw"
    generate_corpus(small_params(folder, articles=30))
    client = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))

    def upload(path: Path) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{path.relative_to(folder).as_posix()}",
                          Body=path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, files))
    return SOURCE


def manifest(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """pairs.parquet and rejects.parquet, in a canonical row order."""
    pairs = pd.read_parquet(out / "pairs.parquet").sort_values("pair_id", ignore_index=True)
    rejects = pd.read_parquet(out / "rejects.parquet")
    rejects = rejects.sort_values(list(rejects.columns), ignore_index=True)
    return pairs, rejects


@pytest.fixture(scope="module")
def clean(bucket, moto_url, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest ingesting the bucket straight from moto (no faults) gives."""
    out = tmp_path_factory.mktemp("clean-ingest")
    report = run_ingest(ingest_params(bucket, out, s3=S3Params(endpoint_url=moto_url)))
    pairs, rejects = manifest(out)
    assert report["articles"]["listed"] == 30 and len(pairs) > 30 and len(rejects) > 0
    return pairs, rejects


# --- S3 fails for a while, then recovers ------------------------------------------------------

THROTTLED = range(10, 18)  # these object GETs (1-based) are answered 503 SlowDown


def test_s3_throttling_for_a_while_is_retried_and_gives_the_clean_runs_manifest(
        bucket, clean, make_proxy, prefect_api, tmp_path):
    """The Prefect flow reads the bucket through the proxy, which answers object GETs number
    10 to 17 with 503 SlowDown: every refused object is asked for again, and the manifest is the
    one a run without faults makes."""
    proxy = make_proxy(lambda number, key: (503, SLOWDOWN) if number in THROTTLED else None)
    out = tmp_path / "out"
    params = ingest_params(bucket, out, s3=S3Params(endpoint_url=proxy.url))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"ingest": params.model_dump(mode="json")}))
    env = {**os.environ, "PREFECT_API_URL": prefect_api}  # the session's Prefect server
    result = subprocess.run([sys.executable, str(REPO / "flows" / "ingest.py"), "--params", str(params_file)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    refused = proxy.served(503)
    assert len(refused) == 8, f"the proxy refused {len(refused)} requests, not the 8 of its window"
    assert all(s.method == "GET" and s.key for s in refused)
    for s in refused:  # each refused object was asked for again, and served
        later = proxy.seen[proxy.seen.index(s) + 1:]
        assert any(t.key == s.key and t.status == 200 for t in later), s.key
    pairs, rejects = manifest(out)
    expected_pairs, expected_rejects = clean
    assert pairs[["pair_id", "image_sha256"]].values.tolist() == \
        expected_pairs[["pair_id", "image_sha256"]].values.tolist()
    pd.testing.assert_frame_equal(pairs, expected_pairs)
    pd.testing.assert_frame_equal(rejects, expected_rejects)


# --- S3 refuses one object, persistently ------------------------------------------------------


def test_s3_refusing_one_object_forever_fails_the_run_naming_the_object(bucket, clean, make_proxy, tmp_path):
    """One media file that becomes a pair in the clean run is answered 500 InternalError on every
    request. What the product does: the object is not a reject (a refusal is not bad data), the
    run fails after botocore's retries with the S3 error, and publishes no manifest. It must not
    hang, and its error must name the object, or nobody can tell which of millions it was."""
    pairs, _ = clean
    uri = pairs.source_uri.iloc[len(pairs) // 2]  # s3://faults/pmc/2026-11/PMC…/….jpg
    key = uri.removeprefix(f"s3://{BUCKET}/")
    internal = s3_error("InternalError", "We encountered an internal error. Please try again.")
    proxy = make_proxy(lambda number, k: (500, internal) if k == key else None)
    params = ingest_params(bucket, tmp_path / "out", s3=S3Params(endpoint_url=proxy.url, max_attempts=2))
    start = time.monotonic()
    with pytest.raises(ObjectReadError) as failed:
        run_ingest(params)
    elapsed = time.monotonic() - start

    assert elapsed < 60, f"the run took {elapsed:.0f} s to give up on one object"
    refused = proxy.served(500)
    assert {s.key for s in refused} == {key}
    assert len(refused) == 2, f"{len(refused)} requests for the refused object, max_attempts=2"
    assert not params.outputs.pairs.exists(), "a failed run published a manifest"
    message = str(failed.value)
    assert "InternalError" in message, message
    assert uri in message or key in message, f"the error does not name the object {uri}: {message}"


# --- PostgreSQL unreachable at start ----------------------------------------------------------


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def no_traceback(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]


def launcher_error(result: subprocess.CompletedProcess) -> str:
    """The one `error:` line of a launcher that refused (exit 2), with no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_launcher_up_with_an_unreachable_postgresql_fails_in_one_line_and_starts_nothing(tmp_path):
    """`up --postgres-url` naming a port nothing listens on: exit 2, one `error:` line naming
    PostgreSQL's host:port and the reason, no traceback, and no service left running."""
    state = tmp_path / "state"
    pg_port = free_port()
    ports = {"s3": free_port(), "mlflow": free_port(), "prefect": free_port()}

    def launch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(LAUNCH), *args, "--state", str(state)], capture_output=True,
                              text=True, timeout=150, env=Topology.clean_env())

    try:
        result = launch("up", "--postgres-url", f"postgresql://postgres:x@127.0.0.1:{pg_port}/postgres",
                        "--timeout", "60", *(f"--{name}-port={port}" for name, port in ports.items()))
        error = launcher_error(result)
        assert error.startswith(f"error: PostgreSQL at 127.0.0.1:{pg_port} is unreachable ("), error
        assert "--postgres-url" in error  # what to check
        recorded = json.loads((state / "topology.json").read_text())
        assert recorded["pids"] == {}, recorded
        assert not [name for name, port in ports.items() if listening(port)]
    finally:
        stopped = launch("down")
    assert stopped.returncode == 0, stopped.stderr


def test_registry_command_with_its_postgresql_down_fails_fast_and_clearly(tmp_path):
    """`biomedclip lineage` with MLFLOW_TRACKING_URI on a PostgreSQL nobody listens on: a non-zero
    exit within a minute, a message that names the database's host:port (or says the tracking
    store is unreachable), no traceback."""
    port = free_port()
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    env = {**Topology.clean_env(), "MLFLOW_TRACKING_URI": f"postgresql://mlflow:x@127.0.0.1:{port}/mlflow"}
    start = time.monotonic()
    try:
        result = subprocess.run([str(BIN / "biomedclip"), "lineage", "models:/biomedclip/1"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") + (expired.stderr or b"").decode(errors="replace")
        pytest.fail(f"still running after 90 s with its tracking store down:\n{output[-3000:]}")
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.0f} s to report an unreachable tracking store"
    no_traceback(result)
    assert f"127.0.0.1:{port}" in output or re.search(r"tracking.*unreachable", output, re.I | re.S), output[-3000:]


# --- the shared topology: PostgreSQL stopped under MLflow (keep this test last) ---------------


@pytest.mark.timeout(600)  # includes starting the topology
def test_mlflow_refuses_to_start_without_postgresql_and_up_brings_everything_back(topology):
    """MLflow and PostgreSQL stopped: `up mlflow` exits 2 with one line naming PostgreSQL and how
    to start it (no traceback, MLflow not started); a plain `up` starts both again and every
    service is healthy, the databases answering through MLflow's and Prefect's APIs."""
    stopped = topology.launch("down", "mlflow", "postgres")
    assert stopped.returncode == 0, stopped.stderr
    assert not listening(topology.ports["postgres"])

    refused = topology.launch("up", "mlflow", "--timeout", "60", timeout=150)
    error = launcher_error(refused)
    assert error.startswith(f"error: PostgreSQL at 127.0.0.1:{topology.ports['postgres']} is unreachable ("), error
    assert "start it with:" in error and error.endswith("up postgres"), error
    assert not listening(topology.ports["mlflow"])

    back = topology.launch("up", timeout=450)
    assert back.returncode == 0, back.stderr
    status = topology.launch("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert [line.split()[1] for line in status.stdout.splitlines()] == ["healthy"] * 4, status.stdout
    assert_databases_answer(topology.pipeline_env())


def assert_databases_answer(env: dict[str, str]) -> None:
    """An authenticated query through MLflow (its PostgreSQL store) and through Prefect (its
    PostgreSQL database): /health alone does not touch the database."""
    import base64

    import httpx

    mlflow_auth = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    found = httpx.post(f"{env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/search",
                       json={"max_results": 5}, auth=mlflow_auth, timeout=30)
    assert found.status_code == 200, found.text
    assert any(e["name"] == "Default" for e in found.json()["experiments"])
    token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
    flows = httpx.post(f"{env['PREFECT_API_URL']}/flows/filter", json={"limit": 1},
                       headers={"Authorization": f"Basic {token}"}, timeout=30)
    assert flows.status_code == 200, flows.text
