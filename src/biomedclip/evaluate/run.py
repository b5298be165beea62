"""Evaluate a model: retrieval on a held-out split, zero-shot classification on benchmarks, and
behavioural model tests. Writes the metrics (DVC metrics), the plots' data (DVC plots), the
model-test report, and logs the same into the training's MLflow run when there is one.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.digests import file_sha256
from biomedclip.evaluate.benchmarks import Benchmark, BenchmarkError, load_benchmark
from biomedclip.evaluate.classification import class_embeddings, classification_metrics
from biomedclip.evaluate.embedding import (
    decode,
    embed_images,
    embed_pairs,
    embed_texts,
    shard_samples,
)
from biomedclip.evaluate.feature_cache import cache_key
from biomedclip.evaluate.formats import PAPER_ZERO_SHOT, PRESETS
from biomedclip.evaluate.params import DETAILS, EvaluateOutputs, EvaluateParams
from biomedclip.evaluate.probe import cached_features, linear_probe
from biomedclip.evaluate.results_cache import (
    evaluation_key,
    keep_examples,
    recall,
    record,
    restore_examples,
)
from biomedclip.evaluate.retrieval import block_rows, retrieval_metrics
from biomedclip.models import LoadedModel, build, chosen_or_trained, located
from biomedclip.search.examples import retrieval_examples
from biomedclip.tracking import TrackingParams

log = logging.getLogger(__name__)


def _reencoded(data: bytes, quality: int) -> Image.Image:
    out = io.BytesIO()
    decode(data).save(out, format="JPEG", quality=quality)
    return decode(out.getvalue())


def retrieval(loaded: LoadedModel, folder: Path, params: EvaluateParams) -> dict[str, float]:
    """Image→text and text→image rank metrics of a split's pairs, streamed from its shards."""
    image_features, text_features = embed_pairs(loaded, shard_samples(folder), params.batch_size)
    n = len(image_features)
    if n < 2:
        raise ValueError(f"{folder}: retrieval needs at least 2 pairs, found {n}")
    chunk = block_rows(n, params.similarity_memory_mb)
    return {"pairs": float(n), "chance_recall_at_1": 1.0 / n,
            **retrieval_metrics(image_features, text_features, ks=params.ks, chunk=chunk)}


def _collect_labels(pairs: Iterable[tuple[Image.Image, int]], labels: list[int]) -> Iterator[Image.Image]:
    """Images of (image, label) pairs, appending each label to `labels` as its image goes by."""
    for image, label in pairs:
        labels.append(label)
        yield image


def _features(loaded: LoadedModel, bench: Benchmark, params: EvaluateParams) -> tuple[torch.Tensor, torch.Tensor]:
    """A benchmark split's image features and labels, from the feature cache when it has them."""
    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        labels: list[int] = []
        features = embed_images(loaded, _collect_labels(bench.images(), labels), params.batch_size)
        if bench.skipped:
            log.warning("benchmark %s (%s): %d images skipped, e.g. %s", bench.name, bench.split or "all",
                        len(bench.skipped), bench.skipped[0])
        return features, torch.tensor(labels, dtype=torch.long)

    if not loaded.digest or bench.split is None or not params.linear_probe.enabled:
        return compute()  # only what a probe reads again is cached: benchmarks with splits
    key = cache_key(loaded.digest, bench.version(), bench.split or "all")
    return cached_features(params.linear_probe.cache, key, compute)


def zero_shot(loaded: LoadedModel, params: EvaluateParams
              ) -> tuple[dict[str, Any], dict[str, list], dict[str, Any]]:
    """Zero-shot metrics and predictions per benchmark, and the linear probes of those with a
    train split."""
    results, predictions, probes = {}, {}, {}
    for spec in params.benchmarks:
        preset = PRESETS.get(spec.preset) if spec.preset else None
        load = functools.partial(load_benchmark, spec.name, spec.path, classes=spec.classes, format=spec.format,
                                 preset=spec.preset, s3=params.s3)
        bench = load()
        templates = spec.templates or (preset.templates if preset else params.templates)
        image_features, truth = _features(loaded, bench, params)
        if not len(image_features):
            raise ValueError(f"benchmark {spec.name}: no readable images ({len(bench.skipped)} skipped)")
        classes = class_embeddings(lambda texts: embed_texts(loaded, texts, params.batch_size),
                                   bench.classes, templates)
        scores = 100.0 * image_features @ classes.T
        metrics = classification_metrics(scores, truth)
        metrics["chance_top1"] = 1.0 / len(bench.classes)
        metrics["classes"] = bench.classes
        metrics["skipped"] = len(bench.skipped)
        metrics["headline"] = preset.headline if preset else "top1"  # the metric the paper reports for it
        results[spec.name] = metrics
        predicted = scores.argmax(dim=1).tolist()
        predictions[spec.name] = [{"actual": bench.classes[a], "predicted": bench.classes[p]}
                                  for a, p in zip(truth.tolist(), predicted, strict=True)]
        if params.linear_probe.enabled and bench.split == "test":
            probe = _probe(loaded, load, (image_features, truth), len(bench.classes), params)
            if probe is not None:
                probes[spec.name] = probe
    return results, predictions, probes


