"""Few-shot and full linear probes on frozen image features (ELEVATER's protocol, as the paper).

For a benchmark with a train split: L2-normalised image features of its train, validation and
test splits (the validation split carved from train, class-stratified, where the benchmark has
none); for each label fraction (1%, 10%, 100% by default) and seed, a class-stratified draw of the
training labels (at least one per class); the inverse regularisation `C` chosen on the validation
split from `c_grid`; a multinomial logistic regression (scikit-learn, lbfgs) refit on the draw
with it and scored on the test split with the zero-shot metrics. Mean and standard deviation over
the seeds (the full fraction is one draw: every seed would draw the same).

Features are cached per (model digest, benchmark version, split), so a second run, a second
fraction or a second `c_grid` costs no embedding. They are float32 N x D: 0.5 GB at PCam's
262,144 training patches with D = 512.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biomedclip.evaluate.classification import classification_metrics
from biomedclip.evaluate.feature_cache import cached_tensors
from biomedclip.evaluate.params import LinearProbeParams

log = logging.getLogger(__name__)
METRICS = ("top1", "balanced_accuracy", "macro_f1", "auroc")


def cached_features(cache: Path, key: str, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) from the feature cache (`evaluate.feature_cache`), else computed and
    written there: float32 features, int64 labels."""
    def named() -> dict[str, torch.Tensor]:
        features, labels = compute()
        return {"features": features.float(), "labels": labels.long()}

    stored, _ = cached_tensors(cache, key, named)
    return stored["features"], stored["labels"]


def stratified_draw(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a class-stratified draw of `fraction` of the labels, at least one per class, sorted."""
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def carve_validation(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a class-stratified `fraction` of each class held out (one at least,
    when the class has two or more)."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= 2:
            held.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    validation = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    return np.setdiff1d(np.arange(len(labels)), validation), validation


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:  # one class drawn: nothing to separate; predict it everywhere
        return None, int(y[0])
    model = LogisticRegression(C=c, max_iter=max_iter)
    model.fit(x, y)
    return model, None


def _scores(fitted: tuple[Any, int | None], x: np.ndarray, classes: int) -> torch.Tensor:
    model, constant = fitted
    scores = np.full((len(x), classes), -1e9)
    if model is None:
        scores[:, constant] = 0.0
        return torch.from_numpy(scores)
    with np.errstate(divide="ignore"):  # a probability of exactly 0 is a log of -inf: still the lowest score
        scores[:, model.classes_] = np.log(model.predict_proba(x))
    return torch.from_numpy(scores)


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None,
                 test: tuple[torch.Tensor, torch.Tensor], classes: int, params: LinearProbeParams
                 ) -> dict[str, Any]:
    """Probe results per fraction: {"<fraction>": {metric: mean, "<metric>_std": std, "c": [...],
    "train_samples": n, "draws": k}}, plus how the validation split was made."""
    x_train, y_train = (t.numpy() for t in train)
    x_test, y_test = test[0].numpy(), test[1]
    validation = "the benchmark's own"
    if val is None or not len(val[1]):
        kept, held = carve_validation(y_train, params.val_fraction)
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[kept], y_train[kept]
        validation = f"{params.val_fraction:.0%} of train, class-stratified ({len(held)} images)"
    else:
        x_val, y_val = val[0].numpy(), val[1].numpy()
    results: dict[str, Any] = {"validation": validation}
    for fraction in params.fractions:
        draws = 1 if fraction >= 1 else params.seeds
        runs: dict[str, list[float]] = {m: [] for m in METRICS}
        chosen_c, sizes = [], []
        for seed in range(draws):
            index = stratified_draw(y_train, fraction, np.random.default_rng(seed))
            xs, ys = x_train[index], y_train[index]
            best = max(params.c_grid, key=lambda c: float(
                (_scores(_fit(xs, ys, c, params.max_iter), x_val, classes).argmax(1).numpy() == y_val).mean()))
            metrics = classification_metrics(_scores(_fit(xs, ys, best, params.max_iter), x_test, classes),
                                             y_test)
            for m in METRICS:
                if m in metrics:
                    runs[m].append(float(metrics[m]))
            chosen_c.append(best)
            sizes.append(len(index))
        summary: dict[str, Any] = {"train_samples": int(np.mean(sizes)), "draws": draws, "c": chosen_c}
        for m, values in runs.items():
            if values:
                summary[m] = float(np.mean(values))
                summary[f"{m}_std"] = float(np.std(values))
        results[f"{fraction:g}"] = summary
        log.info("linear probe at %g of the labels (%d images, C %s): top-1 %.4f ± %.4f", fraction,
                 summary["train_samples"], chosen_c, summary["top1"], summary["top1_std"])
    return results
