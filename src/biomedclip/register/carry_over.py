"""`biomedclip carry-over`: a workspace's MLflow runs and registered versions, from the store they
were made in (the embedded `sqlite:///mlflow.db`, where every workspace starts) to the store
`tracking` names now (a team server: PostgreSQL + S3, authentication on).

What moves: every version of `register.model_name` in the source store, oldest first (a server
that holds none yet numbers them as the workspace did, so the decision log's version numbers stay
true), each with its tags (lineage, evaluation, decisions), its model (the pyfunc, logged again
into the copy of its run) and its aliases; the run behind each version and the workspace's training
run (`data/train/run.json`): params, the whole history of every metric, tags, dataset inputs and
artifacts (the loss curve, the evaluation, the lineage's `dvc.lock`). A copy carries its source's id
(`biomedclip.carried_from.run_id`, `...carried_from.version`): the workspace's records, which name
the old ids, resolve on the new store (`tracking.workspace_run`), and a second carry-over copies
only what is missing. The decision log (`registry/decisions.jsonl`) is a file in git and stays.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomedclip.models import find_model_folder
from biomedclip.register.params import RegisterParams
from biomedclip.register.registry import RegistryError, create_registered_model, log_pyfunc
from biomedclip.tracking import (
    CARRIED_FROM,
    TrackingParams,
    check_reachable,
    connect,
    find_run,
    store_name,
    tracking_uri,
)

log = logging.getLogger(__name__)
CARRIED_VERSION = "biomedclip.carried_from.version"  # on a version copied from another store
CARRIED_STORE = "biomedclip.carried_from.store"
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch


@dataclass
class CarryReport:
    source: str
    destination: str
    runs: dict[str, str] = field(default_factory=dict)  # old run id -> its copy's id
    copied_runs: int = 0  # copied by this call (the rest were carried already)
    versions: dict[int, int] = field(default_factory=dict)  # old version -> new version
    copied_versions: int = 0
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> new version

    def markdown(self) -> str:
        lines = [f"## Carried over from `{self.source}` to `{self.destination}`", "",
                 f"{len(self.runs)} run(s) ({self.copied_runs} copied now), {len(self.versions)} version(s) "
                 f"({self.copied_versions} copied now).", "", "| run here | run there |", "|---|---|"]
        lines += [f"| `{old}` | `{new}` |" for old, new in self.runs.items()]
        if self.versions:
            lines += ["", "| version here | version there | aliases |", "|---:|---:|---|"]
            by_version: dict[int, list[str]] = {}
            for alias, version in self.aliases.items():
                by_version.setdefault(version, []).append(alias)
            lines += [f"| {old} | {new} | {', '.join(sorted(by_version.get(new, []))) or ''} |"
                      for old, new in self.versions.items()]
        return "\n".join(lines) + "\n"


def carry_over(source_uri: str, params: RegisterParams, tracking: TrackingParams, *,
               workspace_run_id: str | None = None) -> CarryReport:
    """Copy the runs and versions described in the module into the store `tracking` names."""
    import mlflow

    check_reachable(source_uri)
    src = mlflow.MlflowClient(tracking_uri=source_uri, registry_uri=source_uri)
    dst = connect(tracking)
    if tracking_uri(tracking) == source_uri:
        raise RegistryError(f"the store in use is {store_name(dst)} already: set MLFLOW_TRACKING_URI (or "
                            "tracking.uri) to the store to carry the workspace over to")
    report = CarryReport(store_name(src), store_name(dst))
    name = params.model_name
    versions = sorted(src.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    run_ids = list(dict.fromkeys([r for r in (workspace_run_id, *(v.run_id for v in versions)) if r]))
    for run_id in run_ids:
        report.runs[run_id] = _carry_run(src, dst, run_id, source_uri, report)
    if versions:
        create_registered_model(dst, name)
        carried = {v.tags.get(CARRIED_VERSION): int(v.version) for v in dst.search_model_versions(f"name='{name}'")}
        for version in versions:
            key = f"{source_uri}#{version.version}"
            if key in carried:
                report.versions[int(version.version)] = carried[key]
                continue
            report.versions[int(version.version)] = _carry_version(src, dst, version, report.runs[version.run_id],
                                                                   key)
            report.copied_versions += 1
        for alias, version in (getattr(src.get_registered_model(name), "aliases", {}) or {}).items():
            report.aliases[alias] = report.versions[int(version)]
            dst.set_registered_model_alias(name, alias, str(report.aliases[alias]))
        moved = {old: new for old, new in report.versions.items() if old != new}
        if moved:
            log.warning("the destination numbers some versions differently (%s): registry/decisions.jsonl "
                        "names the workspace's numbers", ", ".join(f"{a} -> {b}" for a, b in moved.items()))
    log.info("carried %d run(s) and %d version(s) to %s", report.copied_runs, report.copied_versions,
             report.destination)
    return report


def _carry_run(src: Any, dst: Any, run_id: str, source_uri: str, report: CarryReport) -> str:
    """The copy of run `run_id` in `dst` (made now unless it exists); its id."""
    from mlflow.entities import Metric, Param, RunTag

    existing = find_run(dst, run_id)
    if existing is not None and existing.info.run_id != run_id:
        return existing.info.run_id
    if existing is not None:  # the same id: the same store under another URI
        return run_id
    run = src.get_run(run_id)
    experiment = src.get_experiment(run.info.experiment_id).name
    there = dst.get_experiment_by_name(experiment)
    experiment_id = there.experiment_id if there else dst.create_experiment(experiment)
    tags = {**run.data.tags, CARRIED_STORE: store_name(src)}
    tags.pop("mlflow.runName", None)
    copy = dst.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name,
                          tags={k: v for k, v in tags.items() if not k.startswith("mlflow.log-model")})
    new_id = copy.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), BATCH_PARAMS):
        dst.log_batch(new_id, params=params[i:i + BATCH_PARAMS])
    history = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
               for m in src.get_metric_history(run_id, key)]
    for i in range(0, len(history), BATCH_METRICS):
        dst.log_batch(new_id, metrics=history[i:i + BATCH_METRICS])
    if run.inputs and run.inputs.dataset_inputs:
        dst.log_inputs(new_id, datasets=list(run.inputs.dataset_inputs))
    with tempfile.TemporaryDirectory(prefix="biomedclip-carry-") as tmp:
        local = Path(src.download_artifacts(run_id, "", tmp))
        if any(local.iterdir()):
            dst.log_artifacts(new_id, str(local))
    dst.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    dst.log_batch(new_id, tags=[RunTag(CARRIED_FROM, run_id)])  # last: a half-copied run is not "carried"
    report.copied_runs += 1
    log.info("run %s -> %s (%s, %d metric points)", run_id, new_id, experiment, len(history))
    return new_id


def _carry_version(src: Any, dst: Any, version: Any, run_id: str, key: str) -> int:
    """Register version `version`'s model again, logged into run `run_id` of `dst`; its number there."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="biomedclip-carry-model-") as tmp:
        uri = src.get_model_version_download_uri(version.name, version.version)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        with mlflow.start_run(run_id=run_id):
            logged = log_pyfunc(find_model_folder(local))
    tags = {**version.tags, CARRIED_VERSION: key}
    registered = mlflow.register_model(logged, version.name, tags=tags)
    if version.description:
        dst.update_model_version(version.name, registered.version, description=version.description)
    log.info("%s version %s -> %s", version.name, version.version, registered.version)
    return int(registered.version)
