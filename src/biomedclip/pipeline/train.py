"""Prefect flow `train`: contrastive pretraining, one process or many (torchrun).

The training task runs the library's launcher (in this process for one process, under torchrun
for `train.nproc` > 1), resuming from the latest checkpoint of the same run if a previous attempt
was killed; the run summary becomes an artifact. DVC runs it as the `train` stage.

    python flows/train.py [--params params.yaml]
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, load_params
from biomedclip.pipeline.runtime import record_flow_run, stage_main
from biomedclip.train.launch import TrainingFailed, launch
from biomedclip.train.report import markdown


@task(name="train", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=10)
def train_task(params_path: Path, nproc: int) -> None:
    status = launch(params_path, nproc=nproc)  # a retry resumes the killed attempt of the same run
    if status:
        raise TrainingFailed(f"training exited with status {status}")


@flow(name="train")
def train_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    train_task(params_path, params.train.nproc)
    info = json.loads(params.train.outputs.run_info.read_text())
    metrics = json.loads(params.train.outputs.metrics.read_text())
    create_markdown_artifact(key="train-report", markdown=markdown(info, metrics), description="Training summary")
    record_flow_run(params, "train")
    return info


def main(argv: list[str] | None = None) -> int:
    return stage_main(train_flow, argv, description=(__doc__ or "").splitlines()[0], errors=(TrainingFailed,))
