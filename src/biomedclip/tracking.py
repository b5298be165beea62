"""MLflow access, in one place: which store, whether it answers, the client, and the trainer's tracker.

The tracking URI is MLFLOW_TRACKING_URI when set (a server: PostgreSQL + S3 in production), else
`tracking.uri` (embedded: `sqlite:///mlflow.db` beside the project). Every module that talks
to MLflow (the registry, lineage, model loading, evaluation logging, the trainer) gets its client
through `connect`, which fails in seconds naming an unreachable store.

Training runs the same with tracking off, and only rank 0 tracks. It never waits on the tracking
server: step metrics go into a buffer that a thread sends in batches. A send that fails (the
server restarting, the network gone) keeps its metrics and is retried, so an outage neither stalls
the GPUs nor loses a point of the curves.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from biomedclip.config import Section

log = logging.getLogger(__name__)


class TrackingParams(Section):
    """MLflow: on by default; the tracking URI comes from MLFLOW_TRACKING_URI, else `uri`."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "biomedclip"
    system_metrics: bool = True


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


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached (at start), or stayed unreachable past the final flush."""


def tracking_uri(params: TrackingParams) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or params.uri


def _userinfo(uri: str, *, keep_user: bool) -> str:
    """`uri` with its password hidden (keep_user) or its whole user:password@ removed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None:
        return uri
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    user = (f"{parts.username}:***@" if parts.password is not None else f"{parts.username}@") if keep_user else ""
    return urlunsplit(parts._replace(netloc=user + host))


def _redacted(uri: str) -> str:
    return _userinfo(uri, keep_user=True)


