"""The MLflow model registry: register a trained model, and the facts every decision reads.

- `register`: logs the trained model as a pyfunc (models from code, safetensors weights: no
  pickle) into the training's MLflow run, registers a version tagged with its lineage, and points
  alias `challenger` at it. The same model (same weights digest, same run) registers once.
- `decisions`: the JSON-lines decision log that promotions and rollbacks append to
  (`register.promotion`), and the helpers they share: the aliases, `champion_version`,
  `tag_version`, the pyfunc logging and the registered model's creation (`register.external`,
  `register.carry_over`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from biomedclip.register.lineage_facts import PREFIX
from biomedclip.register.params import RegisterParams
from biomedclip.tracking import TrackingParams, connect, workspace_run

log = logging.getLogger(__name__)

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
CHAMPION, CHALLENGER, BASELINE = "champion", "challenger", "baseline"
REQUIREMENTS = ("torch", "torchvision", "open_clip_torch", "transformers", "timm", "safetensors",
                "pillow", "pandas", "numpy", "mlflow")


class RegistryError(RuntimeError):
    """A registry action that cannot be done (names the model, version or alias)."""


def pinned_requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins


def _signature():
    from mlflow.models.signature import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image", required=False), ColSpec("string", "text", required=False)]),
        params=ParamSchema([ParamSpec("class_names", "string", ["chest X-ray"], (-1,)),
                            ParamSpec("templates", "string", ["this is an image of {}"], (-1,))]))


def _input_example(model_dir: Path):
    import base64
    import io

    import pandas as pd
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buffer, format="JPEG")
    return pd.DataFrame({"image": [base64.b64encode(buffer.getvalue()).decode()],
                         "text": ["chest X-ray showing bilateral opacities"]})


def log_pyfunc(model_dir: Path) -> str:
    """Log the model folder as the pyfunc into the active run; returns the logged model's URI."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="biomedclip", python_model=str(PYFUNC_CODE), artifacts={"open_clip": str(model_dir)},
        signature=_signature(), input_example=_input_example(model_dir),
        pip_requirements=pinned_requirements()).model_uri


def create_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(name, description="BiomedCLIP: CLIP pretrained on PMC figure-caption pairs")


def aliased_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(params: RegisterParams, tracking: TrackingParams) -> int | None:
    """The version the `champion` alias points at, None when there is none."""
    champion = aliased_version(connect(tracking), params.model_name, CHAMPION)
    return int(champion.version) if champion is not None else None


def tag_version(params: RegisterParams, tracking: TrackingParams, version: int, tags: dict[str, str]) -> None:
    """Add lineage tags (`biomedclip.<key>`) to a registered version."""
    client = connect(tracking)
    for key, value in tags.items():
        client.set_model_version_tag(params.model_name, str(version), f"biomedclip.{key}", value)


def register(params: RegisterParams, tracking: TrackingParams, *, train_info: dict[str, Any],
             lineage: dict[str, str], dvc_lock: Path | None = None) -> dict[str, Any]:
    """Register the trained model with its lineage; returns {name, version, uri, created}.

    Idempotent: the same model (weights digest and training run) from the same inputs (the
    `biomedclip.lineage.key` tag) is the version already there. The same model with a new
    lineage (e.g. measured by a new evaluation run) becomes a new version of the model already
    logged: no second upload of the weights."""
    import mlflow

    client = connect(tracking)
    name, run_id = params.model_name, train_info.get("mlflow_run_id")
    if not run_id:
        raise RegistryError("the training run has no MLflow run id (tracking was off): train with "
                            "tracking.enabled to register")
    run_id = workspace_run(client, run_id, recorded_in="the training run")
    create_registered_model(client, name)
    model_sha, key = train_info["model_sha256"], lineage.get(f"{PREFIX}lineage.key")
    same_model = [v for v in client.search_model_versions(f"name='{name}'")
                  if v.tags.get(f"{PREFIX}model.sha256") == model_sha and v.run_id == run_id]
    for existing in same_model:
        if key and existing.tags.get(f"{PREFIX}lineage.key") == key:
            log.info("%s version %s already holds this model and lineage: nothing to register", name, existing.version)
            return {"name": name, "version": int(existing.version), "uri": f"models:/{name}/{existing.version}",
                    "created": False, "aliases": sorted(getattr(existing, "aliases", []) or [])}
    tags = dict(lineage)
    with mlflow.start_run(run_id=run_id):
        if dvc_lock is not None and dvc_lock.is_file():
            folder = f"lineage/{(key or 'unkeyed')[:16]}"  # one per lineage: versions of one run keep theirs
            mlflow.log_artifact(str(dvc_lock), folder)
            tags[f"{PREFIX}lineage.dvc_lock"] = f"{folder}/{dvc_lock.name}"
        # Logged already: a new version of that logged model (`models:/<model_id>`).
        source = same_model[0].source if same_model else log_pyfunc(Path(train_info["model_dir"]))
    registered = mlflow.register_model(source, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, registered.version)
    log.info("registered %s version %s (alias %s)", name, registered.version, CHALLENGER)
    return {"name": name, "version": int(registered.version), "uri": f"models:/{name}/{registered.version}",
            "created": True, "aliases": [CHALLENGER]}


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _append(log_path: Path, record: dict[str, Any]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def decisions(log_path: Path) -> list[dict[str, Any]]:
    if not log_path.is_file():
        return []
    return [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]


def record_decision(client, params: RegisterParams, record: dict[str, Any]) -> dict[str, Any]:
    stamp = dt.datetime.fromisoformat(record["time"]).strftime("%Y%m%dT%H%M%S%fZ")
    client.set_model_version_tag(params.model_name, str(record["version"]), f"biomedclip.decision.{stamp}",
                                 json.dumps({k: record[k] for k in ("action", "promoted", "why", "actor", "reason")
                                             if k in record})[:5000])
    _append(params.decision_log, record)
    return record


