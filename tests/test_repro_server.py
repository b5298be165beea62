"""`biomedclip repro` (what `make run` calls): one Prefect server for every stage `dvc repro` runs,
stopped after, its history kept in the project; nothing to run, no server.

A real DVC repository in a temp dir with two stages that record the PREFECT_API_URL they were
given and ask that server for its health, and a real `prefect server start`."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import sh

pytestmark = pytest.mark.integration

PROBE = """import json, os, sys
import httpx
url = os.environ.get("PREFECT_API_URL", "")
healthy = bool(url) and httpx.get(url + "/health", timeout=5).status_code == 200
json.dump({"url": url, "healthy": healthy}, open(sys.argv[1], "w"))
"""


def test_one_server_serves_every_stage_and_nothing_to_do_starts_none(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    env = {"PREFECT_API_URL": ""}
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    (project / "probe.py").write_text(PROBE)
    (project / "dvc.yaml").write_text(
        "stages:\n"
        "  first:\n    cmd: python probe.py first.json\n    outs: [first.json]\n"
        "  second:\n    cmd: python probe.py second.json\n    deps: [first.json]\n    outs: [second.json]\n")
    output = sh(project, "biomedclip", "repro", env=env)
    first, second = (json.loads((project / f"{name}.json").read_text()) for name in ("first", "second"))
    assert first["healthy"] and second["healthy"] and first["url"] == second["url"]  # one server for both
    assert first["url"].removesuffix("/api") in output
    assert (project / ".prefect" / "prefect.db").is_file()  # the history stays in the project
    with pytest.raises(httpx.HTTPError):  # and the server is gone
        httpx.get(first["url"] + "/health", timeout=2)

    start = time.monotonic()
    again = sh(project, "biomedclip", "repro", env=env)
    assert "every stage is up to date" in again and "Prefect server" not in again
    assert time.monotonic() - start < 10  # nothing to do: no server started