def without_credentials(uri: str) -> str:
    """`uri` with any user:password@ removed: safe to log, tag or record."""
    return _userinfo(uri, keep_user=False)


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds, naming the store (password hidden), where MLflow's client would retry for
    minutes and then print a traceback: a server by its /health, a database by one connection."""
    scheme = uri.split(":", 1)[0].split("+")[0].lower()
    try:
        if scheme in ("http", "https"):
            import contextlib
            import urllib.error
            import urllib.request

            # An HTTP error is an answer: what it says (auth, a proxy's 404) is for the real request.
            with contextlib.suppress(urllib.error.HTTPError):
                plain = without_credentials(uri)  # credentials travel as a header, not here
                urllib.request.urlopen(f"{plain.rstrip('/')}/health", timeout=timeout_s).close()
        elif scheme in ("postgresql", "mysql", "mssql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": int(timeout_s)}
                                              if scheme in ("postgresql", "mysql") else {})
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        else:
            return  # a file store or sqlite: nothing to reach
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or getattr(exc, "reason", None) or exc).strip().splitlines()[0]
        raise TrackingUnavailable(f"MLflow tracking store {_redacted(uri)} is unreachable: {reason}") from None


def connect(params: TrackingParams):
    """The MLflow client of the configured store, checked reachable. This process's MLflow points
    at the same store, so `models:/` and `runs:/` URIs and MLflow's fluent API resolve against it.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which `tracking_uri` reads as the
    user's choice: a later `connect` to another store would silently get this one, and so would
    every child process. The export is undone: the variable stays what the user made it."""
    import mlflow

    uri = tracking_uri(params)
    check_reachable(uri)
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


# -- looking things up ---------------------------------------------------------------------------
class NotInStore(LookupError):
    """A registered model, version, alias or run the store does not hold: the message names it,
    the store, and what the store does hold."""


REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))(?:/.*)?$")
CARRIED_FROM = "biomedclip.carried_from.run_id"  # on a run copied from another store: its old id
CARRY_OVER_HINT = ("this workspace's runs and models are in another store (the embedded sqlite:///mlflow.db "
                   "until you set MLFLOW_TRACKING_URI): carry them over with `biomedclip carry-over`")


def store_name(client: Any) -> str:
    return _redacted(str(client.tracking_uri))


def _absent(exc: Exception) -> bool:
    """MLflow's answer for a missing resource: RESOURCE_DOES_NOT_EXIST, or, from a server with
    authentication, PERMISSION_DENIED (its permission check looks the resource up first)."""
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED", "NOT_FOUND")


def _numbers(values: list[int]) -> str:
    """1, 2, 5-9: a list of version numbers as a person reads it."""
    spans: list[list[int]] = []
    for v in sorted(values):
        if spans and v == spans[-1][1] + 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans) or "none"


def model_version(client: Any, uri: str) -> Any:
    """The registered version `models:/NAME@ALIAS` or `models:/NAME/N` names; `NotInStore`, in one
    line naming what exists (the model's versions and aliases, or the registered models), when the
    store does not hold it."""
    from mlflow.exceptions import MlflowException

    match = REGISTERED.match(uri)
    if match is None:
        raise ValueError(f"{uri!r} is not a registered model (models:/NAME@ALIAS or models:/NAME/N)")
    name = match["name"]
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if not _absent(exc):
            raise
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        # An empty store, or a server the user pointed at: the workspace's models may be in its embedded store.
        hint = f"; {CARRY_OVER_HINT}" if not names or os.environ.get("MLFLOW_TRACKING_URI") else ""
        raise NotInStore(f"{uri}: {store_name(client)} has no registered model {name!r} (registered models: "
                         f"{', '.join(names) or 'none'}){hint}") from None
    aliases = dict(getattr(registered, "aliases", {}) or {})
    versions = [int(v.version) for v in client.search_model_versions(f"name='{name}'")]
    held = (f"versions: {_numbers(versions)}; aliases: "
            + (", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"))
    if match["alias"]:
        if match["alias"] not in aliases:
            raise NotInStore(f"{uri}: {name} has no alias {match['alias']!r} ({held})")
        number = int(aliases[match["alias"]])
    else:
        number = int(match["version"])
    if number not in versions:
        raise NotInStore(f"{uri}: {name} has no version {number} ({held})")
    return client.get_model_version(name, str(number))


def find_run(client: Any, run_id: str) -> Any | None:
    """The run `run_id`, or the run carried over from it (`biomedclip carry-over`); None when the
    store holds neither. A server with authentication answers a missing run with 403: a search of
    the experiments the user can read tells "missing" from "denied"."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if not _absent(exc):
            raise
    experiments = [e.experiment_id for e in client.search_experiments(max_results=1000)]
    for chunk in range(0, len(experiments), 100):
        found = client.search_runs(experiments[chunk:chunk + 100], max_results=1,
                                   filter_string=f"tags.`{CARRIED_FROM}` = '{run_id}'")
        if found:
            return found[0]
    return None


def workspace_run(client: Any, run_id: str, *, recorded_in: str) -> str:
    """The store's id of the run this workspace recorded (`recorded_in` says where): itself, or the
    run carried over from it; `NotInStore` naming it and how to carry it over when neither exists."""
    run = find_run(client, run_id)
    if run is None:
        raise NotInStore(f"MLflow run {run_id} ({recorded_in}) is not in {store_name(client)}: {CARRY_OVER_HINT}")
    return run.info.run_id


def held(artifact_uri: str, params: TrackingParams) -> str:
    """`artifact_uri` as the store in use holds it (a `runs:/` URI rewritten to the run carried
    over from it); `NotInStore`, in one line, for a model, version, alias or run it does not hold.
    Other URIs are returned as given. Commands that take several models check them all first."""
    if artifact_uri.startswith("models:/") and REGISTERED.match(artifact_uri):
        model_version(connect(params), artifact_uri)
    elif artifact_uri.startswith("runs:/"):
        run_id = artifact_uri.removeprefix("runs:/").split("/", 1)[0]
        found = workspace_run(connect(params), run_id, recorded_in=artifact_uri)
        artifact_uri = artifact_uri.replace(run_id, found, 1)
    return artifact_uri


def download(artifact_uri: str, destination: Path, params: TrackingParams) -> Path:
    """Download `models:/...`, `runs:/...` or `mlflow-artifacts:/...` into `destination`; a model,
    version, alias or run the store does not hold is `NotInStore`, in one line."""
    import mlflow

    artifact_uri = held(artifact_uri, params)
    log.info("downloading %s", artifact_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination)))


