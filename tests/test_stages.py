"""The stage table, and the runner every flow and command runs a stage through.

Unit tier: the table's names are usable everywhere they appear (DVC, Prefect, the CLI, files), the
exit codes, the stage lock (a second run on the same outputs stops naming the holder; other outputs
do not wait), and which runs write a flow-run record. Integration tier: two real `biomedclip ingest`
processes started in one folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from biomedclip.cli import app
from biomedclip.config import ConfigError
from biomedclip.locks import Busy, held
from biomedclip.params import Params
from biomedclip.pipeline.params import PipelineParams
from biomedclip.pipeline.runner import lock_path, run_here, run_stage
from biomedclip.pipeline.stages import (
    FAILED,
    STAGES,
    USAGE,
    Stage,
    exit_code,
    expected_by,
    model_input_stages,
)
from biomedclip.provenance import FlowRun, read_record, write_record
from biomedclip.stage import StageContext

from .conftest import BIN, ingest_params


@pytest.mark.unit
def test_each_stage_has_one_name_usable_as_dvc_stage_prefect_flow_command_and_file():
    names = [s.name for s in STAGES]
    assert len(set(names)) == len(names)
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    commands |= {g.name for g in app.registered_groups}  # `biomedclip vqa` runs the stage, `vqa ask` asks
    for stage in STAGES:
        assert re.fullmatch(r"[a-z][a-z-]*", stage.name), stage.name  # a DVC stage name, a Prefect key
        assert stage.name in commands, f"no `biomedclip {stage.name}` command"
        assert callable(stage.function()), stage.entry
        assert all(path.is_absolute() is False for path in stage.outputs(Params())), stage.name
    assert model_input_stages() == ("benchmark-hashes", "ingest", "validate", "shard", "tokenizer", "train",
                                    "evaluate")


@pytest.mark.unit
def test_expected_errors_are_one_line_with_an_exit_code_and_are_never_retried():
    from biomedclip.shard.writer import ShardInputError
    from biomedclip.tracking import TrackingUnavailable
    from biomedclip.validate.gate import ValidationFailed

    shard = next(s for s in STAGES if s.name == "shard")
    assert exit_code(ConfigError("params.yaml: bad")) == USAGE
    assert exit_code(ValidationFailed("failed", {})) == FAILED
    assert exit_code(Busy("held")) == FAILED and exit_code(FileNotFoundError("x")) == FAILED
    assert exit_code(KeyError("a bug")) is None  # its traceback shows
    assert expected_by(shard, ShardInputError("no manifest"))  # the flow does not retry bad input
    assert not expected_by(shard, OSError("disk went away"))  # ... but retries what may pass
    assert not expected_by(shard, TrackingUnavailable("server restarting"))


def _params(tmp_path, **changes) -> Params:
    return Params(pipeline=PipelineParams(flow_runs=tmp_path / "flow-runs", locks=tmp_path / "locks", **changes))


@pytest.mark.unit
def test_a_second_run_of_a_stage_on_the_same_outputs_stops_naming_the_holder(tmp_path, monkeypatch):
    """A run that finds its stage's lock held stops at once with the holder named; a run of the
    same stage writing other outputs takes another lock and does not wait."""
    params = _params(tmp_path)
    ran = []
    stage = Stage("probe", "json:dumps", lambda p: (p.pipeline.flow_runs / "out.json",), "a stage for the test")
    monkeypatch.setattr(Stage, "function", lambda self: lambda params, context: ran.append(params) or "report")
    context = StageContext(params_path=tmp_path / "params.yaml")
    with held(lock_path(stage, params), what="the probe stage's outputs", wait=False, timeout_s=0):
        with pytest.raises(Busy, match=rf"pid {os.getpid()} on .* since .*\(.*\)"):
            run_stage(stage, params, context)
        elsewhere = _params(tmp_path / "other")
        assert lock_path(stage, elsewhere) != lock_path(stage, params)
        assert run_stage(stage, elsewhere, context) == "report"
    assert run_stage(stage, params, context) == "report" and len(ran) == 2


@pytest.mark.unit
def test_a_terminal_run_rewrites_the_record_of_the_outputs_it_wrote_and_no_other(tmp_path, monkeypatch):
    params = _params(tmp_path)
    flow = FlowRun(id="run-1", name="brave-fox", flow="card", api="")
    write_record(params, "card", flow, command="python flows/card.py")
    monkeypatch.setattr(Stage, "function", lambda self: lambda params, context: "report")
    run_here("card", params, tmp_path / "params.yaml", command="biomedclip card")
    record = read_record(params, "card")
    assert record["flow_run"] is None and record["command"] == "biomedclip card"
    write_record(params, "card", flow, command="python flows/card.py")
    elsewhere = params.model_copy(update={"card": params.card.model_copy(update={"out": tmp_path / "x"})})
    run_here("card", elsewhere, tmp_path / "params.yaml", command="biomedclip card")
    assert read_record(params, "card")["flow_run"]["id"] == "run-1"  # those outputs were not rewritten


@pytest.mark.unit
def test_demo_data_with_out_elsewhere_leaves_the_workspace_benchmarks_and_their_record(tmp_path, monkeypatch):
    """`biomedclip demo-data --out /tmp/x` in a project folder writes only /tmp/x: the benchmarks
    (the demo-data stage's outputs) and their flow-run record stay as they are, so `dvc status`
    stays clean and `lineage --verify` keeps passing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"demo": {"image_side": {"min": 96, "max": 160}, "benchmark": {"per_class": 1}}}))
    params = Params.model_validate(yaml.safe_load((tmp_path / "params.yaml").read_text()), strict=False)
    write_record(params, "demo-data", FlowRun(id="run-1", name="n", flow="demo-data", api=""), command="flow")
    before = (tmp_path / "reports" / "flow-runs" / "demo-data.json").read_bytes()
    result = CliRunner().invoke(app, ["demo-data", "--articles", "3", "--out", str(tmp_path / "x"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "metadata").is_dir()
    assert not (tmp_path / "data" / "benchmarks").exists()
    assert (tmp_path / "reports" / "flow-runs" / "demo-data.json").read_bytes() == before


HOLDER_PROBE = """
import sys, time
from pathlib import Path
for _ in range(600):
    if list(Path(sys.argv[1]).glob("ingest-*.lock.holder")):
        print("held", flush=True)
        break
    time.sleep(0.05)
"""


@pytest.mark.integration
def test_two_ingests_started_in_one_folder_one_completes_the_other_stops_naming_it(tmp_path, noisy_corpus,
                                                                                ingested_noisy):
    """The second `biomedclip ingest` (another terminal) starts while the first runs: it stops
    at once with the holder's pid named, never writing beside it; the manifest is a single run's."""
    corpus, _ = noisy_corpus
    reference, _, _ = ingested_noisy
    params = ingest_params(corpus.out, tmp_path / "out", workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": params.model_dump(mode="json")}))
    command = [str(BIN / "biomedclip"), "ingest"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        probe = subprocess.run([sys.executable, "-c", HOLDER_PROBE, str(tmp_path / ".locks")], capture_output=True,
                               text=True, timeout=60)
        assert probe.stdout.strip() == "held", "the first ingest never took its lock"
        started = time.monotonic()
        second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"pid {first.pid} " in second.stderr and "ingest stage's outputs" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None or time.monotonic() - started < 30  # it did not wait for the first
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, out[-2000:] + err[-2000:]
    finally:
        if first.poll() is None:
            first.kill()
    pd.testing.assert_frame_equal(pd.read_parquet(params.outputs.pairs), pd.read_parquet(reference.outputs.pairs))
    assert json.loads(params.outputs.report.read_text())["pairs"] == json.loads(
        reference.outputs.report.read_text())["pairs"]
    assert not list((tmp_path / ".locks").glob("*.holder"))
