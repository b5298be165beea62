"""The training run for people: the loss curve as a figure, the run summary as markdown."""

from __future__ import annotations

from typing import Any


def loss_figure(history: list[dict[str, Any]]):
    """The loss curve as a matplotlib figure (None before the first logged step)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([r["step"] for r in history], [r["loss"] for r in history])
    axis.set_xlabel("step")
    axis.set_ylabel("contrastive loss")
    axis.set_title("training loss")
    figure.tight_layout()
    return figure


def markdown(info: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The run summary (the Prefect artifact): profile, MLflow run, steps, model, metrics."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    return (f"## Training `{info['profile']}`\n\nMLflow run `{info['mlflow_run_id']}`, {info['steps']} steps, "
            f"model `{info['model_dir']}`\n\n| metric | value |\n|---|---|\n{rows}\n")