def new_run(params: TrackingParams, run_name: str, tags: dict[str, str]) -> str:
    """A new run in the configured experiment (created when missing); returns its id."""
    client = connect(params)
    experiment = client.get_experiment_by_name(params.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(params.experiment)
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def log_evaluation(run_id: str, params: TrackingParams, metrics: dict[str, float],
                   files: list[tuple[Path, str]]) -> None:
    """An evaluation into an existing run: its numbers as metrics, its outputs as artifacts
    (`files`: (local file or folder, artifact folder))."""
    from mlflow.entities import Metric

    client = connect(params)
    stamp = int(time.time() * 1000)  # one request (MLflow's client splits at its batch limit), not one per number
    client.log_batch(run_id, metrics=[Metric(key, float(value), stamp, 0) for key, value in metrics.items()],
                     synchronous=True)
    for path, folder in files:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), folder)
        else:
            client.log_artifact(run_id, str(path), folder)
    log.info("logged the evaluation into MLflow run %s", run_id)


class MetricBuffer:
    """Metrics handed over at once, sent by a background thread; failed sends are retried."""

    BATCH = 1000  # MLflow's limit on metrics per log_batch

    def __init__(self, client, run_id: str, *, interval_s: float = 2.0) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.pending: list = []
        self.lock = threading.Lock()
        self.failing_since: float | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mlflow-metrics", daemon=True)
        self.thread.start()

    def add(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        with self.lock:
            self.pending.extend(Metric(key, float(value), stamp, step) for key, value in metrics.items())

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval_s):
            self.send()

    def send(self) -> bool:
        """Send what is pending, oldest first; False when the server could not be reached."""
        while True:
            with self.lock:
                batch = self.pending[: self.BATCH]
            if not batch:
                return True
            try:
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as error:  # any failure: keep the metrics, try again later
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("MLflow unreachable (%s): buffering metrics, training continues",
                                str(error).splitlines()[0][:200])
                return False
            with self.lock:
                del self.pending[: len(batch)]
            if self.failing_since is not None:
                log.warning("MLflow reachable again after %.0f s: buffered metrics sent",
                            time.monotonic() - self.failing_since)
                self.failing_since = None

    def close(self, timeout_s: float) -> int:
        """Stop the thread and send the rest, retrying until `timeout_s`; returns the unsent count."""
        self.stopping.set()
        self.thread.join()
        deadline = time.monotonic() + timeout_s
        while not self.send() and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        with self.lock:
            return len(self.pending)


class MlflowTracker(Tracker):
    FLUSH_TIMEOUT_S = 600.0  # how long the end of training waits for an unreachable server

    def __init__(self, params: TrackingParams) -> None:
        import mlflow

        self.mlflow = mlflow
        self.params = params
        connect(params)
        mlflow.set_experiment(params.experiment)
        log.info("MLflow tracking at %s, experiment %s", _redacted(tracking_uri(params)), params.experiment)

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
        self.buffer = MetricBuffer(mlflow.MlflowClient(), self.run_id)
        if run_id is None:  # a resumed run keeps the params it started with
            flat: dict[str, str] = {}
            _flatten("", params, flat)
            mlflow.log_params(flat)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.buffer.add(metrics, step)

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
        buffer, self.buffer = getattr(self, "buffer", None), None
        failed = status != "FINISHED"  # a failing run does not wait long on top of its own error
        timeout = 30.0 if failed else self.FLUSH_TIMEOUT_S
        unsent = buffer.close(timeout) if buffer else 0
        if unsent:
            message = (f"MLflow at {self.mlflow.get_tracking_uri()} unreachable for {timeout:.0f} s "
                       f"at the end of training: {unsent} metric values of run {self.run_id} not sent "
                       "(the loss curve is in the training outputs)")
            if not failed:
                raise TrackingUnavailable(message)
            log.error(message)
        self.mlflow.end_run(status=status)


def tracker(params: TrackingParams, *, is_main: bool) -> Tracker:
    return MlflowTracker(params) if params.enabled and is_main else Tracker()
