"""Collect the facts a registered version is tagged with: where its code, data and params came
from, digests of every intermediate product, and the Prefect flow runs that made them."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import yaml

from biomedclip.digests import file_sha256

log = logging.getLogger(__name__)
STAGE_FLOWS = ("ingest", "validate", "shard", "tokenizer", "train", "evaluate")


def git_state(root: Path = Path(".")) -> dict[str, str]:
    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or "unknown", "dirty": str(bool(dirty)).lower()}


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


def flow_run_ids() -> dict[str, str]:
    """The newest completed Prefect flow run of each stage, from the Prefect API in use (the
    project's embedded server's database, or PREFECT_API_URL)."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowFilter,
            FlowFilterName,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.sorting import FlowRunSort
    except ImportError:
        return {}
    found: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name in STAGE_FLOWS:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1)
            if runs:
                found[name] = str(runs[0].id)
    return found


def collect(*, params_path: Path, train_info: dict[str, Any], validate_result: Path, shard_manifest: Path,
            eval_metrics: Path | None, lock: Path = Path("dvc.lock"), data_dvc: Path = Path("data.dvc"),
            with_flow_runs: bool = True) -> dict[str, str]:
    """The lineage tags of a version (strings, as MLflow tags are)."""
    outputs = lock_outputs(lock)
    manifest_md5 = next((md5 for path, md5 in outputs.get("ingest", {}).items() if path.endswith("pairs.parquet")), "")
    tags = {
        "git.commit": git_state()["commit"], "git.dirty": git_state()["dirty"],
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
    }
    if with_flow_runs:
        try:
            tags.update({f"prefect.flow_run.{k}": v for k, v in flow_run_ids().items()})
        except Exception as exc:  # lineage still registers without the orchestrator's history
            log.warning("could not read Prefect flow runs: %s", exc)
    if eval_metrics is not None and eval_metrics.is_file():
        metrics = json.loads(eval_metrics.read_text())
        for key, value in flatten_metrics(metrics).items():
            tags[f"eval.{key}"] = f"{value:.6g}"
    return {f"biomedclip.{k}": v for k, v in tags.items()}


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
    return flat
