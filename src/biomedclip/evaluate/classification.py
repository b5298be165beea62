"""Zero-shot classification: prompt-ensembled class embeddings and the metrics the paper reports.

Metrics are pure functions of (scores, labels): top-1 accuracy, balanced accuracy (mean recall
over the classes present), macro-F1 (mean over the classes that occur in the labels or the
predictions, scikit-learn's convention), AUROC for binary tasks (Mann-Whitney U, ties counted
half), and the confusion matrix (rows: true class, columns: predicted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

PAPER_TEMPLATES = ("this is an image of {}", "{} presented in image", "a photo of {}")


@torch.no_grad()
def class_embeddings(encode_text: Callable[[list[str]], torch.Tensor], class_names: Sequence[str],
                     templates: Sequence[str]) -> torch.Tensor:
    """(C, D): per class, the normalised mean of its normalised prompt embeddings."""
    rows = []
    for name in class_names:
        prompts = [template.format(name) for template in templates]
        features = torch.nn.functional.normalize(encode_text(prompts).float(), dim=-1)
        rows.append(torch.nn.functional.normalize(features.mean(dim=0), dim=-1))
    return torch.stack(rows)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    matrix.index_put_((labels.long(), predicted.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    return matrix


def binary_auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties half (Mann-Whitney)."""
    positive, negative = scores[labels == 1].double(), scores[labels == 0].double()
    if not len(positive) or not len(negative):
        return float("nan")
    ordered = torch.cat([positive, negative])
    ranks = _average_ranks(ordered)
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype)
    unique, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=values.dtype).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, object]:
    """Metrics of (N, C) class scores against (N,) integer labels."""
    classes = scores.shape[1]
    predicted = scores.argmax(dim=1)
    matrix = confusion_matrix(predicted, labels, classes)
    true_per_class = matrix.sum(dim=1).double()
    predicted_per_class = matrix.sum(dim=0).double()
    hits = matrix.diag().double()
    present = true_per_class > 0
    recall = torch.where(present, hits / true_per_class.clamp(min=1), torch.zeros_like(hits))
    precision = torch.where(predicted_per_class > 0, hits / predicted_per_class.clamp(min=1), torch.zeros_like(hits))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(hits))
    metrics: dict[str, object] = {
        "top1": float(hits.sum() / len(labels)),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present | (predicted_per_class > 0)].mean()),
        "samples": len(labels),
        "confusion": matrix.tolist(),
    }
    if classes == 2:  # ranked by the logit gap: softmax saturates to 1.0 at zero-shot logit scales
        metrics["auroc"] = binary_auroc(scores[:, 1].double() - scores[:, 0].double(), labels)
    return metrics
