"""Prefect flow `retrain`: the retrain cycle (`biomedclip.retrain.cycle`) with each step a task.

The cycle's logic is library code; here each step becomes a Prefect task (sync and push retried
on transient errors), the stages `dvc repro` runs report to this flow's Prefect API, a new
champion emits the event `biomedclip.model.promoted`, and the decision becomes the artifact
`retrain-decision`. Served on a cron schedule as the deployment `retrain/<deployment>`.

    python flows/retrain.py [--params params.yaml] [--force]
    python flows/retrain.py --serve [--cron EXPR] [--timezone TZ]    (= biomedclip schedule)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import override
from biomedclip.params import DEFAULT_PARAMS_PATH, load_params
from biomedclip.pipeline.events import announce_champion
from biomedclip.pipeline.runtime import api_url, guarded
from biomedclip.retrain.cycle import RetrainFailed, WorkspaceSteps, decision_markdown, retrain
from biomedclip.retrain.params import ScheduleParams
from biomedclip.retrain.sync import RemovalRefused

DEPLOYMENT_TAGS = ["biomedclip", "retrain"]
NOT_TRANSIENT = (RemovalRefused, ValueError, FileNotFoundError)  # a retry would fail the same way
log = logging.getLogger(__name__)


def _transient(task_, task_run, state) -> bool:
    return not isinstance(state.result(raise_on_failure=False), NOT_TRANSIENT)


@task(name="sync", retries=3, retry_delay_seconds=[10, 60, 300], retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
def sync_task(steps: WorkspaceSteps) -> dict[str, Any] | None:
    return WorkspaceSteps.sync(steps)


@task(name="record", cache_policy=NO_CACHE)
def record_task(steps: WorkspaceSteps) -> bool:
    return WorkspaceSteps.record(steps)


@task(name="status", cache_policy=NO_CACHE)
def status_task(steps: WorkspaceSteps) -> bool:
    return WorkspaceSteps.up_to_date(steps)


@task(name="repro", cache_policy=NO_CACHE)
def repro_task(steps: WorkspaceSteps) -> None:
    WorkspaceSteps.repro(steps)


@task(name="push", retries=3, retry_delay_seconds=[10, 60, 300], cache_policy=NO_CACHE)
def push_task(steps: WorkspaceSteps) -> None:
    WorkspaceSteps.push(steps)


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(steps: WorkspaceSteps, version: int) -> dict[str, Any]:
    return WorkspaceSteps.promote(steps, version)


@task(name="commit", cache_policy=NO_CACHE)
def commit_task(steps: WorkspaceSteps, registered: dict[str, Any]) -> str:
    return WorkspaceSteps.commit(steps, registered)


class PrefectSteps(WorkspaceSteps):
    """The workspace steps, each one a task of this flow run; a new champion is an event."""

    def sync(self) -> dict[str, Any] | None:
        return sync_task(self)

    def record(self) -> bool:
        return record_task(self)

    def up_to_date(self) -> bool:
        return status_task(self)

    def repro(self) -> None:
        repro_task(self)

    def push(self) -> None:
        push_task(self)

    def promote(self, version: int) -> dict[str, Any]:
        return promote_task(self, version)

    def commit(self, registered: dict[str, Any]) -> str:
        return commit_task(self, registered)

    def announce(self, decision: dict[str, Any], registered: dict[str, Any]) -> None:
        announce_champion(registered["name"], {**decision, "version": registered["version"]})


@flow(name="retrain")
def retrain_flow(params_path: str = "params.yaml", force: bool = False) -> dict[str, Any]:
    """Sync new PMC articles, `dvc repro`, `dvc push`, register and gate the new model."""
    params = load_params(Path(params_path))
    # The stages `dvc repro` runs report to this run's API (a server, or this process's temporary
    # one) instead of each starting a temporary server: one place to watch, ~10 s saved a stage.
    steps = PrefectSteps(params, repro_env={"PREFECT_API_URL": api_url()})
    result = retrain(params, steps, force=force)
    get_run_logger().info("retrain: %s", result["summary"])
    create_markdown_artifact(key="retrain-decision", markdown=decision_markdown(result),
                             description="What the retrain found, ran and decided")
    if result.get("failed_step"):
        raise RetrainFailed(result["summary"])
    return result


def serve(params_path: Path, *, cron: str | None = None, timezone: str | None = None) -> None:
    """Serve `retrain/<deployment>` on its cron schedule and `index/refresh` on every promotion,
    until interrupted (Prefect `serve`): one run of each at a time across every process serving
    them; a trigger meanwhile waits its turn."""
    from prefect import serve as serve_all
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from biomedclip.pipeline.refresh import refresh_deployment

    params = load_params(params_path)
    schedule = override(params.retrain.schedule, cron=cron, timezone=timezone)
    assert isinstance(schedule, ScheduleParams)
    retrain = retrain_flow.to_deployment(
        name=schedule.deployment,
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"params_path": str(params_path)},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=DEPLOYMENT_TAGS,
        description=(__doc__ or "").splitlines()[0],
        # Each run imports the flow from the installed package, whatever folder this serves from.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    serve_all(retrain, refresh_deployment(params_path, params.register.model_name), limit=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_PATH)
    parser.add_argument("--force", action="store_true", help="Run dvc repro and the gate even if nothing is new.")
    parser.add_argument("--serve", action="store_true", help="Serve the scheduled deployment instead.")
    parser.add_argument("--cron", help="Override retrain.schedule.cron (with --serve).")
    parser.add_argument("--timezone", help="Override retrain.schedule.timezone (with --serve).")
    args = parser.parse_args(argv)
    if args.serve:
        return guarded(lambda: serve(args.params, cron=args.cron, timezone=args.timezone))
    return guarded(lambda: retrain_flow(str(args.params), force=args.force),
                   ("biomedclip.retrain.cycle:RetrainFailed",))
