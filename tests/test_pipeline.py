"""End to end: copies of this project in temp dirs, real git, real DVC, real Prefect runs.

These are the users' first steps on a fresh clone: the demo corpus regenerates exactly the
version `data.dvc` records, and `dvc repro` runs the stages through their Prefect flows, then
re-runs only what a change touches. And the lineage audit: two workspaces share one Prefect
server and run interleaved, then one re-runs its evaluation alone (DVC skips the rest); every
registered version names exactly the flow runs that made its own inputs, checked on the server.

The flows report to the session's Prefect server (PREFECT_API_URL), as a team's would.
"""

from __future__ import annotations

import json

import pytest
import yaml

from biomedclip.pipeline.stages import STAGES as PIPELINE

from .conftest import REPO, SMALL_TAIL, Workspace, clone_project, flow_runs_on, merged, prefect_request, sh

pytestmark = pytest.mark.e2e
STAGES = [stage.name for stage in PIPELINE]  # each stage's DVC stage, flow and record share its name


@pytest.fixture(scope="module")
def project(pipeline_workspace) -> Workspace:
    """The project as a fresh clone has it, shared with test_readme (which runs after this module,
    on what it leaves)."""
    return pipeline_workspace


@pytest.fixture(scope="module")
def neighbour(tmp_path_factory, prefect_api) -> Workspace:
    """A second workspace on the same Prefect server: another team member's clone, 80 articles."""
    root = clone_project(tmp_path_factory.mktemp("neighbour") / "project",
                         **merged(SMALL_TAIL, {"demo": {"articles": 80}}), validate={"split_tolerance": 0.1})
    workspace = Workspace(root, prefect_api)
    sh(root, "biomedclip", "demo-data", "--no-benchmark", env=workspace.env())
    return workspace


def test_fresh_clone_regenerates_exactly_the_data_version_in_data_dvc(project):
    assert not (project.project / "data" / "raw").exists()
    recorded = (project.project / "data.dvc").read_text()
    project("biomedclip", "demo-data", "--no-benchmark")
    # DVC hashes the regenerated tree into its cache; data.dvc must not change.
    project("dvc", "commit", "--force", "data.dvc")
    assert (project.project / "data.dvc").read_text() == recorded, "regenerated data/raw differs"
    status = json.loads(project("dvc", "status", "--json", "data.dvc").strip().splitlines()[-1])
    assert status == {}


def test_interleaved_workspaces_each_register_the_lineage_of_their_own_flow_runs(project, neighbour):
    """A's data stages, B's up to training, the rest of A's, the rest of B's model. "The newest completed
    run of each flow" would have given A's model B's ingest, validate and shard runs, and B's
    model A's tokenizer and train runs."""
    assert "Running stage 'shard'" in project("dvc", "repro", "shard")
    assert "Running stage 'train'" in neighbour("dvc", "repro", "train")
    assert "Running stage 'ingest'" not in project("dvc", "repro")
    assert "Running stage 'register'" in neighbour("dvc", "repro", "register")  # B's model: its lineage's stages
    a_data, a_model = project.runs[-2], project.runs[-1]
    assert set(a_data) == {"demo-data", "benchmark-hashes", "ingest", "validate", "shard"}  # decontamination first
    assert set(a_model) == set(STAGES) - set(a_data)  # the model, its evaluation, card, VQA, embeddings, index
    model_flows = ("benchmark-hashes", "ingest", "validate", "shard", "tokenizer", "train", "evaluate", "register")
    b_made_by = {**neighbour.runs[-2], **neighbour.runs[-1]}
    assert set(b_made_by) == {"demo-data", *model_flows}
    made_by = {**a_data, **a_model}

    cli = project.run("biomedclip", "lineage", "models:/biomedclip/1", "--json")
    assert cli.returncode == 0, cli.stderr[-3000:]
    shown = json.loads(cli.stdout)
    assert shown["flow_runs"] == {flow: made_by[flow] for flow in model_flows}
    assert neighbour.lineage(1)["flow_runs"] == {flow: b_made_by[flow] for flow in model_flows}
    on_server = flow_runs_on(project.api)
    for flow, run_id in shown["flow_runs"].items():
        assert on_server[run_id]["flow"] == flow and on_server[run_id]["state_type"] == "COMPLETED"
    # Each stage's record beside its outputs, versioned by DVC with them.
    for stage in STAGES:
        record = json.loads((project.project / "reports" / "flow-runs" / f"{stage}.json").read_text())
        assert record["flow_run"]["id"] == made_by[stage] and record["flow_run"]["api"] == project.api, stage


def test_dvc_repro_runs_stages_through_prefect_then_only_what_changed(project):
    root = project.project
    labels = root / "data" / "benchmarks" / "pmc-figure-types" / "labels.csv"
    assert len(labels.read_text().splitlines()) == 1 + 16 * 20
    made_by = {**project.runs[-2], **project.runs[-1]}
    artifacts = {a["key"] for a in prefect_request(project.api, "POST", "/artifacts/filter", limit=200,
                                                   flow_runs={"id": {"any_": list(made_by.values())}})}
    assert set(STAGES) <= artifacts  # each stage's report, under the stage's name
    assert "Data and pipelines are up to date" in project("dvc", "status")

    report = json.loads((root / "metrics" / "ingest.json").read_text())
    assert report["pairs"]["total"] > 1000
    assert min(report["pairs"]["val"], report["pairs"]["test"]) > 20
    run_info = json.loads((root / "data" / "train" / "run.json").read_text())
    assert (root / run_info["model_dir"] / "open_clip_model.safetensors").is_file()
    assert run_info["mlflow_run_id"] and (root / "mlflow.db").is_file()
    assert json.loads((root / "metrics" / "validate.json").read_text())["success"] is True
    assert (root / "reports" / "validation" / "index.html").is_file()
    # `shard.unit: both` (the demo's): every figure pair, and the panel pairs of the split figures.
    shards = json.loads((root / "metrics" / "shard.json").read_text())
    assert shards["unit"] == "both" and shards["train"]["panels"] > 0
    for split in ("train", "val", "test"):
        sizes = json.loads((root / "data" / "shards" / split / "sizes.json").read_text())
        assert shards[split]["figures"] == report["pairs"][split]
        assert sum(sizes.values()) == shards[split]["samples"] == shards[split]["figures"] + shards[split]["panels"]
    again = project("biomedclip", "repro")  # what `make run` runs: nothing to do, and where to look
    assert "Running stage" not in again and "Dataset card: reports/dataset/index.html" in again
    assert project.runs[-1] == {}
    # The data stages reproduce, byte for byte, the outputs the committed dvc.lock records.
    committed, here = (yaml.safe_load(lock.read_text())["stages"] for lock in (REPO / "dvc.lock", root / "dvc.lock"))
    for stage in ("demo-data", "benchmark-hashes", "ingest", "validate", "shard", "tokenizer"):
        outputs = [{o["path"]: o["md5"] for o in lock[stage]["outs"] if "flow-runs" not in o["path"]}
                   for lock in (committed, here)]
        assert outputs[1] == outputs[0], stage

    # The registered version's lineage, verified against this workspace, then a byte changed.
    registered = json.loads((root / "metrics" / "register.json").read_text())
    chain = project.lineage(registered["version"])
    assert chain["run_id"] == run_info["mlflow_run_id"]
    assert {"ingest", "validate", "shard", "tokenizer", "train", "evaluate"} <= set(chain["dvc_lock"]["stages"])
    assert chain["data"]["version"] == yaml.safe_load((root / "data.dvc").read_text())["outs"][0]["md5"]
    uri = f"models:/{registered['name']}/{registered['version']}"
    assert "verified" in project("biomedclip", "lineage", uri, "--verify")
    # The paper's third task: each benchmark's answer model beats answering without the image.
    vqa = json.loads((root / "metrics" / "vqa.json").read_text())
    assert set(vqa) == {"vqa-rad", "slake"} and (root / "reports" / "vqa.md").is_file()
    for name, scores in vqa.items():
        overall, blind = scores["overall"], scores["question_only"]["overall"]
        assert overall["samples"] > 100 and overall["accuracy"] > blind["accuracy"], (name, overall, blind)
        assert (root / "data" / "vqa" / name).is_dir()
    # No output holds the clone's absolute path: another folder gives the same hashes.
    for folder in ("data/train/final", "reports", "metrics"):
        for path in (p for p in (root / folder).rglob("*") if p.suffix in (".json", ".md", ".csv", ".html", ".txt")):
            assert str(root) not in path.read_text(errors="replace"), path
    # A corpus written elsewhere touches neither the stages' outputs nor their records.
    project("biomedclip", "demo-data", "--articles", "5", "--out", str(root.parent / "elsewhere"), "--workers", "1")
    assert "Data and pipelines are up to date" in project("dvc", "status")
    # A stage run again with identical outputs (a new flow run): a note, not a failed verification.
    project("dvc", "repro", "--force", "--single-item", "validate")
    verified = project.run("biomedclip", "lineage", uri, "--verify")
    assert verified.returncode == 0 and "validate stage ran again" in verified.stdout, verified.stdout[-2000:]
    # The deps cover the code: an edit of the panel layout re-runs the ingest.
    layout = root / "src" / "biomedclip" / "panels" / "layout.py"
    original_layout = layout.read_bytes()
    layout.write_bytes(original_layout + b"\n# an edit\n")
    assert "ingest:" in project("dvc", "status")
    layout.write_bytes(original_layout)
    shard = sorted((root / "data" / "shards" / "train").glob("*.tar"))[0]
    original = shard.read_bytes()
    shard.write_bytes(original[:2000] + bytes([original[2000] ^ 0xFF]) + original[2001:])
    failed = project.run("biomedclip", "lineage", uri, "--verify")
    assert failed.returncode == 1 and shard.name in failed.stdout + failed.stderr
    shard.write_bytes(original)

    params = project.params()
    params["demo"]["noise"]["tiff"] = 0.05  # the corpus's knob: the benchmark does not read it
    params["ingest"]["workers"] = 1  # how the ingest runs, not what it produces
    project.set_params(params)
    assert "Data and pipelines are up to date" in project("dvc", "status")
    params["shard"]["samples_per_shard"] = 100  # re-runs shard (and what follows) only
    project.set_params(params)
    status = project("dvc", "status")
    assert "shard:" in status and "validate:" not in status and "ingest:" not in status
    params["ingest"]["caption"]["min_words"] = 6
    project.set_params(params)
    status = project("dvc", "status")
    assert "ingest" in status and "demo-data" not in status


def test_an_evaluation_rerun_alone_is_a_new_version_naming_the_old_runs_of_the_skipped_stages(project):
    """Only the evaluation changed (its ks and templates; not a benchmark's images, which would
    re-run the decontamination and the ingest after it): DVC skips the data and training stages;
    the new version's lineage names the new evaluate and register runs and, for the rest, the runs
    that really made them."""
    params = project.params()
    for section, key in (("shard", "samples_per_shard"), ("ingest", "caption")):  # the last test's edits
        params[section][key] = yaml.safe_load((REPO / "params.yaml").read_text())[section][key]
    params["evaluate"]["ks"] = [1, 5, 10, 20]
    params["evaluate"]["templates"] = ["a figure of {}"]
    project.set_params(params)
    before = project.lineage(1)
    output = project("dvc", "repro")
    ran = [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]
    assert sorted(ran) == ["card", "evaluate", "register"], output[-3000:]  # the card's labels use the templates
    new = project.runs[-1]
    assert set(new) == {"evaluate", "card", "register"}
    new.pop("card")  # the corpus's page, not an input of the model
    registered = json.loads((project.project / "metrics" / "register.json").read_text())
    assert registered["version"] == 2
    chain = project.lineage(2)
    # The skipped stages: the runs their records name (validate ran again, byte-identical, since v1).
    records = {flow: json.loads((project.project / "reports" / "flow-runs" / f"{flow}.json").read_text())
               ["flow_run"]["id"] for flow in before["flow_runs"]}
    assert chain["flow_runs"] == {**records, **new}
    assert chain["flow_runs"]["train"] == before["flow_runs"]["train"]
    assert chain["model_sha256"] == before["model_sha256"]  # the same weights, a new lineage
    assert project.lineage(1)["flow_runs"] == before["flow_runs"]  # version 1 keeps its own
    on_server = flow_runs_on(project.api)
    assert all(on_server[run_id]["flow"] == flow for flow, run_id in chain["flow_runs"].items())


def test_a_failing_critical_check_stops_dvc_repro_before_shard(neighbour):
    params = neighbour.params()
    params["validate"]["min_pairs"] = 10**9
    neighbour.set_params(params)
    result = neighbour.run("dvc", "repro")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "min_pairs" in output and "critical expectation(s) failed" in output
    assert "Running stage 'shard'" not in output
    assert json.loads((neighbour.project / "metrics" / "validate.json").read_text())["success"] is False
