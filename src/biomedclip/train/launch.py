"""One command for one process or many: `biomedclip train --nproc N` starts torchrun for you."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """Training exited with a non-zero status (its own error is in its output)."""


def torchrun_prefix(nproc: int) -> list[str]:
    """torchrun on one node, `nproc` processes, before the module and its arguments."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}"]


def torchrun_env(nproc: int) -> dict[str, str]:
    """This environment, with the cores shared out between the processes (unless set)."""
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return {**os.environ, "OMP_NUM_THREADS": threads}


def torchrun_command(params_path: Path, nproc: int, resume: str | None) -> list[str]:
    command = [*torchrun_prefix(nproc), "-m", "biomedclip.train", "--params", str(params_path)]
    if resume == "always":
        command.append("--resume")
    elif resume == "never":
        command.append("--fresh")
    return command


def launch(params_path: Path, *, nproc: int, resume: str | None = None) -> int:
    """Train in this process (nproc 1, or already under torchrun/srun), else under torchrun.
    Returns the exit status."""
    from biomedclip.train.__main__ import main

    already_distributed = "RANK" in os.environ or "SLURM_PROCID" in os.environ
    if nproc == 1 or already_distributed:
        argv = ["--params", str(params_path), *{"always": ["--resume"], "never": ["--fresh"]}.get(resume or "", [])]
        return main(argv)
    from biomedclip.config import load_params
    from biomedclip.train.loop import TrainingError, micro_batch

    try:  # fail here, before torchrun starts N processes that would all fail the same way
        micro_batch(load_params(params_path).train, nproc)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = torchrun_command(params_path, nproc, resume)
    log.info("starting %d training processes: %s", nproc, " ".join(command))
    return subprocess.run(command, env=torchrun_env(nproc), check=False).returncode
