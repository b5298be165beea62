"""`biomedclip lineage MODEL_URI [--verify]`: the chain behind a registered version, and a check
that what is on disk is what it was built from.

version → MLflow run → git commit → params → `dvc.lock` stages (deps and outs with their hashes,
from the copy logged with the model) → data version → validation result → shard manifest →
metrics → Prefect flow runs → promotion history. `--verify` checks what the model was built from
against the local workspace: every output that `dvc.lock` records (raw data, manifest, shards,
model folder...) and every code file and param value its stages depended on, re-hashed or re-read
with DVC; every shard against the shard manifest; the registered weights against their recorded
digest. A stage that ran again since, with identical outputs (a new flow run, so a new flow-run
record), is reported as information, not as a mismatch: the data and the model are unchanged.

A model registered from elsewhere (`biomedclip register --model`, e.g. Microsoft's published
BiomedCLIP as `baseline`) has external lineage: its source, the weights' sha256 and its config,
and the evaluation run; `--verify` re-hashes its registered weights.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biomedclip.digests import file_sha256
from biomedclip.models import WEIGHT_FILES
from biomedclip.pipeline.stages import model_input_stages
from biomedclip.register.params import RegisterParams
from biomedclip.register.registry import RegistryError, decisions
from biomedclip.tracking import REGISTERED, TrackingParams, connect, download, model_version

log = logging.getLogger(__name__)
WEIGHTS = WEIGHT_FILES[0]  # the file this project's models keep their weights in


def lineage(uri: str, params: RegisterParams, tracking: TrackingParams, *,
            index: Path | None = None) -> dict[str, Any]:
    """The chain behind a registered version (see the module); `index`: the search index folder,
    said to be this version's or another model's (the index records the weights it was built from)."""
    client = connect(tracking)
    if not REGISTERED.match(uri):
        raise RegistryError(f"{uri!r} is not a registered version (models:/NAME@ALIAS, models:/NAME/N, @ALIAS or N)")
    version = model_version(client, uri)
    tags = {k.removeprefix("biomedclip."): v for k, v in version.tags.items() if k.startswith("biomedclip.")}
    run = client.get_run(version.run_id) if version.run_id else None
    stages: dict[str, Any] = {}
    if run is not None:
        logged = tags.get("lineage.dvc_lock", "lineage/dvc.lock")  # older versions: one per run
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = client.download_artifacts(run.info.run_id, logged, tmp)
                stages = yaml.safe_load(Path(local).read_text()).get("stages", {})
            except Exception as exc:  # a version registered without it
                log.warning("no dvc.lock logged with run %s: %s", run.info.run_id, exc)
    history = [d for d in decisions(params.decision_log)
               if d.get("model") == version.name and (d.get("version") == int(version.version)
                                                      or d.get("previous_champion") == int(version.version))]
    aliases = list(getattr(version, "aliases", []) or [])
    external = {"source": tags.get("external.source"), "config": tags.get("external.config")} \
        if tags.get("lineage.kind") == "external" else None
    return {
        "model": version.name, "version": int(version.version), "aliases": aliases,
        "source": version.source, "run_id": version.run_id, "kind": tags.get("lineage.kind", "trained"),
        "external": external, "weights_file": tags.get("model.weights_file", WEIGHTS),
        "git": {"commit": tags.get("git.commit"), "dirty": tags.get("git.dirty"),
                "data_commit": tags.get("git.data_commit"), "data_branch": tags.get("git.data_branch")},
        "params": {"sha256": tags.get("params.sha256"),
                   "recipe": {k: v for k, v in (run.data.params.items() if run else [])
                              if k in ("profile", "epochs", "global_batch", "lr", "precision", "seed")}},
        "data": {"version": tags.get("data.version"), "manifest_md5": tags.get("manifest.md5"),
                 "validation_sha256": tags.get("validation.sha256"),
                 "shard_manifest_sha256": tags.get("shards.manifest_sha256")},
        "dvc_lock": {"sha256": tags.get("dvc_lock.sha256"), "stages": {
            name: {"deps": {d["path"]: d.get("md5", "") for d in stage.get("deps", [])},
                   "outs": {o["path"]: o.get("md5", "") for o in stage.get("outs", [])},
                   "params": stage.get("params", {})}
            for name, stage in stages.items()}},
        "model_sha256": tags.get("model.sha256"),
        "metrics": {k.removeprefix("eval."): v for k, v in sorted(tags.items()) if k.startswith("eval.")},
        "flow_runs": {k.removeprefix("prefect.flow_run."): v for k, v in tags.items()
                      if k.startswith("prefect.flow_run.")},
        "promotions": history,
        "search_index": _index_of(index, tags.get("model.sha256")),
    }


def _index_of(folder: Path | None, weights_sha256: str | None) -> dict[str, Any] | None:
    """What the search index in `folder` was built from, and whether that is these weights."""
    manifest = folder / "index.json" if folder is not None else None
    if manifest is None or not manifest.is_file():
        return None
    built = json.loads(manifest.read_text())
    return {"folder": str(folder), "model": built["model"]["source"], "model_sha256": built["model"]["sha256"],
            "embeddings_sha256": built["embeddings"]["sha256"], "vectors": built.get("vectors"),
            "this_version": bool(weights_sha256) and built["model"]["sha256"] == weights_sha256}


@dataclass(frozen=True)
class Verification:
    """What `--verify` found: mismatches (the workspace is not what the model was built from)
    and notes (information, e.g. a stage ran again and made the same outputs)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(chain: dict[str, Any], tracking: TrackingParams, *, shard_manifest: Path, model_dir: Path | None,
           flow_runs: Path = Path("reports/flow-runs"), repo_root: Path = Path(".")) -> Verification:
    """Check the workspace against the recorded lineage (see the module): the DVC outputs and raw
    data, the code and params of every stage, every shard, the local model folder and the
    registered weights. `flow_runs` holds the flow-run records, which a re-run rewrites. An
    external model has no workspace lineage: its registered weights are re-hashed."""
    if chain.get("kind") == "external":
        return Verification(_verify_registered_weights(chain, tracking))
    outs, deps = _dvc_objects(repo_root)
    scope = {name: stage for name, stage in chain["dvc_lock"]["stages"].items() if name in model_input_stages()}
    outputs = _verify_dvc_outputs(chain, scope, outs, flow_runs)
    return Verification([*outputs.problems, *_verify_dvc_inputs(scope, deps, repo_root, outputs.problems),
                         *_verify_shards(chain, shard_manifest), *_verify_model_folder(chain, model_dir),
                         *_verify_registered_weights(chain, tracking)], outputs.notes)