def _probe(loaded: LoadedModel, load: Callable[..., Benchmark], test: tuple[torch.Tensor, torch.Tensor],
           classes: int, params: EvaluateParams) -> dict[str, Any] | None:
    """The linear probes of a benchmark whose train split exists (None when it has none)."""
    try:
        train = load(split="train")
    except BenchmarkError:
        return None
    if train.split != "train":
        return None
    try:
        val = load(split="val")
        val = val if val.split == "val" else None
    except BenchmarkError:
        val = None
    return linear_probe(_features(loaded, train, params), _features(loaded, val, params) if val else None,
                        test, classes, params.linear_probe)


def model_tests(loaded: LoadedModel, folder: Path, ranks: dict[str, float],
                params: EvaluateParams) -> dict[str, dict[str, Any]]:
    """Behaviour a usable model must show (Made-With-ML's model tests), on the split's first images;
    `ranks` is the split's retrieval result."""
    n = int(ranks["pairs"])
    sample = [jpeg for jpeg, _ in islice(shard_samples(folder), 64)]
    first = embed_images(loaded, (decode(b) for b in sample), params.batch_size)
    again = embed_images(loaded, (decode(b) for b in sample), params.batch_size)
    reencoded = embed_images(loaded, (_reencoded(b, params.jpeg_quality) for b in sample), params.batch_size)
    similarity = float((first * reencoded).sum(dim=1).mean())
    chance_median = (n + 1) / 2
    median = ranks["text_to_image/median_rank"]
    return {
        "caption_finds_its_image": {
            "passed": median < chance_median / 2, "value": median,
            "rule": f"median rank of a caption's own image < half the chance median ({chance_median / 2:.1f})"},
        "deterministic_embeddings": {
            "passed": bool(torch.allclose(first, again, atol=1e-6)),
            "value": float((first - again).abs().max()), "rule": "the same image twice: max abs difference <= 1e-6"},
        "jpeg_reencoding_invariance": {
            "passed": similarity >= params.min_jpeg_similarity, "value": round(similarity, 6),
            "rule": f"mean cosine similarity to a JPEG q{params.jpeg_quality} copy >= {params.min_jpeg_similarity}"},
    }


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue().encode())


def report_markdown(result: dict[str, Any]) -> str:
    lines = [f"## Evaluation of `{result['model']}`", "", "### Retrieval "
             f"({result['retrieval']['pairs']:.0f} {result['split']} pairs)", "",
             "| direction | " + " | ".join(f"R@{k}" for k in result["ks"]) + " | median rank |",
             "|---|" + "---|" * (len(result["ks"]) + 1)]
    for direction in ("image_to_text", "text_to_image"):
        r = result["retrieval"]
        lines.append(f"| {direction} | " + " | ".join(f"{r[f'{direction}/recall_at_{k}']:.3f}" for k in result["ks"])
                     + f" | {r[f'{direction}/median_rank']:.0f} |")
    lines += ["", f"Chance R@1: {result['retrieval']['chance_recall_at_1']:.4f}", "", "### Zero-shot", "",
              "| benchmark | top-1 | balanced acc. | macro-F1 | AUROC | chance | skipped |",
              "|---|---|---|---|---|---|---|"]
    for name, m in result["zero_shot"].items():
        auroc = f"{m['auroc']:.3f}" if "auroc" in m else ""
        lines.append(f"| {name} | {m['top1']:.3f} | {m['balanced_accuracy']:.3f} | {m['macro_f1']:.3f} | {auroc} | "
                     f"{m['chance_top1']:.3f} | {m['skipped']} |")
    if result.get("linear_probe"):
        lines += ["", "### Linear probes (top-1, mean ± std over the draws)", "",
                  "| benchmark | labels | train images | top-1 | balanced acc. | validation |",
                  "|---|---|---|---|---|---|"]
        for name, fractions in result["linear_probe"].items():
            for fraction, m in fractions.items():
                if isinstance(m, dict):
                    lines.append(f"| {name} | {float(fraction):.0%} | {m['train_samples']} | {m['top1']:.3f} ± "
                                 f"{m['top1_std']:.3f} | {m['balanced_accuracy']:.3f} | {fractions['validation']} |")
    references = result.get("paper_reference") or {}
    if references:
        lines += ["", "### For reference: the paper's published BiomedCLIP (not measured here)", "",
                  "Zero-shot at 224 px as Zhang et al. (2023) report them for their released model; the "
                  "measured numbers are the tables above.", "",
                  "| benchmark | preset | metric | the paper's value |", "|---|---|---|---|"]
        lines += [f"| {name} | {ref['preset']} | {ref['metric']} | {ref['value']:.2f} |"
                  for name, ref in references.items()]
    lines += ["", "### Model tests", "", "| test | result | value | rule |", "|---|---|---|---|"]
    for name, t in result["model_tests"].items():
        lines.append(f"| {name} | {'pass' if t['passed'] else '**fail**'} | {t['value']} | {t['rule']} |")
    if result.get("examples"):
        lines += ["", "### What it retrieves", "", f"Before trusting a recall number, look at [the top figures a few "
                  f"{result['split']} captions retrieve, and the top captions of a few figures]"
                  f"({result['examples']}/index.html), the true one marked."]
    return "\n".join(lines) + "\n"


