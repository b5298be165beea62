"""The `train` stage: contrastive pretraining, one process or many (torchrun)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biomedclip.params import Params
from biomedclip.stage import StageContext
from biomedclip.train import report
from biomedclip.train.loop import Resume


@dataclass(frozen=True)
class TrainReport:
    info: Mapping[str, Any]  # `train.outputs.run_info`: MLflow run, steps, model folder, digests
    metrics: Mapping[str, Any]  # `train.outputs.metrics`: validation retrieval

    def markdown(self) -> str:
        return report.markdown(dict(self.info), dict(self.metrics))


def run(params: Params, context: StageContext, *, resume: Resume = Resume.AUTO) -> TrainReport:
    """Train with `train.nproc` processes: in this one, or under torchrun (which reads
    `context.params_path`); a killed run resumes (`resume`)."""
    from biomedclip.train.launch import launch

    info = launch(params, context.params_path, nproc=params.train.nproc, resume=resume)
    return TrainReport(info, json.loads(params.train.outputs.metrics.read_text()))
