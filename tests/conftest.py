"""Shared fixtures: the test tiers, small demo corpora and one trained model per session, real
services on loopback (S3, a Prefect server, the production topology), the shared fixtures folder.

Every test belongs to exactly one tier, a pytest marker (`pytest -m unit`):
- unit: in-process only, no subprocess, no server (a unit test that starts a process fails);
- integration: real services or processes (moto's S3, a Prefect server, torchrun, a CLI child);
- e2e: a copy of the project in a temp dir and a real `dvc repro`.
"""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from biomedclip.config import override
from biomedclip.demo.corpus import CorpusReport, generate_corpus
from biomedclip.demo.params import DemoParams, NoiseRates, SideRange

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_FIXTURES = SHARED / "fixtures"
TIERS = ("unit", "integration", "e2e")

# Torch on one thread, here and in every process a test starts: on 2 cores shared with other jobs,
# two OpenMP threads spin-wait on a busy core (~10x slower than one thread measured here).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# `platform.processor()` runs `uname -p` once per process and caches it; h5py's import asks. Asked
# here first, it starts no process inside a unit test.
platform.processor()


# `make test` runs two pytest-xdist workers (`-n 2`), one a core. A worker takes a whole group, in
# order: a module (its fixtures and stateful sequences stay whole), or the modules that share an
# expensive session fixture (built once, in one worker). xdist hands the next group to the first
# worker with two tests or fewer left. The four long groups go first (worker time measured in the
# whole suite: pipeline ~22 min, topology ~16, tiny-world ~14, retrain ~11), in the order that
# pairs them (topology then tiny-world on one worker, retrain then pipeline on the other); the
# other modules, ~7 minutes together, fill the gaps. A module joins a group only for its fixture:
# test_train, whose tests train models of their own, is not in tiny-world, so `make test-fast` does
# not run it behind the session model's training (test_session_model checks that model). (xdist's
# own `--dist loadgroup` cannot be used: pytest 9 ignores the node ids it rewrites.)
SHARED_GROUPS = {"topology": ("test_infra_faults", "test_infra_topology"),
                 "pipeline": ("test_pipeline", "test_readme"),
                 "tiny-world": ("test_dataset_card", "test_embed", "test_evaluate", "test_probe", "test_published",
                                "test_registry", "test_search", "test_session_model", "test_train_ddp",
                                "test_vqa_stage")}
LONGEST_FIRST = ("topology", "test_retrain", "pipeline", "tiny-world")


