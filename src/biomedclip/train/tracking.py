"""MLflow, in one place and only when enabled: training runs the same with tracking off.

The tracking URI is MLFLOW_TRACKING_URI when set (a server: PostgreSQL + S3 in production), else
`train.tracking.uri` (embedded: `sqlite:///mlflow.db` beside the project). Only rank 0 tracks.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from biomedclip.config import TrackingParams

log = logging.getLogger(__name__)


class Tracker:
    """No-op unless started: the trainer calls it unconditionally."""

    run_id: str | None = None

    def start(self, run_id: str | None, run_name: str, params: dict[str, Any]) -> str | None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_input(self, name: str, digest: str, source: str, context: str, profile: dict) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = str(value)[:6000]  # MLflow's limit on a param value


class MlflowTracker(Tracker):
    def __init__(self, params: TrackingParams) -> None:
        import mlflow

        self.mlflow = mlflow
        self.params = params
        uri = os.environ.get("MLFLOW_TRACKING_URI") or params.uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(params.experiment)
        log.info("MLflow tracking at %s, experiment %s", uri, params.experiment)

    def start(self, run_id: str | None, run_name: str, params: dict[str, Any]) -> str | None:
        mlflow = self.mlflow
        if run_id is not None:
            from mlflow.exceptions import MlflowException

            try:
                mlflow.get_run(run_id)
            except MlflowException:  # the tracking store was reset or moved since the checkpoint
                log.warning("MLflow run %s of the checkpoint is gone from %s: continuing in a new run",
                            run_id, mlflow.get_tracking_uri())
                run_id = None
        if self.params.system_metrics:
            mlflow.enable_system_metrics_logging()
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        self.run_id = run.info.run_id
        if run_id is None:  # a resumed run keeps the params it started with
            flat: dict[str, str] = {}
            _flatten("", params, flat)
            mlflow.log_params(flat)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_input(self, name: str, digest: str, source: str, context: str, profile: dict) -> None:
        import pandas as pd

        frame = pd.DataFrame([{"split": split, **values} for split, values in profile.items()])
        with warnings.catch_warnings():  # MLflow's hint about integer columns (counts never miss)
            warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*interpreted in multiple ways", category=UserWarning)
            dataset = self.mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
            self.mlflow.log_input(dataset, context=context)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        self.mlflow.log_figure(figure, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def finish(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def tracker(params: TrackingParams, *, is_main: bool) -> Tracker:
    return MlflowTracker(params) if params.enabled and is_main else Tracker()
