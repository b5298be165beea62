"""The `evaluate` stage: a model measured as the paper did, on the test split and the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biomedclip.evaluate.run import evaluate, model_to_evaluate, report_markdown
from biomedclip.params import Params
from biomedclip.stage import StageContext


@dataclass(frozen=True)
class EvaluateReport:
    result: Mapping[str, Any]  # retrieval, zero-shot, linear probes, model tests (metrics/eval.json)

    def markdown(self) -> str:
        reused = self.result.get("reused")
        note = f"\n\n_Evaluated before on the same weights, test shards, benchmarks and params: reused `{reused}`._" \
            if reused else ""
        return report_markdown(dict(self.result)) + note


def run(params: Params, context: StageContext) -> EvaluateReport:
    """Evaluate `evaluate.model`, else the train stage's model (its MLflow run gets the results:
    checked first, so that a run the store does not hold stops the stage before the work)."""
    model, run_id = model_to_evaluate(params.evaluate, params.train.outputs.run_info, params.register.model_name)
    if run_id and params.tracking.enabled:
        from biomedclip.tracking import connect, workspace_run

        run_id = workspace_run(connect(params.tracking), run_id, recorded_in=str(params.train.outputs.run_info))
    return EvaluateReport(evaluate(params.evaluate, model=model, shards_dir=params.shard.outputs.shards,
                                   mlflow_run_id=run_id, tracking=params.tracking))
