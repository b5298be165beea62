"""Shared fixtures: small demo corpora generated once per session, the shared fixtures folder."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from biomedclip.config import DemoParams, NoiseRates, SideRange, override
from biomedclip.demo import generate_corpus
from biomedclip.demo.corpus import CorpusReport

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"

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


def ingest_params(source: Path, out: Path, **changes):
    """Ingest params writing every output under `out`."""
    from biomedclip.config import IngestOutputs, IngestParams

    outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet",
                            images=out / "images", report=out / "ingest.json",
                            state=out / "state" / "state.sqlite")
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


def clone_project(root: Path, **sections: dict) -> Path:
    """The working tree as a fresh clone would have it (tracked + new files) in `root`, its own
    git repo, with `sections` merged into params.yaml (a handful of training steps by default:
    the pipeline's wiring is under test, not the model)."""
    import yaml

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(epochs=1, samples_per_epoch=256, global_batch=32, workers=0)
    for section, changes in sections.items():
        params[section].update(changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    identity = ("-c", "user.email=ci@example.org", "-c", "user.name=ci")
    sh(root, "git", "init", "-q")
    sh(root, "git", *identity, "commit", "-qm", "clone", "--allow-empty")
    sh(root, "git", "add", "-A")
    sh(root, "git", *identity, "commit", "-qm", "tree")
    return root


# --- a real Prefect server on loopback --------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """`prefect server start` (SQLite, its own PREFECT_HOME) on a loopback port; its API URL."""
    import signal
    import time

    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("PREFECT_API_URL", None)
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"prefect server did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
