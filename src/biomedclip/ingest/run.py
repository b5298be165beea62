"""`run_ingest`: list → fan out over article batches → record → assemble.

The fan-out is pluggable: a bounded thread pool by default (`thread_map`, an article a task),
Prefect tasks on any task runner (threads, Dask) from the `ingest` flow
(`biomedclip.pipeline.ingest`, a batch a task). Whatever runs the batches, the results are
recorded in the state by this process and the outputs are assembled in PMCID order, so the
manifest is the same. At most `window` batches are in flight: memory does not grow with the
corpus.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.console import progress
from biomedclip.ingest.assemble import assemble
from biomedclip.ingest.extract import ArticleResult, extract_article
from biomedclip.ingest.images import ImageStore
from biomedclip.ingest.params import IngestParams
from biomedclip.ingest.sources import VersionRef, list_articles
from biomedclip.ingest.state import IngestState, params_digest
from biomedclip.storage import ObjectStore, open_store
from biomedclip.streams import chunked, in_order_window

log = logging.getLogger(__name__)
Batch = tuple[list[list[VersionRef]], dict[str, str]]  # articles (each: its versions), digests
BatchFn = Callable[[Batch], list[ArticleResult]]
BatchMap = Callable[[BatchFn, Iterator[Batch]], Iterator[list[ArticleResult]]]
_STORES: dict[str, ObjectStore] = {}


def read_pmcids(path: Path) -> set[str]:
    """One PMCID per line (with or without the PMC prefix); blank lines and # comments ignored."""
    ids = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        digits = text.upper().removeprefix("PMC")
        if not digits.isdigit():
            raise ValueError(f"{path}:{number}: {text!r} is not a PMCID")
        ids.add(f"PMC{int(digits)}")
    return ids


def store_for(params: IngestParams) -> ObjectStore:
    """One store per source and process (S3 clients are reused, not re-created per batch)."""
    key = params.model_dump_json(include={"source", "s3"})
    if key not in _STORES:
        _STORES[key] = open_store(params.source, params.s3)
    return _STORES[key]


def selected_articles(params: IngestParams) -> Iterator[list[VersionRef]]:
    articles = list_articles(store_for(params), params.layout, params.listing)
    if params.pmcids is not None:
        wanted = read_pmcids(params.pmcids)
        articles = (versions for versions in articles if versions[-1].pmcid in wanted)
    if params.limit is not None:
        articles = islice(articles, params.limit)
    return articles


def process_batch(params: IngestParams, batch: Batch,
                  images: ImageStore | None = None) -> list[ArticleResult]:
    """Extract every article of a batch; safe to run in any thread or process. `images`: the
    run's store (default: one that writes before `put` returns)."""
    articles, known = batch
    store = store_for(params)
    images = images or ImageStore(params.outputs.images)
    return [extract_article(store, versions, params, images, known.get(versions[-1].pmcid))
            for versions in articles]


class BatchFutures:
    """The futures of one batch's articles, read back as that batch's results, in order."""

    def __init__(self, futures: list[Future[list[ArticleResult]]]) -> None:
        self.futures = futures

    def result(self) -> list[ArticleResult]:
        return [result for future in self.futures for result in future.result()]


def thread_map(workers: int, window: int | None = None) -> BatchMap:
    """Ordered, bounded map over a thread pool: at most `window` batches submitted at once, each
    article of a batch a task of its own. At PMC's image sizes a batch of 16 articles is seconds
    of work: as one task, the last batch of a run kept one thread busy while the other idled
    (BENCHMARKS.md, "Both cores"); as articles, the threads share it. Memory is bounded as before:
    the articles of at most `window` batches in flight."""

    def run(fn: BatchFn, batches: Iterator[Batch]) -> Iterator[list[ArticleResult]]:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
            def submit(batch: Batch) -> BatchFutures:
                articles, known = batch
                return BatchFutures([pool.submit(fn, ([versions], known)) for versions in articles])

            yield from in_order_window(submit, batches, window or 2 * workers)

    return run


def last_run_path(params: IngestParams) -> Path:
    return params.outputs.state.with_name("last-run.json")


def run_ingest(params: IngestParams, *, batch_map: BatchMap | None = None) -> dict[str, Any]:
    """Ingest the configured source into the pairs manifest; returns the stage report."""
    start = time.monotonic()
    state = IngestState(params.outputs.state, params_digest(params))
    if state.reset:
        log.info("ingest params changed since the last run: every article is processed again")
    counts: Counter[str] = Counter(listed=0, processed=0, unchanged=0)

    def batches(articles: Iterable[list[VersionRef]], counted: bool) -> Iterator[Batch]:
        for chunk in chunked(articles, params.batch_size):
            counts["listed"] += len(chunk) if counted else 0
            yield chunk, state.known_digests(versions[-1].pmcid for versions in chunk)

    mapper = batch_map or thread_map(params.workers)
    # The extracting threads hand their image writes (fsync: milliseconds each) to threads of
    # their own, so that they decode while the disk writes; a batch is recorded once its images
    # are on disk. At PMC's sizes the writes held the extracting threads 7-11% of the run
    # (BENCHMARKS.md, "Both cores").
    writer = ThreadPoolExecutor(max_workers=params.workers, thread_name_prefix="ingest-write")
    images = ImageStore(params.outputs.images, writer)

    # Another mapper (a flow's tasks on a Dask cluster) gets a function it can ship to another
    # process: each batch then writes its images before its task ends.
    work = functools.partial(process_batch, params) if batch_map else \
        (lambda batch: process_batch(params, batch, images))

    def process(articles: Iterable[list[VersionRef]], counted: bool = True) -> None:
        results = mapper(work, batches(articles, counted))
        for batch_results in progress(results, total=None, description="ingest batches",
                                      every_items=10):
            images.flush()
            state.record(batch_results)
            for result in batch_results:
                counts["unchanged" if result.unchanged else "processed"] += 1

    try:
        process(selected_articles(params))
        missing = state.articles_missing_images(params.outputs.images)
        if missing:  # images removed behind our back (e.g. `dvc checkout`): read those again
            log.warning("%d articles lost stored images; reading them again", len(missing))
            state.forget(missing)
            counts["unchanged"] -= len(missing)
            wanted = set(missing)
            process((v for v in selected_articles(params) if v[-1].pmcid in wanted), counted=False)
        report = assemble(state, params, counts)
    finally:
        writer.shutdown()
        state.close()
    # How this run got there (what it read vs. reused), beside the state: for the retrain's
    # report and for people; the metrics file holds only what the data and params determine.
    atomic_write_bytes(last_run_path(params), (json.dumps(
        {**dict(counts), "seconds": round(time.monotonic() - start, 1)}, indent=2) + "\n").encode())
    log.info("ingest: %d articles (%d processed, %d unchanged), %d pairs, %d rejects in %.1fs",
             counts["listed"], counts["processed"], counts["unchanged"], report["pairs"]["total"],
             report["rejects"]["total"], time.monotonic() - start)
    return report
