"""Which flow run made a stage's outputs (`biomedclip.provenance`), and what a registered version's
identity is made of (`lineage_facts.lineage_key`): records on real files, no Prefect."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from biomedclip.params import Params
from biomedclip.pipeline.params import PipelineParams
from biomedclip.provenance import (
    FlowRun,
    flow_run_ids,
    made_outside_prefect,
    read_record,
    stage_outputs,
    write_record,
)
from biomedclip.register.lineage_facts import PREFIX, lineage_key
from biomedclip.train.params import TrainOutputs

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[1]


def run(flow: str, n: int) -> FlowRun:
    return FlowRun(id=f"00000000-0000-0000-0000-{n:012d}", name=f"run-{n}", flow=flow, api="http://127.0.0.1:4200/api")


@pytest.fixture
def params(tmp_path) -> Params:
    return Params(pipeline=PipelineParams(flow_runs=tmp_path / "flow-runs"))


def elsewhere(params: Params, tmp_path: Path) -> Params:
    """A copy of the params whose training writes to other outputs (an experiment at a terminal)."""
    out = tmp_path / "experiment"
    outputs = TrainOutputs(dir=out, run_info=out / "run.json", loss_curve=out / "loss.csv", metrics=out / "train.json")
    return params.model_copy(update={"train": params.train.model_copy(update={"outputs": outputs})})


def test_the_record_names_the_flow_run_and_the_outputs_and_is_replaced_atomically(params):
    write_record(params, "ingest", run("ingest", 1), command="python flows/ingest.py")
    first = read_record(params, "ingest")
    assert first["flow_run"]["id"].endswith("1") and first["command"] == "python flows/ingest.py"
    assert first["outputs"] == ["data/ingest/pairs.parquet", "data/ingest/rejects.parquet", "data/ingest/images",
                                "data/ingest/panels.parquet", "reports/panels", "metrics/ingest.json"]
    write_record(params, "ingest", run("ingest", 2), command="python flows/ingest.py")
    assert read_record(params, "ingest")["flow_run"]["id"].endswith("2")
    assert sorted(p.name for p in params.pipeline.flow_runs.iterdir()) == ["ingest.json"]  # no temp file left


def test_lineage_names_only_the_stages_a_flow_run_made(params, tmp_path):
    """A stage rerun at a terminal into the same outputs: its record now names no flow run, so an
    older flow run is never credited with outputs it did not make. One run into other outputs
    leaves the record alone. A stage never recorded is left out."""
    for n, flow in enumerate(("ingest", "validate", "shard", "train", "evaluate")):
        write_record(params, flow, run(flow, n), command=f"python flows/{flow}.py")
    made_outside_prefect(elsewhere(params, tmp_path), "train", command="biomedclip --params copy.yaml train")
    assert flow_run_ids(params)["train"] == run("train", 3).id
    made_outside_prefect(params, "train", command="biomedclip train")
    made_outside_prefect(params, "tokenizer", command="biomedclip train")  # never recorded: none made
    assert flow_run_ids(params) == {"ingest": run("ingest", 0).id, "validate": run("validate", 1).id,
                                    "shard": run("shard", 2).id, "evaluate": run("evaluate", 4).id}
    assert json.loads((params.pipeline.flow_runs / "train.json").read_text())["command"] == "biomedclip train"
    assert not (params.pipeline.flow_runs / "tokenizer.json").exists()


def test_a_record_of_other_outputs_is_not_this_models_run(params, tmp_path, caplog):
    """Registering with params whose training outputs are elsewhere: the train record in the shared
    folder describes the project's outputs, not these, and is not named."""
    write_record(params, "train", run("train", 7), command="python flows/train.py")
    assert flow_run_ids(elsewhere(params, tmp_path)) == {}
    assert "describes other outputs" in caplog.text


def test_an_unreadable_record_is_an_unknown_run_not_a_crash(params, caplog):
    params.pipeline.flow_runs.mkdir()
    (params.pipeline.flow_runs / "shard.json").write_text("{ cut off")
    assert read_record(params, "shard") is None and flow_run_ids(params) == {}
    assert "shard.json is unreadable" in caplog.text


