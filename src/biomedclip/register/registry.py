"""Register, promote, roll back: the MLflow model registry with a fair gate and a decision log.

- `register`: logs the trained model as a pyfunc (models from code, safetensors weights: no
  pickle) into the training's MLflow run, registers a version tagged with its lineage, and points
  alias `challenger` at it. The same model (same weights digest, same run) registers once.
- `promote`: re-evaluates the champion and the challenger on the challenger's test split and
  benchmarks (stored numbers are not comparable: the test set grows with PMC), then moves
  `champion` only if the primary metric improves by the margin and no guard metric drops
  beyond the tolerance (and, with `gate.reference`, the primary metric does not fall below the
  reference alias's beyond the tolerance); the first version passes. `force` with a reason overrides.
- `register_external`: registers a model trained elsewhere (Microsoft's published BiomedCLIP,
  typically, as alias `baseline`): its weights as they were published, an MLflow run holding its
  evaluation on today's test split and benchmarks, and lineage tags that say *external* (source,
  weights sha256, config) instead of training lineage. The same weights register once.
- `rollback`: moves `champion` back to the previous champion.

Every decision is recorded on the version (tags) and appended to a JSON-lines decision log.
Decisions hold a lock on the log for their whole read-decide-write, and re-check the champion
before moving it, so two promotions at once leave the aliases consistent.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock

from biomedclip.digests import file_sha256
from biomedclip.evaluate.params import EvaluateOutputs, EvaluateParams
from biomedclip.models import located, write_model_folder
from biomedclip.register.lineage_facts import PREFIX, external_tags, flatten_metrics
from biomedclip.register.params import RegisterParams
from biomedclip.tracking import TrackingParams, connect, model_version, new_run, workspace_run

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


def _log_pyfunc(model_dir: Path) -> str:
    """Log the model folder as the pyfunc into the active run; returns the logged model's URI."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="biomedclip", python_model=str(PYFUNC_CODE), artifacts={"open_clip": str(model_dir)},
        signature=_signature(), input_example=_input_example(model_dir),
        pip_requirements=pinned_requirements()).model_uri


def _create_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(name, description="BiomedCLIP: CLIP pretrained on PMC figure-caption pairs")


