"""Prefect flow `register`: the trained model into the MLflow registry, with its lineage.

One library call (the pyfunc logged into the training's run, a registered version tagged with
git, data, manifest, validation, shard and dvc.lock digests, params, the flow runs recorded beside
each stage's outputs, and the evaluation; alias `challenger`), an artifact with the lineage.
Promotion is a separate, gated decision: `biomedclip promote`. DVC runs this as the `register` stage.

    python flows/register.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, load_params
from biomedclip.pipeline.runtime import current_flow_run, record_flow_run, stage_main
from biomedclip.register.registry import RegistryError
from biomedclip.register.stage import markdown, register_trained
from biomedclip.tracking import TrackingUnavailable


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_task(params_path: Path, flow_run_id: str) -> dict:
    return register_trained(load_params(params_path), params_path, flow_run_id=flow_run_id)


@flow(name="register")
def register_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    result = register_task(params_path, current_flow_run().id)
    create_markdown_artifact(key="registered-model", markdown=markdown(result), description="Registered model version")
    record_flow_run(params, "register")
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(register_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(RegistryError, TrackingUnavailable, FileNotFoundError))
