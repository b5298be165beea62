"""One command for one process or many: `biomedclip train --nproc N` starts torchrun for you."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from biomedclip.models import model_uri
from biomedclip.params import Params
from biomedclip.torchrun import torchrun_env, torchrun_prefix
from biomedclip.train.loop import Resume, TrainingError, micro_batch, train
from biomedclip.train.params import TrainParams

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """Training processes exited with a non-zero status (their own error is in their output)."""


def recipe(params: Params) -> TrainParams:
    """`train` with `init_from` in its full form (`@champion` is a version of register.model_name),
    as the tokenizer stage reads it."""
    if params.train.init_from is None:
        return params.train
    return params.train.model_copy(update={"init_from": model_uri(params.train.init_from,
                                                                  params.register.model_name)})


def torchrun_command(params_path: Path, nproc: int, resume: Resume) -> list[str]:
    return [*torchrun_prefix(nproc), "-m", "biomedclip.train", "--params", str(params_path), "--resume", resume.value]


def launch(params: Params, params_path: Path, *, nproc: int, resume: Resume = Resume.AUTO) -> dict[str, Any]:
    """Train in this process (nproc 1, or already under torchrun/srun), else under torchrun (whose
    processes read `params_path`: it must hold `params`). Returns the run info (rank 0's)."""
    already_distributed = "RANK" in os.environ or "SLURM_PROCID" in os.environ
    if nproc == 1 or already_distributed:
        return train(recipe(params), params.shard, params.tracking, resume=resume)
    micro_batch(params.train, nproc)  # a batch that does not split fails here, not in N processes
    command = torchrun_command(params_path, nproc, resume)
    log.info("starting %d training processes: %s", nproc, " ".join(command))
    status = subprocess.run(command, env=torchrun_env(nproc), check=False).returncode
    if status:
        raise TrainingFailed(f"training under torchrun exited with status {status}")
    return json.loads(params.train.outputs.run_info.read_text())


__all__ = ["TrainingError", "TrainingFailed", "launch"]
