"""Prefect flow `shard`: the validated manifest → WebDataset shards per split.

Wiring only: one library call, retried once on I/O errors (a resumed run keeps the shards
already written), and a markdown artifact with the shard counts. DVC runs it as the `shard` stage.

    python flows/shard.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import IngestParams, ShardParams, load_params
from biomedclip.ingest.split import SPLITS
from biomedclip.shard import write_shards


@task(name="write-shards", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE,
      retry_condition_fn=lambda task, run, state: isinstance(state.result(raise_on_failure=False), OSError))
def shard_task(ingest: IngestParams, params: ShardParams) -> dict:
    return write_shards(ingest, params)


def markdown(report: dict, params: ShardParams) -> str:
    lines = [f"## Shards in `{params.outputs.shards}`", "",
             "| split | samples | shards | MiB |", "|---|---|---|---|"]
    lines += [f"| {s} | {report[s]['samples']} | {report[s]['shards']} | {report[s]['bytes'] / 2**20:.1f} |"
              for s in SPLITS]
    lines += ["", f"Shard manifest `{params.outputs.manifest}`: sha256 `{report['manifest_sha256']}`"]
    return "\n".join(lines) + "\n"


@flow(name="shard")
def shard_flow(ingest: IngestParams, params: ShardParams) -> dict:
    report = shard_task(ingest, params)
    create_markdown_artifact(key="shard-report", markdown=markdown(report, params),
                             description="WebDataset shards per split")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    return shard_flow(params.ingest, params.shard)


if __name__ == "__main__":
    main()