def paper_reference(params: EvaluateParams) -> dict[str, dict[str, Any]]:
    """The paper's zero-shot number for each benchmark that is one of its datasets: a preset with
    the preset's own classes (a benchmark that only borrows a preset's templates is not PCam)."""
    return {spec.name: {"preset": spec.preset, "metric": PRESETS[spec.preset].headline,
                        "value": PAPER_ZERO_SHOT[spec.preset]}
            for spec in params.benchmarks if spec.preset in PAPER_ZERO_SHOT and spec.classes is None}


def model_to_evaluate(params: EvaluateParams, run_info: Path, registered_name: str) -> tuple[str, str | None]:
    """The model to evaluate and the MLflow run its results go into: `evaluate.model` when set
    (its results go into no run; `@alias` and `N` name versions of `registered_name`), else the
    train stage's model and its training run."""
    return chosen_or_trained(params.model, registered_name, run_info, key="evaluate.model", verb="evaluate")


def measure(loaded: LoadedModel, params: EvaluateParams, folder: Path) -> dict[str, Any]:
    """Everything an evaluation finds about `loaded` (the split's shards in `folder`): retrieval,
    zero-shot with its predictions and confusion, the probes, the model tests."""
    retrieval_result = retrieval(loaded, folder, params)
    zero_shot_result, predictions, probes = zero_shot(loaded, params)
    tests = model_tests(loaded, folder, retrieval_result, params)
    return {"split": params.split, "ks": list(params.ks), "retrieval": retrieval_result,
            "zero_shot": {k: {m: v for m, v in r.items() if m != "confusion"} for k, r in zero_shot_result.items()},
            "linear_probe": probes, "model_tests": tests, "predictions": predictions,
            "confusion": {k: r["confusion"] for k, r in zero_shot_result.items()}}


def headline(result: dict[str, Any]) -> dict[str, float]:
    """The numbers a person compares, under short names (the declared DVC metrics, one row of
    `dvc metrics show`): retrieval Recall@k both ways, each benchmark's headline metric, the
    probes' top-1 per label fraction. Every other number is in the details file beside the plots."""
    numbers: dict[str, float] = {}
    for direction, short in (("image_to_text", "i2t"), ("text_to_image", "t2i")):
        numbers.update({f"{short} R@{k}": result["retrieval"][f"{direction}/recall_at_{k}"] for k in result["ks"]})
    for name, metrics in result["zero_shot"].items():
        metric = metrics.get("headline", "top1")
        numbers[f"{name} {metric}"] = metrics[metric]
    for name, fractions in result["linear_probe"].items():
        numbers.update({f"{name} probe {float(f):.0%}": m["top1"] for f, m in fractions.items() if isinstance(m, dict)})
    return numbers


def examples_folder(outputs: EvaluateOutputs) -> Path:
    """The model report's pictures, beside it: `reports/model-tests/` for `reports/model-tests.md`."""
    return outputs.report.with_suffix("")