def test_every_stage_of_the_pipeline_has_its_outputs_named(params):
    """Read from dvc.yaml, so a new stage that writes a record cannot be forgotten here."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(out)) if isinstance(out, dict) else out for stage in stages.values() for out in stage["outs"]]
    flows = {match.group(1) for out in outs if (match := re.fullmatch(r"\$\{pipeline\.flow_runs\}/(.+)\.json", out))}
    assert {"demo-data", "ingest", "card", "register"} <= flows
    for flow in flows:
        assert stage_outputs(params, flow)
    with pytest.raises(ValueError, match="retrain"):
        stage_outputs(params, "retrain")


def tags(**facts: str) -> dict[str, str]:
    base = {"model.sha256": "ab" * 32, "mlflow.run_id": "r1", "data.version": "d1.dir", "manifest.md5": "m1",
            "validation.sha256": "v1", "shards.manifest_sha256": "s1",
            "eval.retrieval/image_to_text/recall_at_10": "0.5",
            "prefect.flow_run.ingest": "i1", "prefect.flow_run.evaluate": "e1",
            "git.commit": "c1", "git.dirty": "false", "params.sha256": "p1", "dvc_lock.sha256": "l1",
            "prefect.flow_run.register": "g1"}
    return {PREFIX + k: v for k, v in {**base, **facts}.items()}


def test_a_version_is_its_model_and_inputs_not_where_or_when_it_was_registered():
    key = lineage_key(tags())
    # Registered again from another commit, params file, lock or register run: the same version.
    assert lineage_key(tags(**{"git.commit": "c2", "git.dirty": "true", "params.sha256": "p2",
                              "dvc_lock.sha256": "l2", "prefect.flow_run.register": "g2"})) == key
    # A new evaluation run (or new numbers), other data, or other weights: another version.
    for change in ({"prefect.flow_run.evaluate": "e2"}, {"eval.retrieval/image_to_text/recall_at_10": "0.6"},
                   {"data.version": "d2.dir"}, {"model.sha256": "cd" * 32}, {"prefect.flow_run.shard": "s9"}):
        assert lineage_key(tags(**change)) != key, change


def test_the_logged_lock_leaves_out_the_registering_stage(tmp_path):
    """While `register` runs, dvc.lock still holds the previous registration's outputs: logged as
    this model's lineage, they failed every later `lineage --verify` (found by test_pipeline)."""
    import yaml

    from biomedclip.register.stage import inputs_lock

    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "train": {"cmd": "python flows/train.py", "outs": [{"path": "data/train", "md5": "a" * 32}]},
        "register": {"cmd": "python flows/register.py",
                     "outs": [{"path": "metrics/register.json", "md5": "b" * 32}]}}}))
    logged = yaml.safe_load(inputs_lock(lock, tmp_path / "out.lock").read_text())
    assert list(logged["stages"]) == ["train"] and logged["schema"] == "2.0"
    assert "register" in yaml.safe_load(lock.read_text())["stages"], "the workspace's lock is not touched"
    assert inputs_lock(tmp_path / "missing.lock", tmp_path / "x") is None


def test_a_param_dvc_lock_wrote_as_yaml_1_2_compares_equal_to_params_yaml():
    """DVC writes 1.0e-06 from params.yaml as `1e-06` in dvc.lock: YAML 1.2's float, PyYAML's
    string. `lineage --verify` must not call that a changed param; a real change still is one."""
    from biomedclip.register.lineage import same_param

    recorded = yaml.safe_load("eps: 1e-06\nlr: 0.0005\nname: biomedclip-tiny\nflag: true\n")
    assert recorded["eps"] == "1e-06"  # what PyYAML makes of DVC's spelling
    assert same_param(1.0e-06, recorded["eps"]) and same_param(0.0005, recorded["lr"])
    assert same_param("biomedclip-tiny", recorded["name"]) and same_param(True, recorded["flag"])
    assert not same_param(2.0e-06, recorded["eps"]) and not same_param("other", recorded["name"])
    assert not same_param(1, recorded["flag"]) and not same_param(None, "1e-06")