def _dvc_objects(repo_root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """This workspace's pipeline: its outputs and its deps, by path as dvc.yaml names them."""
    from dvc.repo import Repo

    repo = Repo(str(repo_root))
    outs = {str(o.def_path): o for stage in repo.index.stages for o in stage.outs}
    deps = {str(d.def_path): d for stage in repo.index.stages for d in stage.deps}
    return outs, deps


def _here(obj: Any) -> str | None:
    try:
        return obj.get_hash().value
    except FileNotFoundError:
        return None


def _verify_dvc_outputs(chain: dict[str, Any], scope: dict[str, Any], outs: dict[str, Any],
                        flow_runs: Path) -> Verification:
    """Every output the logged dvc.lock records for the model's stages (and data/raw's version)
    re-hashed by DVC here. A flow-run record that changed is a note, not a mismatch."""
    found = Verification()
    recorded = {path: (name, md5) for name, stage in scope.items() for path, md5 in stage["outs"].items()}
    if not recorded:
        found.problems.append("no dvc.lock was logged with the model: nothing to verify the data against")
    data_version = chain["data"]["version"]
    if data_version and data_version != "unknown":
        recorded["data/raw"] = ("data", data_version)
    changed: dict[str, list[str]] = {}
    for path, (stage, md5) in sorted(recorded.items()):
        if not md5:
            continue
        out = outs.get(path)
        if out is None:
            found.problems.append(f"{path}: recorded in the lineage, unknown to this workspace's pipeline")
            continue
        here = _here(out)
        if here is None:
            found.problems.append(f"{path}: missing (recorded md5 {md5})")
        elif here != md5:
            changed.setdefault(stage, []).append(path)
            if not Path(path).is_relative_to(flow_runs):
                found.problems.append(f"{path}: md5 {here} here, {md5} recorded (changed since the model was built)")
    for stage, paths in changed.items():
        for path in paths:
            if Path(path).is_relative_to(flow_runs):
                same = "its other outputs are unchanged" if len(paths) == 1 else "see the mismatches above"
                found.notes.append(f"{path}: the {stage} stage ran again since the model was built ({same})")
    return found


def _verify_dvc_inputs(scope: dict[str, Any], deps: dict[str, Any], repo_root: Path, reported: list[str]) -> list[str]:
    """What the model's stages read, re-hashed here (the code in `src/` and `flows/`, data not
    already reported as an output) and their param values, re-read from the params file: a model
    is only reproducible from the same inputs, code and params."""
    from biomedclip.config import read_yaml

    problems: list[str] = []
    params_cache: dict[str, Any] = {}
    seen = {line.split(":", 1)[0] for line in reported}
    for stage_name, stage in scope.items():
        for path, md5 in sorted(stage["deps"].items()):
            if not md5 or path in seen:
                continue
            seen.add(path)
            dep = deps.get(path)
            here = _here(dep) if dep is not None else None
            if here != md5:
                what = "the code" if path.startswith(("src/", "flows/")) else "the data"
                problems.append(f"{path}: {what} the {stage_name} stage read has changed since the model was "
                                f"built ({'missing' if here is None else 'md5 ' + here} here, {md5} recorded)")
        for file, values in (stage.get("params") or {}).items():
            if file not in params_cache:
                try:
                    params_cache[file] = read_yaml(repo_root / file) or {}
                except Exception as exc:
                    problems.append(f"{file}: unreadable ({exc})")
                    params_cache[file] = None
            current = params_cache[file]
            if current is None:
                continue
            for key, then in sorted(values.items()):
                now = _dotted(current, key)
                if not same_param(now, then):
                    problems.append(f"{file}: {key} is {json.dumps(now)} here, {json.dumps(then)} when the "
                                    f"model was built (the {stage_name} stage's param)")
    return problems


def _dotted(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def same_param(now: Any, then: Any) -> bool:
    """A param as params.yaml has it now, against the value dvc.lock recorded, equal as DVC means
    it: dvc.lock is YAML 1.2, where `1e-06` is a number, and read here by PyYAML (YAML 1.1) it is
    the string "1e-06"."""
    if isinstance(now, bool) or isinstance(then, bool):
        return type(now) is type(then) and now == then
    if now == then:
        return True
    try:
        return float(now) == float(then)
    except (TypeError, ValueError):
        return False


def _verify_shards(chain: dict[str, Any], shard_manifest: Path) -> list[str]:
    if not shard_manifest.is_file():
        return [f"{shard_manifest}: missing"]
    problems = []
    if chain["data"]["shard_manifest_sha256"] not in (None, file_sha256(shard_manifest)):
        problems.append(f"{shard_manifest}: sha256 differs from the recorded shard manifest")
    manifest = json.loads(shard_manifest.read_text())
    for split in manifest.get("splits", {}).values():
        for shard in split["shards"]:
            path = shard_manifest.parent / shard["path"]
            if not path.is_file():
                problems.append(f"{path}: shard missing")
            elif file_sha256(path) != shard["sha256"]:
                problems.append(f"{path}: sha256 differs from the shard manifest (tampered or corrupt)")
    return problems


def _verify_model_folder(chain: dict[str, Any], model_dir: Path | None) -> list[str]:
    recorded = chain.get("model_sha256")
    if model_dir is None or not recorded:
        return []
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        return [f"{weights}: missing"]
    return [] if file_sha256(weights) == recorded else [f"{weights}: sha256 differs from the registered model's"]


def _verify_registered_weights(chain: dict[str, Any], tracking: TrackingParams) -> list[str]:
    recorded = chain.get("model_sha256")
    if not recorded:
        return []
    uri = f"models:/{chain['model']}/{chain['version']}"
    name = chain.get("weights_file") or WEIGHTS
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = sorted(download(uri, Path(tmp), tracking).rglob(name))
        except Exception as exc:  # any failure to read them is a finding, not a crash
            return [f"{uri}: artifacts unreadable ({exc})"]
        if not found:
            return [f"{uri}: no {name} in its artifacts"]
        return ([] if file_sha256(found[0]) == recorded
                else [f"{uri}: registered weights differ from their recorded sha256"])


def _external_text(chain: dict[str, Any]) -> list[str]:
    lines = ["  external model (not trained by this pipeline)",
             f"  source         {chain['external']['source']}",
             f"  weights        {chain['weights_file']}  sha256 {chain['model_sha256']}",
             f"  config         {chain['external']['config']}",
             f"  evaluated in   run {chain['run_id']} on the test split of shard manifest "
             f"sha256 {chain['data']['shard_manifest_sha256']}"]
    if chain["metrics"]:
        lines.append("  metrics")
        lines += [f"    {k}  {v}" for k, v in chain["metrics"].items()]
    return lines


def lineage_text(chain: dict[str, Any]) -> str:
    if chain.get("kind") == "external":
        head = f"{chain['model']} version {chain['version']}" + (
            f"  [{', '.join(chain['aliases'])}]" if chain["aliases"] else "")
        return "\n".join([head, *_external_text(chain), *_promotion_lines(chain)]) + "\n"
    lines = [f"{chain['model']} version {chain['version']}"
             + (f"  [{', '.join(chain['aliases'])}]" if chain["aliases"] else ""),
             f"  run            {chain['run_id']}",
             f"  git commit     {chain['git']['commit']} (dirty: {chain['git']['dirty']})",
             *([f"  data commit    {chain['git']['data_commit']} on {chain['git']['data_branch']} "
                "(data.dvc, dvc.lock as registered)"] if chain["git"].get("data_commit") else []),
             f"  params         sha256 {chain['params']['sha256']}  "
             f"{json.dumps(chain['params']['recipe'], sort_keys=True)}",
             f"  data version   {chain['data']['version']} (data.dvc)",
             f"  manifest       md5 {chain['data']['manifest_md5']}",
             f"  validation     sha256 {chain['data']['validation_sha256']}",
             f"  shards         manifest sha256 {chain['data']['shard_manifest_sha256']}",
             f"  model weights  sha256 {chain['model_sha256']}",
             f"  dvc.lock       sha256 {chain['dvc_lock']['sha256']}"]
    for name, stage in chain["dvc_lock"]["stages"].items():
        lines.append(f"    stage {name}")
        lines += [f"      dep {path}  {md5}" for path, md5 in stage["deps"].items()]
        lines += [f"      out {path}  {md5}" for path, md5 in stage["outs"].items()]
    if chain["metrics"]:
        lines.append("  metrics")
        lines += [f"    {k}  {v}" for k, v in chain["metrics"].items()]
    if chain["flow_runs"]:
        lines.append("  Prefect flow runs")
        lines += [f"    {k}  {v}" for k, v in sorted(chain["flow_runs"].items())]
    if found := chain.get("search_index"):
        whose = "these weights" if found["this_version"] else "another model's weights"
        lines.append(f"  search index   {found['folder']}: {found['vectors']} vectors from {whose} ({found['model']}, "
                     f"sha256 {found['model_sha256']}), embeddings sha256 {found['embeddings_sha256']}")
    return "\n".join([*lines, *_promotion_lines(chain)]) + "\n"


def _promotion_lines(chain: dict[str, Any]) -> list[str]:
    lines = ["  promotion history" if chain["promotions"] else "  promotion history: none"]
    for d in chain["promotions"]:
        lines.append(f"    {d['time']}  {d['action']} v{d['version']}  promoted={d['promoted']}  by {d.get('actor')}"
                     + (f"  ({d.get('why') or d.get('reason')})" if d.get("why") or d.get("reason") else ""))
    return lines
