"""Prefect flow `evaluate`: retrieval, zero-shot classification and model tests of a model.

The model is the train stage's (its MLflow run receives the metrics and plots) unless
`evaluate.model` names another folder or a registered version (`models:/biomedclip@champion`).
DVC runs it as the `evaluate` stage.

    python flows/evaluate.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, Params, load_params
from biomedclip.evaluate.benchmarks import BenchmarkError
from biomedclip.evaluate.run import evaluate, model_to_evaluate, report_markdown
from biomedclip.pipeline.runtime import record_flow_run, stage_main


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> dict:
    model, run_id = model_to_evaluate(params.evaluate, params.train.outputs.run_info)
    return evaluate(params.evaluate, model=model, shards_dir=params.shard.outputs.shards,
                    mlflow_run_id=run_id, tracking=params.train.tracking)


@flow(name="evaluate")
def evaluate_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    result = evaluate_task(params)
    create_markdown_artifact(key="evaluation", markdown=report_markdown(result),
                             description="Retrieval, zero-shot classification, model tests")
    record_flow_run(params, "evaluate")
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(evaluate_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(BenchmarkError, FileNotFoundError, ValueError))
