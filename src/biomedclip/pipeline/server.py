"""One Prefect server for a whole `dvc repro`: `biomedclip repro` (what `make run` calls).

Without a server named in PREFECT_API_URL, every stage's flow starts a temporary server of its own
(7-20 s each on 2 cores, ten stages). `prefect_server` starts `prefect server start` once, on a
free loopback port, with the project's PREFECT_HOME, so its history is the same database the
temporary servers write: `prefect server start` afterwards shows every run of the pipeline. The
stages reach it through PREFECT_API_URL in their environment; it is stopped when they are done.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

STARTUP_SECONDS = 180  # 7 s on 2 idle cores; far more on a loaded machine


class ServerFailed(RuntimeError):
    """`prefect server start` exited or did not answer in time (the message holds its log's end)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_executable() -> str:
    """The `prefect` of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.is_file() else (shutil.which("prefect") or "prefect")


@contextmanager
def prefect_server(home: Path, *, log: Path | None = None, ui: bool = False) -> Iterator[str]:
    """Start a Prefect server with `home` as PREFECT_HOME; yield its API URL; stop it after."""
    home.mkdir(parents=True, exist_ok=True)
    log = log or home / "server.log"
    port = free_port()
    loopback = "127.0.0.1,localhost"
    env = {**os.environ, "PREFECT_HOME": str(home.absolute()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": str(ui).lower(), "NO_PROXY": loopback, "no_proxy": loopback}
    env.pop("PREFECT_API_URL", None)
    with log.open("wb") as out:
        server = subprocess.Popen([prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(server, url, log)
        yield url
    finally:
        _stop(server)


def _wait_healthy(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise ServerFailed(f"prefect server start did not answer at {url} (log {log}):\n{tail}")
        time.sleep(0.25)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def repro(args: list[str], *, home: Path = Path(".prefect")) -> int:
    """`dvc repro ARGS` with one Prefect server for every stage it runs; none when nothing is to
    run (`dvc status` first: an up-to-date pipeline returns in seconds) or when PREFECT_API_URL
    already names a server. Returns dvc's exit status."""
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(["dvc", "repro", *args])
    if not args and subprocess.call(["dvc", "status", "--quiet"]) == 0:
        print("dvc repro: every stage is up to date")
        return 0
    with prefect_server(home) as url:
        print(f"Prefect server for this run: {url.removesuffix('/api')} (history kept in {home}; "
              "`prefect server start` shows it afterwards)", flush=True)
        return subprocess.call(["dvc", "repro", *args], env={**os.environ, "PREFECT_API_URL": url})
