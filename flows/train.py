"""Prefect flow `train`: contrastive pretraining, one process or many (torchrun).

Wiring only: the training task runs the library's launcher (in this process for one process,
under torchrun for `train.nproc` > 1), resuming from the latest checkpoint of the same run if a
previous attempt was killed; the run summary becomes a markdown artifact. DVC runs it as the
`train` stage.

    python flows/train.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import load_params
from biomedclip.train.launch import launch


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def train_task(params_path: Path, nproc: int) -> int:
    status = launch(params_path, nproc=nproc)  # resumes a killed attempt of the same run
    if status:
        raise RuntimeError(f"training exited with status {status}")
    return status


@flow(name="train")
def train_flow(params_path: Path) -> dict:
    params = load_params(params_path).train
    train_task(params_path, params.nproc)
    info = json.loads(params.outputs.run_info.read_text())
    metrics = json.loads(params.outputs.metrics.read_text())
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    create_markdown_artifact(key="train-report", markdown=(
        f"## Training `{info['profile']}`\n\nMLflow run `{info['mlflow_run_id']}`, {info['steps']} steps, "
        f"model `{info['model_dir']}`\n\n| metric | value |\n|---|---|\n{rows}\n"),
        description="Training summary")
    return info


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return train_flow(args.params)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
