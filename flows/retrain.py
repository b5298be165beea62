"""Prefect flow `retrain`: pick up what PMC added, re-run only what must, promote only a better model.

One retrain holds the workspace at a time (a file lock; a busy workspace skips or waits, as
`retrain.on_busy` says). Then, each step a task, named in the error if it fails:

1. sync        new, changed and removed article versions from `retrain.source` into
               `ingest.source` (retried on transient errors; nothing applied until all arrived)
2. record      `dvc commit data.dvc`: the new data version. Nothing new and the pipeline up to
               date → the flow ends here, says so, and nothing runs or registers
3. repro       `dvc repro`: unchanged stages are skipped; the `register` stage registers the model
4. push        `dvc push`: the data and outputs behind the model are retrievable (retried)
5. promote     the promotion gate on the registered version; a new champion emits the Prefect
               event `biomedclip.model.promoted`
6. commit      optionally `data.dvc`, `dvc.lock`, metrics and the decision log on a git branch

A failed step leaves the workspace and registry consistent: sync applies nothing until every
download succeeded, the data version is recorded only for data that is there, and the champion
alias moves only in the promote step, atomically. The decision and its numbers become the
markdown artifact `retrain-decision`.

    python flows/retrain.py [--params params.yaml] [--force]
    python flows/retrain.py --serve [--cron EXPR] [--timezone TZ]    (= biomedclip schedule)
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from biomedclip.config import Params, load_params
from biomedclip.ingest.run import last_run_path
from biomedclip.ingest.storage import open_store
from biomedclip.register.lineage_facts import data_version
from biomedclip.register.registry import (
    CHAMPION,
    RegistryError,
    champion_version,
    promote,
    tag_version,
)
from biomedclip.retrain.sync import RemovalRefused, sync
from biomedclip.retrain.workspace import (
    WorkspaceBusy,
    commit_on_branch,
    dvc_status,
    run,
    workspace_lock,
)

T = TypeVar("T")
PROMOTED_EVENT = "biomedclip.model.promoted"
DEPLOYMENT_TAGS = ["biomedclip", "retrain"]


class RetrainFailed(RuntimeError):
    """A retrain step failed; the message names the step."""


def _transient(task_, task_run, state) -> bool:
    """Retry anything but a refusal: a guard that trips again on retry wastes the retries."""
    return not isinstance(state.result(raise_on_failure=False), RemovalRefused)


@task(name="sync", retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def sync_task(params: Params) -> dict[str, Any] | None:
    retrain, target = params.retrain, params.ingest.source
    if retrain.source is None:
        get_run_logger().info("retrain.source is null: no sync, %s is taken as it is", target)
        return None
    if target.startswith("s3://"):
        raise ValueError(f"ingest.source is {target}: the retrain mirrors into a local folder that "
                         "data.dvc versions; set ingest.source to one (e.g. data/raw)")
    if not retrain.source.startswith("s3://") and Path(retrain.source).resolve() == Path(target).resolve():
        raise ValueError(f"retrain.source and ingest.source are both {target}: the retrain mirrors "
                         "a source into ingest.source; set retrain.source to null if nothing is to sync")
    report = sync(open_store(retrain.source, retrain.s3), Path(target), retrain.state_dir,
                  listing=retrain.listing, workers=retrain.workers,
                  max_removed_fraction=retrain.max_removed_fraction)
    return report.as_dict()


@task(name="record", cache_policy=NO_CACHE)
def record_task(params: Params) -> bool:
    """`dvc commit` the data version if the raw folder differs from it; True when it did."""
    data_dvc, target = params.retrain.data_dvc, Path(params.ingest.source)
    if not target.is_dir():
        raise FileNotFoundError(f"{target} does not exist: set retrain.source to sync it, "
                                "or get it with `make data` / `dvc pull`")
    if not data_dvc.exists():
        raise FileNotFoundError(f"{data_dvc} does not exist: record {target} once with `dvc add {target}` "
                                f"and set retrain.data_dvc to the file it writes ({target}.dvc)")
    if not dvc_status(str(data_dvc)):
        return False
    run("dvc", "commit", "--force", "--quiet", str(data_dvc))
    return True


@task(name="repro", cache_policy=NO_CACHE)
def repro_task() -> None:
    # The stages' flows report to this run's Prefect API (a server, or this process's temporary
    # one) instead of each starting a temporary server of its own: one place to watch, ~10 s
    # saved per stage.
    api = get_client(sync_client=True).api_url
    run("dvc", "repro", env={"PREFECT_API_URL": str(api)})


@task(name="push", retries=3, retry_delay_seconds=[10, 60, 300], cache_policy=NO_CACHE)
def push_task() -> None:
    run("dvc", "push")


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(params: Params, version: int) -> dict[str, Any]:
    if champion_version(params.register_, params.train.tracking) == version:
        return {"promoted": False, "already_champion": True, "version": version,
                "why": f"version {version} is already the {CHAMPION}"}
    return promote(params.register_, params.train.tracking, params.evaluate, params.shard.outputs.shards,
                   version=version, actor="retrain")


@task(name="commit", cache_policy=NO_CACHE)
def commit_task(params: Params, registered: dict[str, Any]) -> str:
    """The data version behind the model as a commit; the model version points at it."""
    retrain = params.retrain
    assert retrain.git_branch
    commit = commit_on_branch(retrain.git_branch, list(retrain.git_paths),
                              f"retrain: data {data_version(retrain.data_dvc)}, {registered['uri']}")
    tag_version(params.register_, params.train.tracking, int(registered["version"]),
                {"git.data_commit": commit, "git.data_branch": retrain.git_branch})
    return commit


def _emit_promoted(params: Params, decision: dict[str, Any], registered: dict[str, Any]) -> None:
    name, version = registered["name"], int(registered["version"])
    emit_event(
        event=PROMOTED_EVENT,
        resource={"prefect.resource.id": f"biomedclip.model.{name}", "prefect.resource.name": name},
        related=[{"prefect.resource.id": f"biomedclip.model-version.{name}.{version}",
                  "prefect.resource.role": "model-version", "prefect.resource.name": f"{name} v{version}"}],
        payload={"model": name, "version": version, "uri": f"models:/{name}/{version}",
                 "previous_champion": decision.get("previous_champion"), "why": decision.get("why"),
                 "metrics": decision.get("challenger_metrics", {})},
    )


def _decision_markdown(result: dict[str, Any]) -> str:
    lines = [f"## Retrain: {result['status']}", "", result["summary"], ""]
    if synced := result.get("sync"):
        lines += ["| sync | |", "|---|---:|", f"| versions listed | {synced['listed']:,} |",
                  *(f"| {k} | {len(synced[k]):,} |" for k in ("new", "changed", "removed", "retracted")),
                  f"| objects fetched | {synced['fetched_objects']:,} ({synced['fetched_bytes'] / 1e6:,.1f} MB) |", ""]
    if ingest := result.get("ingest"):
        lines += [f"Ingest: {ingest.get('processed', 0):,} articles processed, "
                  f"{ingest.get('unchanged', 0):,} unchanged.", ""]
    decision = result.get("decision") or {}
    if decision.get("challenger_metrics"):
        champion = decision.get("champion_metrics") or {}
        lines += ["| metric | challenger | champion |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.4f} | {champion[k]:.4f} |" if k in champion else f"| {k} | {v:.4f} | — |"
                  for k, v in decision["challenger_metrics"].items()]
        lines += [""]
    if result.get("failed_step"):
        lines += [f"Steps done: {', '.join(result['steps']) or 'none'}; failed: **{result['failed_step']}**."]
    if result.get("commit"):
        lines += [f"Data version committed on `{result['branch']}`: `{result['commit']}`."]
    return "\n".join(lines)


@flow(name="retrain")
def retrain_flow(params_path: str = "params.yaml", force: bool = False) -> dict[str, Any]:
    """Sync new PMC articles, `dvc repro`, `dvc push`, register and gate the new model."""
    logger = get_run_logger()
    params = load_params(Path(params_path))
    retrain = params.retrain
    try:
        with workspace_lock(retrain.lock, wait=retrain.on_busy == "wait", timeout_s=retrain.wait_timeout_s):
            result = _retrain(params, force)
    except WorkspaceBusy as exc:
        result = {"status": "skipped", "summary": f"Skipped: {exc}. Nothing was changed.", "steps": []}
    logger.info("retrain: %s", result["summary"])
    create_markdown_artifact(key="retrain-decision", markdown=_decision_markdown(result),
                             description="What the retrain found, ran and decided")
    if result.get("failed_step"):
        raise RetrainFailed(result["summary"])
    return result


def _retrain(params: Params, force: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"steps": []}

    def step(name: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            value = fn(*args)
        except Exception as exc:
            result.update(status="failed", failed_step=name,
                          summary=f"retrain failed at step '{name}': {type(exc).__name__}: {exc}")
            raise _StepError from exc
        result["steps"].append(name)
        return value

    try:
        synced = result["sync"] = step("sync", sync_task, params)
        recorded = step("record", record_task, params)
        if not force and not recorded and not (synced or {}).get("anything") and not dvc_status():
            result.update(status="nothing-new", summary="Nothing new: the data version and the pipeline "
                          "are up to date; no stage ran and nothing was registered.")
            return result
        step("repro", repro_task)
        result["ingest"] = _read_json(last_run_path(params.ingest))
        registered = result["registered"] = _read_json(params.register_.output)
        if params.retrain.push:
            step("push", push_task)
        decision: dict[str, Any] = {}
        if params.retrain.promote:
            decision = result["decision"] = step("promote", promote_task, params, int(registered["version"]))
        if params.retrain.git_branch:
            result["branch"] = params.retrain.git_branch
            result["commit"] = step("commit", commit_task, params, registered)
    except _StepError:
        return result
    uri = registered["uri"]
    if decision.get("promoted"):
        _emit_promoted(params, decision, registered)
        result.update(status="promoted", summary=f"{uri} is the new {CHAMPION}: {decision['why']}.")
    elif decision.get("already_champion"):
        result.update(status="unchanged", summary=f"{uri} is already the {CHAMPION}.")
    elif decision:
        result.update(status="not-promoted", summary=f"{uri} registered, not promoted: {decision['why']}.")
    else:
        result.update(status="registered", summary=f"{uri} registered (retrain.promote is off).")
    return result


class _StepError(Exception):
    """Internal: a step failed and `result` says which."""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def serve(params_path: Path, *, cron: str | None = None, timezone: str | None = None) -> None:
    """Serve `retrain/<deployment>` on its cron schedule until interrupted (Prefect `serve`)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from biomedclip.config import ScheduleParams, override

    schedule = override(load_params(params_path).retrain.schedule, cron=cron, timezone=timezone)
    assert isinstance(schedule, ScheduleParams)
    # Prefect's runner pickles the flow by reference for the process each run gets: serve it
    # from the importable `flows.retrain` (project folder on sys.path), however this was loaded.
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    served = importlib.import_module("flows.retrain").retrain_flow
    served.serve(
        name=schedule.deployment,
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"params_path": str(params_path)},
        # One run at a time across every process serving it; a trigger meanwhile waits its turn.
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        limit=1,
        tags=DEPLOYMENT_TAGS,
        description=(__doc__ or "").splitlines()[0],
    )


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--force", action="store_true", help="Run dvc repro and the gate even if nothing is new.")
    parser.add_argument("--serve", action="store_true", help="Serve the scheduled deployment instead.")
    parser.add_argument("--cron", help="Override retrain.schedule.cron (with --serve).")
    parser.add_argument("--timezone", help="Override retrain.schedule.timezone (with --serve).")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.params, cron=args.cron, timezone=args.timezone)
        return None
    return retrain_flow(str(args.params), force=args.force)


if __name__ == "__main__":
    logging.getLogger("biomedclip").setLevel(logging.INFO)
    try:
        main()
    except (RetrainFailed, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