def _version_of(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(params: RegisterParams, tracking: TrackingParams) -> int | None:
    """The version the `champion` alias points at, None when there is none."""
    champion = _version_of(connect(tracking), params.model_name, CHAMPION)
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
    _create_registered_model(client, name)
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
        source = same_model[0].source if same_model else _log_pyfunc(Path(train_info["model_dir"]))
    registered = mlflow.register_model(source, name, tags=tags)
    client.set_registered_model_alias(name, CHALLENGER, registered.version)
    log.info("registered %s version %s (alias %s)", name, registered.version, CHALLENGER)
    return {"name": name, "version": int(registered.version), "uri": f"models:/{name}/{registered.version}",
            "created": True, "aliases": [CHALLENGER]}


def register_external(params: RegisterParams, tracking: TrackingParams, evaluate: EvaluateParams, shards_dir: Path,
                      *, source: str, alias: str = BASELINE) -> dict[str, Any]:
    """Register a model trained elsewhere (any model source) as a version with *external*
    lineage, evaluated on today's test split and benchmarks, and point `alias` at it; returns
    {name, version, uri, created, tags}. The same weights are the version already there."""
    import mlflow

    if alias in (CHAMPION, CHALLENGER):
        raise RegistryError(f"alias {alias!r} is the promotion gate's: an external model takes another "
                            f"(e.g. {BASELINE}), and `biomedclip promote --version N` if it should serve")
    client = connect(tracking)
    name = params.model_name
    _create_registered_model(client, name)
    with located(source, tracking=tracking) as files, tempfile.TemporaryDirectory(prefix="biomedclip-external-") as tmp:
        sha = file_sha256(files.weights)
        for existing in client.search_model_versions(f"name='{name}'"):
            if existing.tags.get(f"{PREFIX}lineage.kind") == "external" and \
                    existing.tags.get(f"{PREFIX}model.sha256") == sha:
                client.set_registered_model_alias(name, alias, existing.version)
                log.info("%s version %s already holds these weights (%s): alias %s", name, existing.version,
                         sha[:12], alias)
                return {"name": name, "version": int(existing.version), "uri": f"models:/{name}/{existing.version}",
                        "created": False, "tags": dict(existing.tags)}
        # A self-contained copy: the weights as published, the config in today's spelling, the
        # text tower's config and tokenizer beside them (wherever they were found).
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        text_name = files.model_cfg.get("text_cfg", {}).get("hf_model_name")
        write_model_folder(model_dir, final=model_dir, weights=files.weights, model_cfg=files.model_cfg,
                           text=files.text, text_name=text_name, preprocess_cfg=files.spec.get("preprocess_cfg"),
                           card=_external_card(files.folder, source, sha))
        run_id = new_run(tracking, f"external: {source}"[:250], {f"{PREFIX}lineage.kind": "external"})
        metrics, _ = _evaluate_uri(str(model_dir), evaluate, shards_dir, tracking, mlflow_run_id=run_id)
        tags = external_tags(source=source, weights=files.weights, sha256=sha, model_cfg=files.model_cfg,
                             run_id=run_id, metrics=metrics, shards_manifest=shards_dir / "manifest.json")
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tags(tags)
            logged = _log_pyfunc(model_dir)
    registered = mlflow.register_model(logged, name, tags=tags)
    client.set_registered_model_alias(name, alias, registered.version)
    log.info("registered %s as %s version %s (alias %s)", source, name, registered.version, alias)
    return {"name": name, "version": int(registered.version), "uri": f"models:/{name}/{registered.version}",
            "created": True, "tags": tags}


def _external_card(folder: Path, source: str, sha256: str) -> str:
    own = folder / "README.md"
    header = f"Registered from `{source}` (weights sha256 `{sha256}`), as it was published.\n\n"
    return header + (own.read_text(encoding="utf-8", errors="replace") if own.is_file() else "")


# -- decisions ---------------------------------------------------------------------------------
def _now() -> str:
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


def _record(client, params: RegisterParams, record: dict[str, Any]) -> dict[str, Any]:
    stamp = dt.datetime.fromisoformat(record["time"]).strftime("%Y%m%dT%H%M%S%fZ")
    client.set_model_version_tag(params.model_name, str(record["version"]), f"biomedclip.decision.{stamp}",
                                 json.dumps({k: record[k] for k in ("action", "promoted", "why", "actor", "reason")
                                             if k in record})[:5000])
    _append(params.decision_log, record)
    return record


def gate(champion: dict[str, float] | None, challenger: dict[str, float], params: RegisterParams,
         reference: dict[str, float] | None = None) -> tuple[bool, str]:
    """The promotion rule on flattened evaluations of the same data; (passes, why). With a
    `reference` (the `gate.reference` alias's evaluation), the challenger must also not fall below
    it on the primary metric by more than the tolerance."""
    g = params.gate
    if reference is not None:
        if g.primary not in reference or g.primary not in challenger:
            raise RegistryError(f"gate metric {g.primary} is not in the evaluation")
        shortfall = reference[g.primary] - challenger[g.primary]
        if shortfall > g.tolerance:
            return False, (f"{g.primary} {challenger[g.primary]:.4f} is {shortfall:.4f} below reference "
                           f"{g.reference} ({reference[g.primary]:.4f}), beyond tolerance {g.tolerance}")
    if champion is None:
        return True, "no champion yet: the first version passes" + (
            f"; not below reference {g.reference}" if reference is not None else "")
    missing = [k for k in (g.primary, *g.guards) if k not in challenger or k not in champion]
    if missing:
        raise RegistryError(f"gate metrics {missing} are not in the evaluation (keys look like "
                            f"{sorted(challenger)[:4]}...)")
    gain = challenger[g.primary] - champion[g.primary]
    if gain < g.min_improvement:
        return False, (f"{g.primary} {challenger[g.primary]:.4f} vs champion {champion[g.primary]:.4f}: "
                       f"gain {gain:+.4f} < required {g.min_improvement:+.4f}")
    for guard in g.guards:
        drop = champion[guard] - challenger[guard]
        if drop > g.tolerance:
            return False, (f"guard {guard} drops {drop:.4f} (challenger {challenger[guard]:.4f}, champion "
                           f"{champion[guard]:.4f}) > tolerance {g.tolerance}")
    return True, f"{g.primary} {challenger[g.primary]:.4f} vs champion {champion[g.primary]:.4f} (gain {gain:+.4f}); guards hold"


def _evaluate_uri(uri: str, evaluate: EvaluateParams, shards_dir: Path, tracking: TrackingParams, *,
                  mlflow_run_id: str | None = None) -> tuple[dict[str, float], str | None]:
    """`uri`'s flattened evaluation, and where it was reused from (None: computed now)."""
    from biomedclip.evaluate.run import evaluate as run_evaluation

    with tempfile.TemporaryDirectory(prefix="biomedclip-gate-") as tmp:
        out = Path(tmp)
        local = evaluate.model_copy(update={"outputs": EvaluateOutputs(
            metrics=out / "eval.json", plots=out / "plots", report=out / "report.md")})
        result = run_evaluation(local, model=uri, shards_dir=shards_dir, tracking=tracking,
                                mlflow_run_id=mlflow_run_id, examples=False)
        return flatten_metrics(result), result.get("reused")


def promote(params: RegisterParams, tracking: TrackingParams, evaluate: EvaluateParams, shards_dir: Path, *,
            version: int | None = None, force: bool = False, reason: str | None = None,
            actor: str | None = None) -> dict[str, Any]:
    """Run the gate for `version` (default: the challenger) and move `champion` if it passes."""
    if force and not reason:
        raise RegistryError("--force needs --reason: overrides are recorded with why")
    client = connect(tracking)
    name = params.model_name
    actor = actor or os.environ.get("BIOMEDCLIP_ACTOR") or getpass.getuser()
    lock = FileLock(str(params.decision_log) + ".lock")
    with lock:
        candidate = model_version(client, f"models:/{name}/{version}") if version else \
            _version_of(client, name, CHALLENGER)
        if candidate is None:
            raise RegistryError(f"{name} has no {CHALLENGER} alias and no --version was given: register first")
        champion = _version_of(client, name, CHAMPION)
        if champion is not None and champion.version == candidate.version:
            raise RegistryError(f"{name} version {candidate.version} is already the {CHAMPION}")
        reference = _version_of(client, name, params.gate.reference) if params.gate.reference else None
        if params.gate.reference and reference is None:
            raise RegistryError(f"register.gate.reference is {params.gate.reference!r}, an alias {name} does not "
                                f"have: `biomedclip register --model SOURCE --alias {params.gate.reference}` first")
        reused: dict[str, str] = {}

        def evaluation(role: str, version: Any) -> dict[str, float]:
            metrics, where = _evaluate_uri(f"models:/{name}/{version.version}", evaluate, shards_dir, tracking)
            if where:
                reused[role] = where
            return metrics

        challenger_metrics = evaluation("challenger", candidate)
        champion_metrics = evaluation("champion", champion) if champion is not None else None
        reference_metrics = None
        if reference is not None:
            reference_metrics = (challenger_metrics if reference.version == candidate.version else
                                 evaluation("reference", reference))
        passed, why = gate(champion_metrics, challenger_metrics, params, reference_metrics)
        promoted = passed or force
        record = {"time": _now(), "action": "promote", "model": name, "version": int(candidate.version),
                  "previous_champion": int(champion.version) if champion else None, "promoted": promoted,
                  "gate_passed": passed, "why": why, "forced": force and not passed, "reason": reason or "",
                  "actor": actor, "primary": params.gate.primary, "reused_evaluations": reused,
                  "challenger_metrics": {k: challenger_metrics[k] for k in (params.gate.primary, *params.gate.guards)
                                         if k in challenger_metrics},
                  "champion_metrics": {k: champion_metrics[k] for k in (params.gate.primary, *params.gate.guards)
                                       if champion_metrics and k in champion_metrics} or None,
                  **({"reference": params.gate.reference,
                      "reference_metrics": {params.gate.primary: reference_metrics[params.gate.primary]}}
                     if reference_metrics else {})}
        if promoted:
            now = _version_of(client, name, CHAMPION)  # nobody moved it meanwhile (another machine)
            if (now.version if now else None) != (champion.version if champion else None):
                raise RegistryError(f"{CHAMPION} moved to version {now.version if now else None} during the "
                                    "evaluation: run promote again")
            client.set_registered_model_alias(name, CHAMPION, candidate.version)
            if (c := _version_of(client, name, CHALLENGER)) is not None and c.version == candidate.version:
                client.delete_registered_model_alias(name, CHALLENGER)
        _record(client, params, record)
    log.info("%s version %s: %s (%s)", name, candidate.version, "promoted" if promoted else "not promoted", why)
    return record


def rollback(params: RegisterParams, tracking: TrackingParams, *, reason: str = "",
             actor: str | None = None) -> dict[str, Any]:
    """Move `champion` back to the champion before the current one (from the decision log)."""
    client = connect(tracking)
    name = params.model_name
    actor = actor or os.environ.get("BIOMEDCLIP_ACTOR") or getpass.getuser()
    with FileLock(str(params.decision_log) + ".lock"):
        champion = _version_of(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"{name} has no {CHAMPION} to roll back")
        history = [d for d in decisions(params.decision_log)
                   if d.get("model") == name and d.get("action") == "promote" and d.get("promoted")]
        # The promotion that made the current champion holds the one before it (so rolling back
        # twice walks back through the promotions, never forward again).
        made = next((d for d in reversed(history) if d["version"] == int(champion.version)), None)
        previous = made.get("previous_champion") if made else None
        if previous is None:
            raise RegistryError(f"{name} version {champion.version} has no previous {CHAMPION} to roll back to")
        client.set_registered_model_alias(name, CHAMPION, str(previous))
        record = {"time": _now(), "action": "rollback", "model": name, "version": int(previous),
                  "previous_champion": int(champion.version), "promoted": True, "reason": reason, "actor": actor}
        _record(client, params, record)
    log.info("%s: %s moved back from version %s to %s", name, CHAMPION, champion.version, previous)
    return record
