"""Prefect flow `benchmark-hashes`: the pHash of every image of every evaluation benchmark, the
list `ingest` decontaminates the corpus against.

DVC runs it as the `benchmark_hashes` stage, before `ingest`: its output is a dependency of the
ingest, so a changed benchmark re-runs the decontamination. Each (benchmark, split) is hashed once
per version and cached (`ingest.decontaminate.cache`).

    python flows/benchmark_hashes.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, Params, load_params
from biomedclip.ingest.decontaminate import hash_benchmarks, markdown
from biomedclip.pipeline.runtime import record_flow_run, stage_main


@task(name="hash-benchmarks", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
def hash_task(params: Params) -> dict[str, dict[str, int]]:
    clean = params.ingest.decontaminate
    return hash_benchmarks(params.evaluate.benchmarks, params.evaluate.s3, clean.hashes, clean.cache)


@flow(name="benchmark-hashes")
def benchmark_hashes_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict[str, dict[str, int]]:
    params = load_params(params_path)
    summary = hash_task(params)
    create_markdown_artifact(key="benchmark-hashes", markdown=markdown(summary),
                             description="Benchmark images the corpus is decontaminated against")
    record_flow_run(params, "benchmark-hashes")
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main(benchmark_hashes_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(FileNotFoundError, ValueError))