def evaluate(params: EvaluateParams, *, model: str, shards_dir: Path, mlflow_run_id: str | None = None,
             tracking: TrackingParams | None = None, examples: bool = True) -> dict[str, Any]:
    """Evaluate `model` (any model reference); returns and writes the results. With
    `mlflow_run_id` (and tracking enabled) the results are also logged into that run.

    An evaluation is computed once (`results_cache`): the same weights, test shards, benchmarks
    and params give the recorded result back, logged as reused and marked so (`reused`: the
    record's path), instead of embedding everything again. With `examples`, the model report's
    pictures (the top figures a few captions retrieve, the top captions of a few figures) are
    written beside the report, from the record too when it has them."""
    folder, pictures = shards_dir / params.split, examples_folder(params.outputs)
    with located(model, tracking=tracking) as files:
        key = evaluation_key(file_sha256(files.weights), files.model_cfg, params, shards_dir)
        measured = recall(params.cache, key)
        loaded = None
        if measured is not None:
            reused: str | None = str(params.cache / key)
            log.info("%s: these weights were evaluated on the same test shards, benchmarks and params "
                     "before: reusing %s", model, reused)
        else:
            reused, loaded = None, build(files)
            measured = measure(loaded, params, folder)
            record(params.cache, key, measured)
        if examples and not restore_examples(params.cache, key, pictures):
            retrieval_examples(loaded or build(files), shard_samples(folder), pictures,
                               batch_size=params.batch_size)
            keep_examples(params.cache, key, pictures)
    predictions, confusion = measured["predictions"], measured["confusion"]
    result = {"model": model, **{k: v for k, v in measured.items() if k not in ("predictions", "confusion")}}
    if examples:
        result["examples"] = pictures.name  # beside the report, which links it
    out = params.outputs
    details = {**result, "zero_shot": {k: {m: v for m, v in r.items() if m != "classes"}
                                       for k, r in result["zero_shot"].items()}}
    atomic_write_bytes(out.metrics, (json.dumps(headline(result), indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out.plots / DETAILS, (json.dumps(details, indent=2, sort_keys=True) + "\n").encode())
    retrieval_result = result["retrieval"]
    _write_csv(out.plots / "recall_at_k.csv",
               [{"k": k, **{d: retrieval_result[f"{d}/recall_at_{k}"] for d in ("image_to_text", "text_to_image")}}
                for k in params.ks], ["k", "image_to_text", "text_to_image"])
    for name, rows in predictions.items():
        _write_csv(out.plots / f"confusion_{name}.csv", rows, ["actual", "predicted"])
    for name, fractions in result["linear_probe"].items():  # accuracy against label fraction, zero-shot at 0%
        zero = result["zero_shot"][name]
        rows = [{"fraction": 0.0, "method": "zero-shot", "top1": zero["top1"], "top1_std": 0.0}]
        rows += [{"fraction": float(f), "method": "linear probe", "top1": m["top1"], "top1_std": m["top1_std"]}
                 for f, m in fractions.items() if isinstance(m, dict)]
        _write_csv(out.plots / f"label_fraction_{name}.csv", rows, ["fraction", "method", "top1", "top1_std"])
    # The same bytes whether computed now or reused: the outputs are the result's, not the run's.
    atomic_write_bytes(out.report, report_markdown({**result, "paper_reference": paper_reference(params)}).encode())
    if mlflow_run_id and tracking is not None and tracking.enabled:
        _log_to_mlflow(mlflow_run_id, tracking, result, out)
    return {**result, "confusion": confusion, "reused": reused}


def _log_to_mlflow(run_id: str, tracking: TrackingParams, result: dict[str, Any], out: EvaluateOutputs) -> None:
    from biomedclip.tracking import log_evaluation

    flat = {f"eval/{k}": v for k, v in result["retrieval"].items()}
    for name, m in result["zero_shot"].items():
        flat.update({f"eval/{name}/{k}": v for k, v in m.items() if isinstance(v, int | float)})
    for name, fractions in result.get("linear_probe", {}).items():
        flat.update({f"eval/{name}/probe_{f}/{k}": v for f, m in fractions.items() if isinstance(m, dict)
                     for k, v in m.items() if isinstance(v, int | float)})
    flat.update({f"eval/model_tests/{name}": float(test["passed"]) for name, test in result["model_tests"].items()})
    log_evaluation(run_id, tracking, flat, [(out.metrics, "evaluation"), (out.report, "evaluation"),
                                            (out.plots, "evaluation/plots")])
