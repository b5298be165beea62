"""Fine-tuning on several processes: `vqa.nproc` > 1 starts torchrun for you.

The parent has validated the params; the children read that validated section back from a JSON
file (`python -m biomedclip.vqa --run-file FILE`), so every rank runs exactly what the parent read,
whatever the params file's shape. Rank 0 writes the outputs (`vqa.stage.run`).
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from biomedclip.torchrun import torchrun_env, torchrun_prefix
from biomedclip.tracking import TrackingParams
from biomedclip.vqa.params import VqaParams

log = logging.getLogger(__name__)


def run_file(params: VqaParams, *, model: str, benchmark: str | None,
             tracking: TrackingParams | None) -> dict[str, Any]:
    """What a child process runs: the section, the model, the benchmark, the MLflow store."""
    return {"params": params.model_dump(mode="json"), "model": model, "benchmark": benchmark,
            "tracking": tracking.model_dump(mode="json") if tracking is not None else None}


def read_run_file(path: Path) -> tuple[VqaParams, str, str | None, TrackingParams | None]:
    data = json.loads(path.read_text(encoding="utf-8"))
    raw = data["tracking"]
    tracking = TrackingParams.model_validate(raw, strict=False) if raw else None
    params = VqaParams.model_validate(data["params"], strict=False)
    return params, data["model"], data["benchmark"], tracking


def torchrun_vqa(params: VqaParams, *, model: str, benchmark: str | None = None,
                 tracking: TrackingParams | None = None) -> int:
    """Run the stage under torchrun with `params.nproc` processes; returns the exit status (the
    results are in `params.outputs`, written by rank 0)."""
    with tempfile.TemporaryDirectory(prefix="biomedclip-vqa-") as tmp:
        path = Path(tmp) / "run.json"
        path.write_text(json.dumps(run_file(params, model=model, benchmark=benchmark,
                                            tracking=tracking)))
        command = [*torchrun_prefix(params.nproc), "-m", "biomedclip.vqa", "--run-file", str(path)]
        log.info("starting %d fine-tuning processes: %s", params.nproc, " ".join(command))
        return subprocess.run(command, env=torchrun_env(params.nproc), check=False).returncode
