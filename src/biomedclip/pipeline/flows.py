"""One Prefect flow per pipeline stage, made from the stage table (`biomedclip.pipeline.stages`).

A stage's flow is wiring: the stage's library entry in a task (run by `biomedclip.pipeline.runner`,
holding the stage's lock; retried where a failure may be transient, never on the stage's own
expected errors), the entry's work items as tasks of their own on a Dask cluster (prefect-dask)
where the stage fans out there (the ingest's article batches; on one machine its own threads share
the work finer than tasks would), the report published
as a markdown artifact (also when the stage fails with one, as the gate does), and the flow run
recorded beside the outputs (`biomedclip.provenance`). `dvc.yaml` runs each as
`python flows/<stage>.py`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from prefect import Flow, flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.params import DEFAULT_PARAMS_PATH, Params, load_params
from biomedclip.pipeline.runner import run_stage
from biomedclip.pipeline.runtime import current_flow_run, guarded, one_api, record_flow_run
from biomedclip.pipeline.stages import STAGES, Stage, expected_by, stage
from biomedclip.stage import FanOut, StageContext, StageReport
from biomedclip.streams import in_order_window

RETRY_DELAYS_S = [10, 60, 300]


@task(name="part", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 10, 30])
def part(fn: Callable[[Any], Any], item: Any) -> Any:
    """One work item of a stage that fans out (an ingest batch); retried on any failure: a
    batch's own bad input is rejected inside it, so a failure here is transient I/O."""
    return fn(item)


def prefect_fan_out(window: int) -> FanOut:
    """Each item a task of the flow, at most `window` in flight, results in the items' order."""

    def run(fn: Callable[[Any], Any], items: Iterator[Any]) -> Iterator[Any]:
        return in_order_window(lambda item: part.submit(fn, item), items, window)

    return run


def dask_runner(workers: int) -> Any:
    from prefect_dask import DaskTaskRunner  # the `dask` extra

    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


def publish(stage_: Stage, report: StageReport, *, failed: bool = False) -> None:
    create_markdown_artifact(key=stage_.name, markdown=report.markdown(),
                             description=f"{stage_.summary}{': FAILED' if failed else ''}")


@cache
def stage_flow(name: str) -> Flow:
    """The Prefect flow of stage `name` (built once per process)."""
    stage_ = stage(name)

    def transient(task_: Any, task_run: Any, state: Any) -> bool:
        return not expected_by(stage_, state.result(raise_on_failure=False))

    run_entry = task(run_stage, name=stage_.name, cache_policy=NO_CACHE, retries=stage_.retries,
                     retry_delay_seconds=RETRY_DELAYS_S[:stage_.retries] or None, retry_condition_fn=transient)

    def stage_run(params_path: Path = DEFAULT_PARAMS_PATH) -> StageReport:
        params = load_params(params_path)
        workers = stage_.fan_out(params) if stage_.fan_out else None
        context = StageContext(params_path=params_path, flow_run_id=current_flow_run().id,
                               fan_out=prefect_fan_out(2 * workers) if workers else None)
        try:  # the entry as a task; one that fans out submits its items as tasks itself, from the flow
            report = (run_stage if workers else run_entry)(stage_, params, context)
        except Exception as exc:
            if getattr(exc, "report", None) is not None:
                publish(stage_, exc.report, failed=True)
            raise
        publish(stage_, report)
        record_flow_run(params, stage_.name)
        return report

    stage_run.__doc__ = f"The `{name}` stage: {stage_.summary}."
    return flow(stage_run, name=stage_.name, description=stage_.summary)


def run_flow(name: str, params_path: Path) -> StageReport:
    """Stage `name`'s flow, on the task runner the params choose where it fans out. Dask workers
    are processes of their own: they report to this process's Prefect API (with none named, each
    would start a temporary server of its own on the same SQLite file)."""
    stage_, params = stage(name), load_params(params_path)
    flow_ = stage_flow(name)
    workers = stage_.fan_out(params) if stage_.fan_out else None
    if not workers:
        return flow_(params_path)
    with one_api():
        return flow_.with_options(task_runner=dask_runner(workers))(params_path)


def main(name: str, argv: list[str] | None = None) -> int:
    """`python flows/<stage>.py [--params FILE]`: the stage's flow; a bad params file (exit 2)
    or one of the stage's expected errors (exit 1) is one line on stderr, not a traceback."""
    stage_ = stage(name)
    parser = argparse.ArgumentParser(prog=f"flows/{name.replace('-', '_')}.py",
                                     description=f"The Prefect flow of the `{name}` stage: {stage_.summary}.")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_PATH,
                        help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    return guarded(lambda: run_flow(name, args.params))


__all__ = ["STAGES", "Params", "main", "run_flow", "stage_flow"]
