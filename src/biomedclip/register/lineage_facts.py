"""Collect the facts a registered version is tagged with: where its code, data and params came
from, digests of every intermediate product, and the Prefect flow runs that made them (read from
the stages' own records beside their outputs: `biomedclip.provenance`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from biomedclip.digests import file_sha256
from biomedclip.git import workspace_state

PREFIX = "biomedclip."
# Tags that say where and when a version was registered, not what it is built from: two
# registrations of the same model from the same inputs differ only in these.
CIRCUMSTANCES = ("git.commit", "git.dirty", "params.sha256", "dvc_lock.sha256", "prefect.flow_run.register",
                 "lineage.key", "lineage.dvc_lock")


def data_version(data_dvc: Path = Path("data.dvc")) -> str:
    try:
        return yaml.safe_load(data_dvc.read_text())["outs"][0]["md5"]
    except (OSError, KeyError, IndexError, TypeError):
        return "unknown"


def lock_outputs(lock: Path = Path("dvc.lock")) -> dict[str, dict[str, str]]:
    """Per stage, its outputs' recorded hashes: {stage: {path: md5}}."""
    try:
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
    except (OSError, AttributeError):
        return {}
    return {name: {o["path"]: o.get("md5", "") for o in stage.get("outs", [])} for name, stage in stages.items()}


def collect(*, params_path: Path, train_info: dict[str, Any], validate_result: Path, shard_manifest: Path,
            eval_metrics: Path | None, flow_runs: dict[str, str], lock: Path = Path("dvc.lock"),
            data_dvc: Path = Path("data.dvc")) -> dict[str, str]:
    """The lineage tags of a version (strings, as MLflow tags are). `flow_runs` maps each stage's
    flow to the flow run that produced its outputs (`provenance.flow_run_ids`), plus `register`
    for the run registering it, when there is one."""
    outputs = lock_outputs(lock)
    manifest_md5 = next((md5 for path, md5 in outputs.get("ingest", {}).items() if path.endswith("pairs.parquet")), "")
    git = workspace_state()
    tags = {
        "git.commit": git["commit"], "git.dirty": git["dirty"],
        "data.version": data_version(data_dvc),
        "manifest.md5": manifest_md5 or "unknown",
        "validation.sha256": file_sha256(validate_result) if validate_result.is_file() else "missing",
        "shards.manifest_sha256": file_sha256(shard_manifest) if shard_manifest.is_file() else "missing",
        "dvc_lock.sha256": file_sha256(lock) if lock.is_file() else "missing",
        "params.sha256": file_sha256(params_path),
        "mlflow.run_id": train_info.get("mlflow_run_id") or "",
        "model.sha256": train_info["model_sha256"],
        "train.digest": train_info.get("digest", ""),
        "profile": train_info.get("profile", ""),
        **{f"prefect.flow_run.{flow}": run_id for flow, run_id in flow_runs.items()},
    }
    if eval_metrics is not None and eval_metrics.is_file():
        metrics = json.loads(eval_metrics.read_text())
        for key, value in flatten_metrics(metrics).items():
            tags[f"eval.{key}"] = f"{value:.6g}"
    tags["lineage.key"] = lineage_key(tags)
    return {f"{PREFIX}{k}": v for k, v in tags.items()}


def external_tags(*, source: str, weights: Path, sha256: str, model_cfg: dict[str, Any], run_id: str,
                  metrics: dict[str, float], shards_manifest: Path) -> dict[str, str]:
    """The lineage tags of a model trained elsewhere: where it came from and what it is, instead
    of the data and runs that built it; its evaluation, and the test split it was measured on."""
    tags = {"lineage.kind": "external", "external.source": source, "model.sha256": sha256,
            "model.weights_file": weights.name, "external.config": json.dumps(model_cfg, sort_keys=True)[:5000],
            "mlflow.run_id": run_id,
            "shards.manifest_sha256": file_sha256(shards_manifest) if shards_manifest.is_file() else "missing",
            **{f"eval.{k}": f"{v:.6g}" for k, v in metrics.items()}}
    tags["lineage.key"] = hashlib.sha256(json.dumps({"kind": "external", "model.sha256": sha256}).encode()).hexdigest()
    return {f"{PREFIX}{k}": v for k, v in tags.items()}


def lineage_key(tags: dict[str, str]) -> str:
    """What a version is built from (model, data, shards, evaluation, the flow runs that made
    each), as one digest: registering the same model from the same inputs again is the same
    version; the same weights measured by a new evaluation run are a new one."""
    facts = {k.removeprefix(PREFIX): v for k, v in tags.items()}
    kept = {k: v for k, v in facts.items() if k not in CIRCUMSTANCES}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def flatten_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Evaluation results as `retrieval/...` and `zero_shot/<benchmark>/...` numbers."""
    flat: dict[str, float] = {}
    for key, value in result.get("retrieval", {}).items():
        if isinstance(value, int | float):
            flat[f"retrieval/{key}"] = float(value)
    for name, metrics in result.get("zero_shot", {}).items():
        for key, value in metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"zero_shot/{name}/{key}"] = float(value)
    for name, fractions in result.get("linear_probe", {}).items():
        for fraction, metrics in fractions.items():
            for key, value in (metrics.items() if isinstance(metrics, dict) else ()):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    flat[f"linear_probe/{name}/{fraction}/{key}"] = float(value)
    return flat