def group_of(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).stem
    return next((group for group, modules in SHARED_GROUPS.items() if module in modules), module)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any):
    """The groups above as xdist's work units, in collection order (longest first)."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return GroupScheduling(config, log)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: an untiered test is an error, not skipped
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = [f"{item.nodeid} ({', '.join(m.name for m in item.iter_markers() if m.name in TIERS) or 'none'})"
             for item in items if len({m.name for m in item.iter_markers() if m.name in TIERS}) != 1]
    if wrong:
        raise pytest.UsageError("every test needs exactly one tier marker (unit, integration or e2e):\n  "
                                + "\n  ".join(wrong))
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))  # stable: in-group order stays


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a process belongs in the integration tier: it fails saying so."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self, args, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a unit test started a process ({args!r}): mark it integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session", autouse=True)
def _torch_on_one_thread() -> None:
    import torch

    torch.set_num_threads(1)

# Flows run from the project root read pyproject's [tool.prefect] start-up limit for the temporary
# server; tests also run them from temp dirs, where Prefect's 20 s default is too short for a
# first start (every migration) on two busy cores. The project's value, given by environment.
os.environ.setdefault(
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
    str(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["prefect"]["server"]["ephemeral"]
        ["startup_timeout_seconds"]))

# Every noise kind at a rate high enough to measure on a ~150-article corpus.
NOISY = NoiseRates(**{name: 0.12 for name in NoiseRates.model_fields}).model_copy(
    update={name: 0.06 for name in (*NoiseRates.CONDITIONS, *NoiseRates.ENCODINGS)}
)


def small_params(out: Path, *, articles: int = 40, **changes) -> DemoParams:
    """A quick corpus: few articles, small images."""
    base = DemoParams(out=out, articles=articles, image_side=SideRange(min=96, max=200))
    return override(base, **changes) if changes else base


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"real third-party fixtures not found at {SHARED_FIXTURES} "
                    "(they live beside the project, in ../shared/fixtures)")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def noisy_corpus(tmp_path_factory) -> tuple[DemoParams, CorpusReport]:
    """160 articles with every noise kind at 6-12%, also written in the legacy layout."""
    root = tmp_path_factory.mktemp("noisy")
    params = small_params(root / "raw", articles=160, legacy_out=root / "legacy")
    params = params.model_copy(update={"noise": NOISY})
    return params, generate_corpus(params, workers=2)


# --- one trained model for the session ---------------------------------------------------------


@dataclass(frozen=True)
class TinyWorld:
    """The noisy corpus's shards and vocabulary, the demo benchmark, and the session's one trained
    model: the tiny profile, 150 steps of 32 (~20 epochs of the ~240 train pairs), tracked in an
    MLflow store of its own, with a model at its initial weights beside it."""

    root: Path
    shards: Any  # ShardParams: 64 samples a shard
    tokenizer: Path
    benchmark: Path  # the demo zero-shot benchmark, 10 images per class
    tracking: Any  # TrackingParams of the session's MLflow store (the training run is there)
    trained: dict[str, Any]  # the trainer's run info (+ "metrics"), model in trained["model_dir"]
    train_params: Any  # TrainParams it was trained with
    random_model: Path  # the trainer's initial weights in its output layout (one step at lr 1e-12)
    split_sizes: dict[str, int]


@pytest.fixture(scope="session")
def tiny_world(ingested_noisy, tmp_path_factory) -> TinyWorld:
    from biomedclip.demo.benchmark import generate_benchmark
    from biomedclip.demo.params import BenchmarkParams
    from biomedclip.shard.params import ShardOutputs, ShardParams
    from biomedclip.shard.writer import write_shards
    from biomedclip.tracking import TrackingParams
    from biomedclip.train.loop import Resume, train
    from biomedclip.train.params import TokenizerParams, TrainOutputs, TrainParams
    from biomedclip.train.tokenizer import prepare_tokenizer

    ingest, _, _ = ingested_noisy
    root = tmp_path_factory.mktemp("tiny-world")
    shards = ShardParams(samples_per_shard=64, outputs=ShardOutputs(
        shards=root / "shards", manifest=root / "shards" / "manifest.json", report=root / "shard.json"))
    report = write_shards(ingest, shards)
    assert report["test"]["samples"] >= 20, report  # retrieval is evaluated on the test split
    tokenizer = TokenizerParams(out=root / "tokenizer")
    prepare_tokenizer(tokenizer, ingest.outputs.pairs)
    benchmark = generate_benchmark(BenchmarkParams(out=root / "benchmarks", per_class=10)).path
    tracking = TrackingParams(uri=f"sqlite:///{root / 'mlflow.db'}", experiment="session", system_metrics=False)

    def params(out: Path, *, steps: int, lr: float, batch: int, warmup: int) -> TrainParams:
        return TrainParams(
            tokenizer=tokenizer, epochs=1, samples_per_epoch=steps * batch, global_batch=batch, lr=lr,
            warmup_steps=warmup, seed=0, workers=0, shuffle_buffer=256, checkpoint_every=100_000, log_every=1,
            outputs=TrainOutputs(dir=out, run_info=out / "run.json", loss_curve=out / "loss.csv",
                                 metrics=out / "train.json"))

    trained_params = params(root / "trained", steps=150, lr=5e-4, batch=32, warmup=10)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)  # MLflow's default artifact root (./mlruns) lands here
        trained = train(trained_params, shards, tracking, resume=Resume.NEVER)
    initial = train(params(root / "random", steps=1, lr=1e-12, batch=2, warmup=0), shards,
                    TrackingParams(enabled=False), resume=Resume.NEVER)
    return TinyWorld(root=root, shards=shards, tokenizer=tokenizer.out, benchmark=benchmark, tracking=tracking,
                     trained=trained, train_params=trained_params, random_model=Path(initial["model_dir"]),
                     split_sizes={split: report[split]["samples"] for split in ("train", "val", "test")})


def ingest_params(source: Path, out: Path, **changes):
    """Ingest params writing every output under `out`; no decontamination unless `changes` ask
    for it (tests/test_decontaminate.py: it needs a benchmark hash file)."""
    from biomedclip.ingest.params import DecontaminateParams, IngestOutputs, IngestParams

    outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet",
                            images=out / "images", panels=out / "panels.parquet",
                            panel_examples=out / "panel-examples", report=out / "ingest.json",
                            state=out / "state" / "state.sqlite")
    changes.setdefault("decontaminate", DecontaminateParams(enabled=False))
    return IngestParams(source=str(source), outputs=outputs, **changes)


@pytest.fixture(scope="session")
def ingested_noisy(noisy_corpus, tmp_path_factory):
    """The noisy demo corpus ingested with the default params."""
    from biomedclip.ingest.run import run_ingest

    corpus_params, truth = noisy_corpus
    params = ingest_params(corpus_params.out, tmp_path_factory.mktemp("ingest"))
    return params, run_ingest(params), truth


# --- a real S3 endpoint on loopback (moto's server) -------------------------------------------


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    """Dummy credentials, no user AWS config, no HTTP proxy: only loopback is ever reached."""
    home = tmp_path_factory.mktemp("aws-home")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                     "https_proxy", "all_proxy"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(home / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def moto_url(aws_env):
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    werkzeug.setLevel(level)


# --- a copy of this project in its own git repo (end-to-end tests) ------------------------------

BIN = Path(sys.executable).parent


def sh(cwd: Path, *args: str, timeout: int = 600, env: dict[str, str] | None = None) -> str:
    """Run a command as a user would (this environment's tools first on PATH); assert it worked."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    env.pop("PREFECT_HOME", None)  # the project's [tool.prefect] table decides
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


# The stages after the model at a small size (VQA stand-ins of 16 images, a few answer-model
# epochs, figures only embedded), for workspaces whose `dvc repro` tests something else: the
# services, retraining, a neighbour's lineage. test_pipeline's workspace runs them at the demo's.
SMALL_TAIL = {"demo": {"benchmark": {"vqa": {"vqa_rad_images": 16, "slake_images": 16}}},
              "vqa": {"epochs": 3, "patience": 2}, "embed": {"panels": False}}


def merged(base: dict, changes: dict) -> dict:
    """`changes` merged into `base`, nested sections key by key."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def clone_project(root: Path, **sections: dict) -> Path:
    """The working tree as a fresh clone would have it (tracked + new files) in `root`, its own
    git repo, with `sections` merged into params.yaml, nested keys one by one (a handful of
    training steps by default: the pipeline's wiring is under test, not the model)."""
    import yaml

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(epochs=1, samples_per_epoch=256, global_batch=32, workers=0)
    params = merged(params, sections)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    identity = ("-c", "user.email=ci@example.org", "-c", "user.name=ci")
    sh(root, "git", "init", "-q")
    sh(root, "git", *identity, "commit", "-qm", "clone", "--allow-empty")
    sh(root, "git", "add", "-A")
    sh(root, "git", *identity, "commit", "-qm", "tree")
    return root


# --- S3 failing on the wire: a proxy in front of a real S3 endpoint ------------------------------
# moto never throttles or fails: this proxy forwards every request verbatim to it and answers the
# object GETs a `fault` picks with S3's own XML errors. That is the wire protocol boto3 sees from
# AWS; only the decision to fail is the test's, so it is repeatable.

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}
Fault = Callable[[int, str], "tuple[int, bytes] | None"]  # (object GET number, key) → answer


def s3_error(code: str, message: str) -> bytes:
    """S3's XML error body, as AWS sends it (without the key: AWS names it only for NoSuchKey)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
            f"</Message><RequestId>FAULT0001</RequestId><HostId>proxy</HostId></Error>").encode()


SLOWDOWN = s3_error("SlowDown", "Please reduce your request rate.")


@dataclass(frozen=True)
class Seen:
    method: str
    key: str  # the object key in the bucket, "" for bucket-level requests (listings)
    status: int
    signed: bool  # carried an Authorization header or a presigned X-Amz-Signature


class FaultProxy:
    """Forwards every request verbatim to `upstream` except the object GETs `fault` answers
    itself (it is called with the 1-based number of the object GET and its key); records what
    it served."""

    def __init__(self, upstream: str, fault: Fault) -> None:
        target = urlsplit(upstream)
        self.host, self.port, self.fault = target.hostname, target.port, fault
        self.lock = threading.Lock()
        self.gets = 0
        self.seen: list[Seen] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore's pool expects
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        key = unquote(urlsplit(h.path).path.strip("/").partition("/")[2])
        answer = None
        if h.command == "GET" and key:
            with self.lock:
                self.gets += 1
                number = self.gets
            answer = self.fault(number, key)
        if answer is not None:
            status, payload = answer
            headers = [("Content-Type", "application/xml")]
        else:
            status, headers, payload = self.forward(h, body)
        with self.lock:
            self.seen.append(Seen(h.command, key, status,
                                  "Authorization" in h.headers or "X-Amz-Signature" in h.path))
        h.send_response_only(status)
        for name, value in headers:
            h.send_header(name, value)
        if h.command != "HEAD":
            h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def forward(self, h: http.server.BaseHTTPRequestHandler,
                body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body,
                         headers={k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP})
            response = conn.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in HOP_BY_HOP | {"content-length"}]
            if h.command == "HEAD":
                headers.append(("Content-Length", response.getheader("Content-Length", "0")))
            return response.status, headers, payload
        finally:
            conn.close()

    def served(self, status: int) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.status == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)



# --- a real Prefect server on loopback --------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_served(url: str, process: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the process's output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        output = process.stdout if process.stdout is not None else process.stderr
        assert process.poll() is None, output.read().decode()[-3000:] if output else f"{what} exited"
        assert time.monotonic() < deadline, f"{what} did not come up in {timeout:.0f} s"
        time.sleep(0.5)


def ask_model_server(model_uri: str, tracking_uri: str, cwd: Path, records: list[dict[str, Any]],
                     env: dict[str, str] | None = None) -> Any:
    """Start `mlflow models serve` on a registered model, POST `records` to /invocations once it
    answers /ping (within 120 s), stop it; returns the JSON answer."""
    port = free_port()
    env = {**(env or os.environ), "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_served(f"http://127.0.0.1:{port}/ping", server, "the model server")
        body = json.dumps({"dataframe_records": records}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """`prefect server start` (SQLite, its own PREFECT_HOME) on a loopback port, one for the whole
    session (a flow process given its URL starts no temporary server of its own: 7-20 s saved
    each); its API URL."""
    from biomedclip.pipeline.server import prefect_server

    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


def prefect_request(api_url: str, method: str, path: str, **body: Any) -> Any:
    """One Prefect REST call; a 503 (the SQLite-backed server busy on a loaded machine) is
    retried as Prefect's own client does."""
    import time

    import httpx

    for attempt in range(6):
        response = httpx.request(method, f"{api_url}{path}", json=None if method == "GET" else body, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(2 ** attempt)
    response.raise_for_status()
    return response.json()


def flow_runs_on(api_url: str) -> dict[str, dict[str, Any]]:
    """Every flow run the server knows, by id, with its flow's name as `flow`."""
    flows = {f["id"]: f["name"] for f in prefect_request(api_url, "POST", "/flows/filter", limit=200)}
    runs: dict[str, dict[str, Any]] = {}
    while True:
        page = prefect_request(api_url, "POST", "/flow_runs/filter", limit=200, offset=len(runs),
                               sort="EXPECTED_START_TIME_ASC")
        runs.update({r["id"]: {**r, "flow": flows.get(r["flow_id"], "")} for r in page})
        if len(page) < 200:
            return runs


# --- a project clone that ran the whole pipeline ------------------------------------------------


class Workspace:
    """A project clone whose commands report to a shared Prefect server; each command's new flow
    runs (by flow name) are kept, in the order the commands ran."""

    def __init__(self, project: Path, api: str) -> None:
        self.project, self.api = project, api
        self.runs: list[dict[str, str]] = []  # per command: {flow name: flow run id}

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api}

    def __call__(self, *args: str, timeout: int = 900) -> str:
        before = set(flow_runs_on(self.api))
        output = sh(self.project, *args, env=self.env(), timeout=timeout)
        new = {run_id: run for run_id, run in flow_runs_on(self.api).items() if run_id not in before}
        by_flow = {run["flow"]: run_id for run_id, run in new.items()}
        assert len(by_flow) == len(new), f"a flow ran twice in one command: {new}"
        self.runs.append(by_flow)
        return output

    def run(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        env.pop("PREFECT_HOME", None)
        return subprocess.run(args, cwd=self.project, env=env, capture_output=True, text=True, timeout=timeout)

    def params(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((self.project / "params.yaml").read_text())

    def set_params(self, params: dict[str, Any]) -> None:
        import yaml

        (self.project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def registry(self) -> Any:
        import mlflow

        uri = f"sqlite:///{self.project / 'mlflow.db'}"
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def lineage(self, version: int) -> dict[str, Any]:
        """`biomedclip lineage --json`, read in this process (the CLI is run once, below)."""
        from biomedclip.register.lineage import lineage
        from biomedclip.register.params import RegisterParams
        from biomedclip.tracking import TrackingParams

        return lineage(f"models:/biomedclip/{version}",
                       RegisterParams(decision_log=self.project / "registry" / "decisions.jsonl"),
                       TrackingParams(uri=f"sqlite:///{self.project / 'mlflow.db'}"))


@pytest.fixture(scope="session")
def pipeline_workspace(tmp_path_factory, prefect_api) -> Workspace:
    """The project as a fresh clone has it (a handful of training steps and answer-model epochs:
    the wiring is under test), for test_pipeline, which runs `dvc repro` in it, then test_readme,
    which runs the README's commands on what it leaves (one xdist group, in that order)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        # The answer models train 10 epochs, not the default's 30: test_pipeline checks only that they
        # beat the question-only baseline (measured at 8 epochs, on a model of 8 training steps like
        # this one's: +0.15 and +0.08).
        yield Workspace(clone_project(tmp_path_factory.mktemp("clone") / "project",
                                      vqa={"epochs": 10, "patience": 4}), prefect_api)


# --- the production topology on loopback: infra/local/launch.py --------------------------------

LAUNCH = REPO / "infra" / "local" / "launch.py"


class Topology:
    """A running `infra/local/launch.py` topology: its state dir, ports and the pipeline's env."""

    def __init__(self, state: Path, ports: dict[str, int]) -> None:
        self.state, self.ports = state, ports

    def launch(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(LAUNCH), *args, "--state", str(self.state)],
                              capture_output=True, text=True, timeout=timeout, env=self.clean_env())

    @staticmethod
    def clean_env() -> dict[str, str]:
        """This process's environment without any MLflow / Prefect / AWS setting of its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "AWS_"))}
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        return env

    def pipeline_env(self) -> dict[str, str]:
        """What `. STATE/pipeline.env` gives a shell: endpoints and the pipeline's credentials."""
        values = {}
        for line in (self.state / "pipeline.env").read_text().splitlines():
            key, value = line.removeprefix("export ").split("=", 1)
            values[key] = value
        return values

    def env(self) -> dict[str, str]:
        absent = str(self.state / "no-such-aws-config")  # no user AWS profile may interfere
        return {**self.clean_env(), **self.pipeline_env(), "AWS_CONFIG_FILE": absent,
                "AWS_SHARED_CREDENTIALS_FILE": absent}

    def secrets(self) -> dict[str, str]:
        """Every generated credential (STATE/secrets.env): none may leak anywhere."""
        pairs = (line.split("=", 1) for line in (self.state / "secrets.env").read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
        return {key: value for key, value in pairs if key != "MLFLOW_TRACKING_USERNAME"}


@pytest.fixture(scope="session")
def topology():
    """PostgreSQL (OS binaries), moto S3, `mlflow server` (basic auth) and `prefect server` on
    loopback, started by the project's own launcher once per session and stopped by it at the end
    (a test that stops a service brings it back). The state dir is outside pytest's 0700 temp
    tree: run as root, PostgreSQL runs as the OS user `postgres`."""
    import tempfile

    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL's initdb is not installed (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="biomedclip-topology-"))
    root.chmod(0o755)
    ports = {name: free_port() for name in ("postgres", "s3", "mlflow", "prefect")}
    running = Topology(root / "state", ports)
    started = running.launch("up", *(f"--{name}-port={port}" for name, port in ports.items()), timeout=600)
    try:
        assert started.returncode == 0, f"launch.py up failed:\n{started.stderr}"
        yield running
    finally:
        stopped = running.launch("down")
        shutil.rmtree(root, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr
