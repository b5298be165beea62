"""The model registry with a real MLflow store (SQLite + local artifacts in a temp dir).

The session's tiny model (conftest's `tiny_world`: 150 steps on the noisy demo corpus's shards,
tracked, so it has an MLflow run) is registered; its initial weights, given a run of their own,
stand in for a worse model. No mocks: real pyfunc logging, registry aliases, evaluations of both
models on the same test shards, a fresh process loading the pyfunc, `mlflow models serve`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from biomedclip.evaluate.params import EvaluateOutputs, EvaluateParams
from biomedclip.register import lineage_facts
from biomedclip.register.lineage import lineage, lineage_text, verify
from biomedclip.register.params import GateParams, RegisterParams
from biomedclip.register.promotion import gate, promote, rollback
from biomedclip.register.registry import RegistryError, decisions, register

from .conftest import REPO, ask_model_server

BIN = Path(sys.executable).parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """The session's trained model (its MLflow run in the session's store) and its initial weights
    given a run of their own, as the worse model."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mlflow.set_tracking_uri(tiny_world.tracking.uri)
        with mlflow.start_run() as run:
            pass
        untrained = {**tiny_world.trained, "model_dir": str(tiny_world.random_model),
                     "mlflow_run_id": run.info.run_id,
                     "model_sha256": sha256(tiny_world.random_model / "open_clip_model.safetensors")}
        yield {"root": root, "tracking": tiny_world.tracking, "shards": tiny_world.shards,
               "trained": tiny_world.trained, "untrained": untrained,
               "evaluate": EvaluateParams(benchmarks=(), cache=root / "evaluations", outputs=EvaluateOutputs(
                   metrics=root / "eval.json", plots=root / "plots", report=root / "report.md"))}


def registry_params(root: Path, name: str) -> RegisterParams:
    # The demo corpus here has 27 test pairs: the gate looks at retrieval only.
    return RegisterParams(model_name=name, decision_log=root / f"{name}.jsonl", output=root / f"{name}.json",
                          gate=GateParams(primary="retrieval/image_to_text/recall_at_10",
                                          guards=("retrieval/text_to_image/recall_at_10",), tolerance=0.05))


def tags_for(info: dict, flow_runs: dict[str, str] | None = None, lock: Path = REPO / "dvc.lock") -> dict[str, str]:
    return lineage_facts.collect(params_path=REPO / "params.yaml", train_info=info,
                                 validate_result=REPO / "metrics" / "validate.json",
                                 shard_manifest=Path(info["model_dir"]).parent / "missing.json",
                                 eval_metrics=None, lock=lock, data_dvc=REPO / "data.dvc",
                                 flow_runs=flow_runs or {})


@pytest.mark.integration
def test_register_twice_gives_one_version_with_lineage_tags(world):
    params = registry_params(world["root"], "twice")
    first = register(params, world["tracking"], train_info=world["trained"], lineage=tags_for(world["trained"]),
                     dvc_lock=REPO / "dvc.lock")
    again = register(params, world["tracking"], train_info=world["trained"], lineage=tags_for(world["trained"]))
    assert first["created"] and not again["created"] and again["version"] == first["version"]
    client = mlflow.MlflowClient(world["tracking"].uri)
    assert len(client.search_model_versions("name='twice'")) == 1
    version = client.get_model_version_by_alias("twice", "challenger")
    assert str(version.version) == str(first["version"])
    for key in ("git.commit", "git.dirty", "data.version", "manifest.md5", "validation.sha256",
                "dvc_lock.sha256", "params.sha256", "mlflow.run_id", "model.sha256"):
        assert version.tags.get(f"biomedclip.{key}"), key
    assert version.tags["biomedclip.model.sha256"] == world["trained"]["model_sha256"]


@pytest.mark.integration
def test_the_pyfunc_loads_in_a_fresh_process_and_matches_the_checkpoint(world):
    params = registry_params(world["root"], "pyfunc")
    done = register(params, world["tracking"], train_info=world["trained"], lineage=tags_for(world["trained"]))
    image = next((world["shards"].outputs.shards / "test").glob("*.tar"))
    script = f"""
import io, json, tarfile, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri({world['tracking'].uri!r})
model = mlflow.pyfunc.load_model("{done['uri']}")
with tarfile.open({str(image)!r}) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    jpeg = tar.extractfile(member).read()
out = model.predict(pd.DataFrame({{"image": [jpeg, None], "text": [None, "chest X-ray"]}}),
                    params={{"class_names": ["chest X-ray", "bar chart"]}})
images_only = model.predict(pd.DataFrame({{"image": [jpeg], "text": [None]}}))  # the README's snippet, no classes
print(json.dumps({{"image": out["image_embedding"][0], "text": out["text_embedding"][1],
                  "probabilities": out["probabilities"][0], "jpeg_member": member.name,
                  "columns": list(images_only.columns), "no_text": images_only["text_embedding"][0]}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=world["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    import tarfile

    from biomedclip.evaluate.embedding import decode, embed_images, embed_texts
    from biomedclip.models import load_model

    loaded = load_model(world["trained"]["model_dir"])
    with tarfile.open(image) as tar:
        jpeg = tar.extractfile(got["jpeg_member"]).read()
    expected_image = embed_images(loaded, [decode(jpeg)], 8)[0]
    expected_text = embed_texts(loaded, ["chest X-ray"], 8)[0]
    assert torch.allclose(torch.tensor(got["image"]), expected_image, atol=1e-5)
    assert torch.allclose(torch.tensor(got["text"]), expected_text, atol=1e-5)
    assert abs(sum(got["probabilities"]) - 1) < 1e-5
    # Every column the README lists, also where nothing was asked of it.
    assert got["columns"] == ["image_embedding", "text_embedding", "probabilities", "label"]
    assert got["no_text"] is None


@pytest.mark.unit
def test_gate_rule():
    params = RegisterParams(gate=GateParams(primary="p", guards=("g",), min_improvement=0.01, tolerance=0.02))
    assert gate(None, {"p": 0.1, "g": 0.1}, params)[0]
    assert gate({"p": 0.50, "g": 0.5}, {"p": 0.52, "g": 0.49}, params)[0]
    assert not gate({"p": 0.50, "g": 0.5}, {"p": 0.505, "g": 0.5}, params)[0]  # gain below the margin
    assert not gate({"p": 0.50, "g": 0.5}, {"p": 0.60, "g": 0.47}, params)[0]  # a guard drops too far
    with pytest.raises(RegistryError, match="'x'"):
        gate({"p": 0.5}, {"p": 0.6}, params.model_copy(update={"gate": GateParams(primary="x")}))


@pytest.mark.integration
def test_promote_better_refuse_worse_on_the_current_test_set_and_roll_back(world):
    root, tracking, evaluate = world["root"], world["tracking"], world["evaluate"]
    shards = world["shards"].outputs.shards
    params = registry_params(root, "gated")
    client = mlflow.MlflowClient(tracking.uri)
    # v1: the untrained model; with no champion it passes.
    v1 = register(params, tracking, train_info=world["untrained"], lineage=tags_for(world["untrained"]))
    first = promote(params, tracking, evaluate, shards, actor="ci")
    assert first["promoted"] and first["gate_passed"] and first["previous_champion"] is None
    # Stored metrics on the champion are stale by design: the gate must not read them.
    client.set_model_version_tag("gated", str(v1["version"]),
                                 "biomedclip.eval.retrieval/image_to_text/recall_at_10", "1.0")
    # v2: the trained model beats it on today's test shards.
    v2 = register(params, tracking, train_info=world["trained"], lineage=tags_for(world["trained"]))
    better = promote(params, tracking, evaluate, shards, actor="ci")
    primary = params.gate.primary
    assert better["promoted"], better["why"]
    assert better["champion_metrics"][primary] < 1.0  # re-evaluated, not the stale tag
    assert better["challenger_metrics"][primary] > better["champion_metrics"][primary]
    assert str(client.get_model_version_by_alias("gated", "champion").version) == str(v2["version"])
    # The untrained one again, as a challenger: refused, champion unchanged, exit reason recorded.
    client.set_registered_model_alias("gated", "challenger", str(v1["version"]))
    worse = promote(params, tracking, evaluate, shards, actor="ci")
    assert not worse["promoted"] and "gain" in worse["why"]
    assert str(client.get_model_version_by_alias("gated", "champion").version) == str(v2["version"])
    with pytest.raises(RegistryError, match="--reason"):
        promote(params, tracking, evaluate, shards, force=True)
    # Roll back: v1 again; rolling back once more has nowhere to go.
    back = rollback(params, tracking, reason="test", actor="ci")
    assert back["version"] == v1["version"] and back["previous_champion"] == v2["version"]
    assert str(client.get_model_version_by_alias("gated", "champion").version) == str(v1["version"])
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(params, tracking)
    log = decisions(params.decision_log)
    assert [d["action"] for d in log] == ["promote", "promote", "promote", "rollback"]
    assert [d["promoted"] for d in log] == [True, True, False, True]
    version_tags = client.get_model_version("gated", str(v2["version"])).tags
    assert any(k.startswith("biomedclip.decision.") for k in version_tags)


CONCURRENT = """
import json, sys
from pathlib import Path
from biomedclip.evaluate.params import EvaluateOutputs, EvaluateParams
from biomedclip.register.params import GateParams, RegisterParams
from biomedclip.tracking import TrackingParams
from biomedclip.register.promotion import promote
root, version, uri, shards = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
params = RegisterParams(model_name="race", decision_log=root / "race.jsonl", output=root / "race.json",
                        gate=GateParams(primary="retrieval/image_to_text/recall_at_10", guards=(), min_improvement=0.0))
evaluate = EvaluateParams(benchmarks=(), cache=root / "evaluations",
                          outputs=EvaluateOutputs(metrics=root / f"e{version}.json", plots=root / f"p{version}",
                                                  report=root / f"r{version}.md"))
record = promote(params, TrackingParams(uri=uri), evaluate, shards, version=version, actor=f"p{version}")
print(json.dumps(record))
"""


@pytest.mark.integration
def test_concurrent_promotions_leave_the_aliases_consistent(world):
    root, tracking = world["root"], world["tracking"]
    params = registry_params(root, "race")
    v1 = register(params, tracking, train_info=world["untrained"], lineage=tags_for(world["untrained"]))
    promote(params.model_copy(update={"decision_log": root / "race.jsonl"}), tracking, world["evaluate"],
            world["shards"].outputs.shards, actor="ci")
    v2 = register(params, tracking, train_info=world["trained"], lineage=tags_for(world["trained"]))
    # A third version: the same trained weights logged from a second run.
    with mlflow.start_run() as run:
        pass
    v3 = register(params, tracking, train_info={**world["trained"], "mlflow_run_id": run.info.run_id},
                  lineage=tags_for(world["trained"]))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), str(v["version"]), tracking.uri,
                               str(world["shards"].outputs.shards)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
             for v in (v2, v3)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    log = [d for d in decisions(root / "race.jsonl") if d["action"] == "promote"]
    assert len(log) == 3
    first, second = log[1], log[2]
    # Serialised: the second decision saw the first one's outcome as its champion.
    champion_after_first = first["version"] if first["promoted"] else v1["version"]
    assert second["previous_champion"] == champion_after_first
    client = mlflow.MlflowClient(tracking.uri)
    final = str(client.get_model_version_by_alias("race", "champion").version)
    expected = second["version"] if second["promoted"] else champion_after_first
    assert final == str(expected)


@pytest.mark.integration
def test_mlflow_models_serve_answers_an_embedding_request(world):
    params = registry_params(world["root"], "served")
    done = register(params, world["tracking"], train_info=world["trained"], lineage=tags_for(world["trained"]))
    mlflow.MlflowClient(world["tracking"].uri).set_registered_model_alias("served", "champion", str(done["version"]))
    answer = ask_model_server("models:/served@champion", world["tracking"].uri, world["root"],
                              [{"text": "chest X-ray showing pneumonia"}])
    embedding = answer["predictions"][0]["text_embedding"]
    assert len(embedding) == 128 and abs(sum(x * x for x in embedding) - 1) < 1e-4


@pytest.mark.integration
def test_the_same_model_from_new_inputs_is_a_new_version_of_the_model_already_logged(world, tmp_path):
    """Evaluation re-run (DVC skipped the rest): the same weights and training run, a new evaluate
    flow run. That is a new version with its own lineage and dvc.lock, made from the model already
    logged (no second upload); registering either lineage again is the version it already has."""
    params, info, tracking = registry_params(world["root"], "relineaged"), world["trained"], world["tracking"]
    locks = {}
    for n in (1, 2):
        locks[n] = tmp_path / f"lock{n}" / "dvc.lock"
        locks[n].parent.mkdir()
        locks[n].write_text(yaml.safe_dump({"schema": "2.0", "stages": {"evaluate": {
            "cmd": "python flows/evaluate.py", "outs": [{"path": "metrics/eval.json", "md5": f"{n}" * 32}]}}}))
    flow_runs = {n: {"train": "train-run", "evaluate": f"evaluate-run-{n}"} for n in (1, 2)}
    first = register(params, tracking, train_info=info, lineage=tags_for(info, flow_runs[1], locks[1]),
                     dvc_lock=locks[1])
    second = register(params, tracking, train_info=info, lineage=tags_for(info, flow_runs[2], locks[2]),
                      dvc_lock=locks[2])
    assert first["created"] and second["created"] and second["version"] == first["version"] + 1
    for n, done in ((1, first), (2, second)):
        again = register(params, tracking, train_info=info, lineage=tags_for(info, flow_runs[n], locks[n]),
                         dvc_lock=locks[n])
        assert (again["created"], again["version"]) == (False, done["version"])
        chain = lineage(done["uri"], params, tracking)
        assert chain["flow_runs"] == flow_runs[n]
        assert chain["dvc_lock"]["stages"]["evaluate"]["outs"] == {"metrics/eval.json": f"{n}" * 32}
    client = mlflow.MlflowClient(tracking.uri)
    versions = [client.get_model_version("relineaged", str(v["version"])) for v in (first, second)]
    assert versions[0].source.startswith("models:/m-") and versions[1].source == versions[0].source  # one upload
    assert int(client.get_model_version_by_alias("relineaged", "challenger").version) == second["version"]


@pytest.mark.integration
def test_lineage_lists_the_chain_and_verify_catches_a_changed_shard_byte(world, tmp_path):
    params = registry_params(world["root"], "audited")
    info = world["trained"]
    tags = lineage_facts.collect(params_path=REPO / "params.yaml", train_info=info,
                                 validate_result=REPO / "metrics" / "validate.json",
                                 shard_manifest=world["shards"].outputs.manifest, eval_metrics=None,
                                 lock=REPO / "dvc.lock", data_dvc=REPO / "data.dvc", flow_runs={})
    done = register(params, world["tracking"], train_info=info, lineage=tags, dvc_lock=REPO / "dvc.lock")
    chain = lineage(done["uri"], params, world["tracking"])
    assert chain["run_id"] == info["mlflow_run_id"] and chain["model_sha256"] == info["model_sha256"]
    assert chain["git"]["commit"] and chain["data"]["shard_manifest_sha256"] == sha256(world["shards"].outputs.manifest)
    assert "ingest" in chain["dvc_lock"]["stages"]
    text = lineage_text(chain)
    for needle in ("git commit", "data version", "shards", "stage ingest", "promotion history"):
        assert needle in text
    # Verify the shards and the registered weights (the DVC side is covered end to end in
    # test_pipeline): copy the shards so the module's stay intact.
    shards = tmp_path / "shards"
    shutil.copytree(world["shards"].outputs.shards, shards)
    only_shards = {**chain, "dvc_lock": {"stages": {}, "sha256": None}, "data": {**chain["data"], "version": None}}
    problems = verify(only_shards, world["tracking"], shard_manifest=shards / "manifest.json",
                      model_dir=Path(info["model_dir"]), repo_root=REPO).problems
    assert problems == ["no dvc.lock was logged with the model: nothing to verify the data against"]
    target = sorted((shards / "train").glob("*.tar"))[0]
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    problems = verify(only_shards, world["tracking"], shard_manifest=shards / "manifest.json",
                      model_dir=Path(info["model_dir"]), repo_root=REPO).problems
    assert any(str(target) in p and "sha256" in p for p in problems), problems


@pytest.mark.integration
def test_carry_over_moves_runs_versions_aliases_and_lineage_to_another_store(world, tmp_path):
    """The workspace's embedded store → a team store: every version (oldest first, so the numbers
    stay), its tags, model and aliases, and the runs behind them with their metric histories and
    artifacts; the workspace's old run ids resolve there; a second carry-over copies nothing."""
    from biomedclip.models import load_model
    from biomedclip.register.carry_over import carry_over
    from biomedclip.tracking import (
        NotInStore,
        TrackingParams,
        connect,
        model_version,
        workspace_run,
    )

    params = registry_params(world["root"], "carried")
    first = register(params, world["tracking"], train_info=world["untrained"], lineage=tags_for(world["untrained"]))
    second = register(params, world["tracking"], train_info=world["trained"], lineage=tags_for(world["trained"]),
                      dvc_lock=REPO / "dvc.lock")
    source = mlflow.MlflowClient(world["tracking"].uri)
    source.set_registered_model_alias("carried", "champion", str(first["version"]))
    team = TrackingParams(uri=f"sqlite:///{tmp_path / 'team.db'}", experiment="session")
    with pytest.raises(NotInStore, match=r"no registered model 'carried' .*biomedclip carry-over"):
        model_version(connect(team), "models:/carried@champion")

    report = carry_over(world["tracking"].uri, params, team, workspace_run_id=world["trained"]["mlflow_run_id"])
    assert report.versions == {first["version"]: 1, second["version"]: 2} and report.copied_versions == 2
    assert report.aliases == {"champion": 1, "challenger": 2}
    client = connect(team)
    copied = model_version(client, "models:/carried@challenger")
    original = source.get_model_version("carried", str(second["version"]))
    lineage_tags = {k: v for k, v in original.tags.items() if k.startswith("biomedclip.")}
    assert lineage_tags and {k: copied.tags.get(k) for k in lineage_tags} == lineage_tags
    run = client.get_run(copied.run_id)
    old = source.get_run(world["trained"]["mlflow_run_id"])
    assert run.data.params == old.data.params and run.info.run_id != old.info.run_id
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == \
        [m.value for m in source.get_metric_history(old.info.run_id, "loss")]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model", "loss_curve.png"}
    assert workspace_run(client, old.info.run_id, recorded_in="data/train/run.json") == run.info.run_id
    here = load_model("models:/carried@challenger", tracking=team)
    assert here.digest == world["trained"]["model_sha256"]
    with pytest.raises(NotInStore, match=r"carried has no version 9 \(versions: 1-2; aliases: challenger -> 2, "
                                         r"champion -> 1\)"):
        model_version(client, "models:/carried/9")
    again = carry_over(world["tracking"].uri, params, team, workspace_run_id=world["trained"]["mlflow_run_id"])
    assert again.copied_runs == 0 and again.copied_versions == 0 and again.versions == report.versions
