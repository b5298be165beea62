"""Prefect flow `ingest`: PMC articles → the figure–caption pairs manifest.

Wiring only: the library lists the source and assembles the outputs; this flow fans the article
batches out as Prefect tasks (retried on transient I/O errors) on the task runner the params
choose — threads by default, a Dask cluster (prefect-dask) for scale — and publishes the report
as a markdown artifact. DVC runs it as the `ingest` stage.

    python flows/ingest.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect import flow, get_client, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from biomedclip.config import IngestParams, load_params
from biomedclip.ingest.extract import ArticleResult
from biomedclip.ingest.report import markdown
from biomedclip.ingest.run import Batch, in_order_window, process_batch, run_ingest


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


@contextmanager
def one_api_for_all_workers(params: IngestParams):
    """Dask workers are processes of their own: with no PREFECT_API_URL, each would start its own
    temporary Prefect server on the same SQLite database (three writers, "database is locked" on
    a busy machine). Take this process's API (the server named, else the temporary one Prefect
    starts here and stops at exit) and hand its URL to every worker through the settings Prefect
    ships with each task. As `retrain` does for the stages it runs."""
    if params.task_runner != "dask":
        yield
        return
    api = get_client(sync_client=True).api_url
    with temporary_settings(updates={PREFECT_API_URL: str(api)}):
        yield


@flow(name="ingest")
def ingest_flow(params: IngestParams) -> dict:
    report = run_ingest(params, batch_map=prefect_map(params, window=2 * params.workers))
    create_markdown_artifact(key="ingest-report", markdown=markdown(report),
                             description="PMC figure-caption pairs: counts and rejects")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params).ingest
    with one_api_for_all_workers(params):
        return ingest_flow.with_options(task_runner=task_runner(params))(params)


if __name__ == "__main__":
    main()
