"""Prefect flow `validate`: the Great Expectations gate between ingest and shard.

One library call (stage the manifest, run the checkpoints, write the result JSON and Data Docs),
the result table as an artifact whether it passed or not, and a non-zero exit when a critical
check fails, so `dvc repro` stops before shard and training. DVC runs it as the `validate` stage.

    python flows/validate.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, IngestParams, ValidateParams, load_params
from biomedclip.pipeline.runtime import record_flow_run, stage_main
from biomedclip.validate import (
    ValidationFailed,
    ValidationInputError,
    summary_markdown,
    validate_manifest,
)


@task(name="validate-manifest", cache_policy=NO_CACHE)
def validate_task(ingest: IngestParams, params: ValidateParams) -> dict:
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
def validate_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    result = validate_task(params.ingest, params.validate_)
    record_flow_run(params, "validate")
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(validate_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(ValidationFailed, ValidationInputError))
