"""Prefect flow `validate`: the Great Expectations gate between ingest and shard.

Wiring only: one library call (stage the manifest, run the checkpoints, write the result JSON and
Data Docs), a markdown artifact with the table, and a non-zero exit when a critical check fails,
so `dvc repro` stops before shard and training. DVC runs it as the `validate` stage.

    python flows/validate.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import IngestParams, ValidateParams, load_params
from biomedclip.validate import ValidationFailed, validate_manifest
from biomedclip.validate.gate import summary_markdown


@task(name="validate-manifest", cache_policy=NO_CACHE)
def run_gate(ingest: IngestParams, params: ValidateParams) -> dict:
    try:
        result = validate_manifest(ingest, params)
    except ValidationFailed as exc:
        create_markdown_artifact(key="validation-report", markdown=summary_markdown(exc.result),
                                 description="Manifest validation: FAILED")
        raise
    create_markdown_artifact(key="validation-report", markdown=summary_markdown(result),
                             description="Manifest validation: passed")
    return result


@flow(name="validate")
def validate_flow(ingest: IngestParams, params: ValidateParams) -> dict:
    return run_gate(ingest, params)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    params = load_params(args.params)
    return validate_flow(params.ingest, params.validate_)


if __name__ == "__main__":
    try:
        main()
    except ValidationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
