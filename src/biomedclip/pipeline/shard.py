"""Prefect flow `shard`: the validated manifest → WebDataset shards per split.

One library call, retried once on I/O errors (a resumed run keeps the shards already written),
and the shard table as an artifact. DVC runs it as the `shard` stage.

    python flows/shard.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, IngestParams, ShardParams, load_params
from biomedclip.pipeline.runtime import record_flow_run, stage_main
from biomedclip.shard import ShardInputError, write_shards
from biomedclip.shard.report import markdown


def _io_error(task_, run, state) -> bool:
    return isinstance(state.result(raise_on_failure=False), OSError)


@task(name="write-shards", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE, retry_condition_fn=_io_error)
def shard_task(ingest: IngestParams, params: ShardParams) -> dict:
    return write_shards(ingest, params)


@flow(name="shard")
def shard_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    report = shard_task(params.ingest, params.shard)
    create_markdown_artifact(key="shard-report", markdown=markdown(report, params.shard),
                             description="WebDataset shards per split")
    record_flow_run(params, "shard")
    return report


def main(argv: list[str] | None = None) -> int:
    return stage_main(shard_flow, argv, description=(__doc__ or "").splitlines()[0], errors=(ShardInputError,))
