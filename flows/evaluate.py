"""Prefect flow `evaluate`: retrieval, zero-shot classification and model tests of a model.

Wiring only: one library call, a markdown artifact with the tables. The model is the train
stage's (its MLflow run receives the metrics and plots) unless `evaluate.model` names another
folder or a registered version (`models:/biomedclip@champion`). DVC runs it as `evaluate`.

    python flows/evaluate.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import Params, load_params
from biomedclip.evaluate.run import evaluate, report_markdown


def model_and_run(params: Params) -> tuple[str, str | None]:
    """The model to evaluate and the MLflow run to log into (the training's, for its model)."""
    if params.evaluate.model:
        return params.evaluate.model, None
    info = json.loads(params.train.outputs.run_info.read_text())
    return info["model_dir"], info.get("mlflow_run_id")


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(params: Params) -> dict:
    model, run_id = model_and_run(params)
    return evaluate(params.evaluate, model=model, shards_dir=params.shard.outputs.shards,
                    mlflow_run_id=run_id, tracking=params.train.tracking)


@flow(name="evaluate")
def evaluate_flow(params_path: Path) -> dict:
    params = load_params(params_path)
    result = evaluate_task(params)
    create_markdown_artifact(key="evaluation", markdown=report_markdown(result),
                             description="Retrieval, zero-shot classification, model tests")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return evaluate_flow(args.params)


if __name__ == "__main__":
    main()
