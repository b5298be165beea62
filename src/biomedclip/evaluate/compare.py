"""`biomedclip compare A B [...]`: models evaluated on the same test split and benchmarks, side by side.

Every model (a registered version or alias, a folder, `hf-hub:`) is evaluated here and now, on
the same data, with the same protocol as `evaluate`: stored numbers are not comparable (the test
split grows with PMC). The first model is the reference the differences are taken against.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from biomedclip.evaluate.params import EvaluateOutputs, EvaluateParams
from biomedclip.evaluate.run import evaluate
from biomedclip.register.lineage_facts import flatten_metrics
from biomedclip.tracking import TrackingParams

LOWER_IS_BETTER = ("median_rank", "mean_rank")
NOT_SCORES = ("chance", "skipped", "pairs", "images", "samples")  # counts and baselines: nothing to win


def comparable(metric: str) -> bool:
    return not any(word in metric for word in NOT_SCORES)


def cell(metric: str, value: float) -> str:
    """A value as the table shows it: counts as whole numbers, scores to 4 decimals."""
    return f"{value:.0f}" if not comparable(metric) and float(value).is_integer() else f"{value:.4f}"


def better(metric: str, a: float, b: float) -> bool:
    """Whether `a` is a better score than `b` on `metric`."""
    return a < b if metric.endswith(LOWER_IS_BETTER) else a > b


def compare(sources: list[str], params: EvaluateParams, *, shards_dir: Path,
            tracking: TrackingParams | None = None, progress: Any = None) -> dict[str, Any]:
    """Evaluate every source on `params.split` and the benchmarks; {models, split, metrics:
    {metric: {source: value}}, best: {metric: source}, delta: {metric: {source: value - first's}}}."""
    if len(sources) < 2:
        raise ValueError("compare needs at least two models")
    if len(set(sources)) != len(sources):
        raise ValueError(f"a model is named twice: {sources}")
    if tracking is not None:
        from biomedclip.tracking import held

        for source in sources:  # a missing one answers before minutes are spent on the others
            held(source, tracking)
    scores: dict[str, dict[str, float]] = {}
    reused: dict[str, str] = {}
    for source in sources:
        if progress is not None:
            progress(source)
        with tempfile.TemporaryDirectory(prefix="biomedclip-compare-") as tmp:
            out = Path(tmp)
            local = params.model_copy(update={"outputs": EvaluateOutputs(
                metrics=out / "eval.json", plots=out / "plots", report=out / "report.md")})
            result = evaluate(local, model=source, shards_dir=shards_dir, tracking=tracking, examples=False)
            scores[source] = flatten_metrics(result)
            if result.get("reused"):
                reused[source] = result["reused"]
    return {**side_by_side(scores, split=params.split), "reused": reused}


def side_by_side(scores: dict[str, dict[str, float]], *, split: str) -> dict[str, Any]:
    """Flattened evaluations of several models as one comparison (the first is the reference)."""
    sources = list(scores)
    metrics = sorted({key for values in scores.values() for key in values})
    table = {m: {s: scores[s][m] for s in sources if m in scores[s]} for m in metrics}
    first = sources[0]
    delta = {m: {s: v - row[first] for s, v in row.items() if s != first} for m, row in table.items()
             if first in row and comparable(m)}
    best = {}
    for metric, row in table.items():
        if comparable(metric) and len(row) > 1:
            top = next(iter(row))
            for source, value in row.items():
                if better(metric, value, row[top]):
                    top = source
            if any(better(metric, row[top], v) for v in row.values()):  # a tie has no winner
                best[metric] = top
    return {"models": sources, "split": split, "metrics": table, "delta": delta, "best": best}


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a markdown table: each model's value (the best in bold), and each
    model's difference from the first."""
    models, first = result["models"], result["models"][0]
    others = models[1:]
    head = ["metric", *(f"`{m}`" for m in models), *(f"Δ `{m}` − `{first}`" for m in others)]
    lines = [f"## Models compared on the {result['split']} split and the benchmarks", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for metric, row in result["metrics"].items():
        cells = []
        for model in models:
            value = row.get(model)
            text = "" if value is None else cell(metric, value)
            cells.append(f"**{text}**" if result["best"].get(metric) == model else text)
        deltas = [f"{result['delta'][metric][m]:+.4f}" if m in result["delta"].get(metric, {}) else "" for m in others]
        lines.append("| " + " | ".join([metric, *cells, *deltas]) + " |")
    wins = {m: sum(1 for b in result["best"].values() if b == m) for m in models}
    lines += ["", "Best on " + ", ".join(f"{n} metric(s): `{m}`" for m, n in wins.items()) + "."]
    return "\n".join(lines) + "\n"
