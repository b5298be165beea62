"""Several processes on one machine: the torchrun command line and the environment its processes
share (the trainer's `--nproc`, the VQA fine-tuning's `vqa.nproc`)."""

from __future__ import annotations

import os
import sys


def torchrun_prefix(nproc: int) -> list[str]:
    """torchrun on one node, `nproc` processes, before the module and its arguments."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}"]


def torchrun_env(nproc: int) -> dict[str, str]:
    """This environment, with the cores shared out between the processes (unless set)."""
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return {**os.environ, "OMP_NUM_THREADS": threads}
