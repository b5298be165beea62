"""Prefect flow `ingest`: PMC articles → the figure–caption pairs manifest.

The library lists the source and assembles the outputs; this flow fans the article batches out
as Prefect tasks (retried on transient I/O errors) on the task runner the params choose (threads
by default, a Dask cluster through prefect-dask for scale) and publishes the report. DVC runs it
as the `ingest` stage.

    python flows/ingest.py [--params params.yaml]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from biomedclip.config import DEFAULT_PARAMS_PATH, IngestParams, load_params
from biomedclip.ingest.extract import ArticleResult
from biomedclip.ingest.report import markdown
from biomedclip.ingest.run import Batch, process_batch, run_ingest
from biomedclip.pipeline.runtime import one_api, record_flow_run, stage_main
from biomedclip.storage import ObjectReadError
from biomedclip.streams import in_order_window


@task(name="ingest-batch", retries=3, retry_delay_seconds=[2, 10, 30], cache_policy=NO_CACHE)
def ingest_batch(params: IngestParams, batch: Batch) -> list[ArticleResult]:
    return process_batch(params, batch)


def prefect_map(params: IngestParams, window: int):
    """Submit batches as tasks, at most `window` in flight, results in submission order."""

    def run(_: Callable, batches: Iterator[Batch]) -> Iterator[list[ArticleResult]]:
        return in_order_window(lambda batch: ingest_batch.submit(params, batch), batches, window)

    return run


def task_runner(params: IngestParams):
    if params.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # the `dask` extra

        return DaskTaskRunner(cluster_kwargs={"n_workers": params.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=params.workers)


@flow(name="ingest")
def ingest_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    report = run_ingest(params.ingest, batch_map=prefect_map(params.ingest, window=2 * params.ingest.workers))
    create_markdown_artifact(key="ingest-report", markdown=markdown(report, params.ingest.outputs.panel_examples),
                             description="PMC figure-caption pairs: counts and rejects")
    record_flow_run(params, "ingest")
    return report


def run(params_path: Path) -> dict:
    """The flow on the task runner the params choose. Dask workers are processes of their own:
    they report to this process's Prefect API (with none named, each would start a temporary
    server of its own on the same SQLite file: "database is locked" on a busy machine)."""
    ingest = load_params(params_path).ingest
    with one_api() if ingest.task_runner == "dask" else nullcontext():
        return ingest_flow.with_options(task_runner=task_runner(ingest))(params_path)


def main(argv: list[str] | None = None) -> int:
    return stage_main(run, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(FileNotFoundError, ValueError, ObjectReadError))
