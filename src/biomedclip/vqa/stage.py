"""The `vqa` stage: every configured benchmark, an answer model each, scored without leaks.

For each benchmark of `vqa.benchmarks`: read its questions (`vqa.formats`), embed its train (and
validation) splits (cached with frozen encoders), drop questions whose image does not decode
(rejected, named), plan the splits (`vqa.protocol`: vocabulary from training answers, validation
for the epoch), train the answer model (`vqa.train`), then read the test split, once, and score
it with the question-only baseline beside it. Writes `vqa.outputs.model/<benchmark>/` (the answer
model and its vocabulary), and, when every benchmark ran, `vqa.outputs.metrics` and
`vqa.outputs.report`. Under torchrun (fine-tuning with `nproc` > 1) rank 0 alone writes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.evaluate.benchmarks import MAX_PIXELS
from biomedclip.evaluate.formats import StoreImages
from biomedclip.models import LoadedModel, load_model
from biomedclip.train.distributed import World, close_world, init_world
from biomedclip.vqa.features import TokenFeatures, split_features, token_widths
from biomedclip.vqa.formats import Question, Reject, RejectReason, VqaDataset, load_vqa
from biomedclip.vqa.fusion import AnswerModel
from biomedclip.vqa.model_folder import write_answer_model
from biomedclip.vqa.params import VqaBenchmarkSpec, VqaParams
from biomedclip.vqa.protocol import (
    Plan,
    accuracy,
    answer_labels,
    plan_splits,
    question_only,
    vocabulary_coverage,
)
from biomedclip.vqa.report import BenchmarkResult, VqaReport
from biomedclip.vqa.train import (
    EncodedAnswerModel,
    Fitted,
    QuestionInputs,
    fit_end_to_end,
    fit_on_features,
    predict_end_to_end,
    predict_on_features,
)

log = logging.getLogger(__name__)


def _reject_unreadable(dataset: VqaDataset, questions: Sequence[Question], unreadable: dict[str, str]
                       ) -> list[Question]:
    """The questions whose image decoded; the others rejected, named."""
    kept = []
    for q in questions:
        if q.image in unreadable:
            dataset.rejects.append(Reject(q.file, q.qid, RejectReason.UNREADABLE_IMAGE,
                                          f"image {q.image!r}: {unreadable[q.image]}"))
        else:
            kept.append(q)
    return kept


class _Embedded:
    """Token features of a benchmark's splits with frozen encoders, through the cache."""

    def __init__(self, loaded: LoadedModel, dataset: VqaDataset, params: VqaParams) -> None:
        self.loaded, self.dataset, self.params = loaded, dataset, params
        self.counts = {"images": 0, "questions": 0}

    def split(self, split: str) -> tuple[TokenFeatures, list[Question]]:
        """The split's readable questions and their features (rows aligned)."""
        questions = self.dataset.splits[split]
        features, from_cache = split_features(self.loaded, self.loaded.digest, self.dataset, split, questions,
                                              cache=self.params.cache, batch_size=self.params.embed_batch_size)
        if not from_cache:
            self.counts["images"] += len(features.image_ok)
            self.counts["questions"] += len(questions)
        keys = self.dataset.images(split)
        unreadable = {keys[i]: "does not decode" for i in (~features.image_ok).nonzero().flatten().tolist()}
        kept = _reject_unreadable(self.dataset, questions, unreadable)
        rows = [i for i, q in enumerate(questions) if q.image not in unreadable]
        return features.select(rows), kept


def _rows(questions: Sequence[Question], subset: Sequence[Question]) -> list[int]:
    index = {q: i for i, q in enumerate(questions)}
    return [index[q] for q in subset]


def _labels(questions: Sequence[Question], vocabulary: list[str]) -> torch.Tensor:
    return torch.tensor(answer_labels(questions, vocabulary), dtype=torch.long)


def _frozen(loaded: LoadedModel, dataset: VqaDataset, params: VqaParams, world: World
            ) -> tuple[Plan, AnswerModel, Fitted, torch.Tensor, list[Question], dict[str, int]]:
    """Train on cached features; (plan, answer model, selection, test probabilities, test questions,
    embedded counts)."""
    embedded = _Embedded(loaded, dataset, params)
    train, train_questions = embedded.split("train")
    dataset.splits["train"] = train_questions
    val = None
    if dataset.splits.get("val"):
        val, dataset.splits["val"] = embedded.split("val")
    plan = plan_splits(dataset.splits, val_fraction=params.val_fraction, seed=params.seed)
    fit = train.select(_rows(train_questions, plan.fit))
    select = val if val is not None else train.select(_rows(train_questions, plan.select))
    model = AnswerModel(train.image_tokens.shape[-1], train.text_tokens.shape[-1], len(plan.vocabulary),
                        params.fusion)
    fitted = fit_on_features(model, fit, _labels(plan.fit, plan.vocabulary), select,
                             _labels(plan.select, plan.vocabulary), params, device=world.device,
                             description=f"{dataset.name} answer model")
    model.load_state_dict(fitted.state)
    test, test_questions = embedded.split("test")  # the test split, read once, at the end
    probabilities = predict_on_features(model, test, batch_size=params.embed_batch_size, device=world.device)
    return plan, model.cpu(), fitted, probabilities, test_questions, embedded.counts


def _decoded(dataset: VqaDataset, questions: Sequence[Question]) -> tuple[dict[str, Any], dict[str, str]]:
    """(image key -> RGB image, image key -> why it did not decode) of the questions' images."""
    keys = sorted({q.image for q in questions})
    images, unreadable = {}, {}
    for key, image in zip(keys, StoreImages(dataset.store, MAX_PIXELS).read(keys), strict=True):
        if isinstance(image, Exception):
            unreadable[key] = f"{type(image).__name__}: {image}"
        else:
            images[key] = image
    return images, unreadable


def _inputs(loaded: LoadedModel, images: dict[str, Any], questions: Sequence[Question]) -> QuestionInputs:
    ids = loaded.tokenizer([q.question for q in questions]) if questions else torch.zeros((0, 1), dtype=torch.long)
    return QuestionInputs(images, questions, ids)


def _fine_tuned(loaded: LoadedModel, dataset: VqaDataset, params: VqaParams, world: World
                ) -> tuple[Plan, EncodedAnswerModel, Fitted, torch.Tensor, list[Question], dict[str, int]]:
    """Fine-tune the encoders with the answer model; as `_frozen`. Images are decoded once and
    kept in memory (VQA-RAD's 315, SLAKE's 642)."""
    images: dict[str, Any] = {}
    for split in ("train", "val"):
        if dataset.splits.get(split):
            found, unreadable = _decoded(dataset, dataset.splits[split])
            images.update(found)
            dataset.splits[split] = _reject_unreadable(dataset, dataset.splits[split], unreadable)
    plan = plan_splits(dataset.splits, val_fraction=params.val_fraction, seed=params.seed)
    image_width, text_width = token_widths(loaded)
    model = EncodedAnswerModel(loaded.model, AnswerModel(image_width, text_width, len(plan.vocabulary),
                                                         params.fusion))
    fitted = fit_end_to_end(model, loaded.preprocess, _inputs(loaded, images, plan.fit),
                            _labels(plan.fit, plan.vocabulary), _inputs(loaded, images, plan.select),
                            _labels(plan.select, plan.vocabulary), params, world,
                            description=f"{dataset.name} fine-tuning")
    model.load_state_dict(fitted.state)
    # the test split, read once, at the end (by rank 0, which writes the results)
    test_images, unreadable = _decoded(dataset, plan.test) if world.is_main else ({}, {})
    test_questions = _reject_unreadable(dataset, plan.test, unreadable) if world.is_main else []
    probabilities = predict_end_to_end(model, _inputs(loaded, test_images, test_questions), loaded.preprocess,
                                       batch_size=params.embed_batch_size, device=world.device, params=params) \
        if world.is_main else torch.zeros(0)
    counts = {"images": len(images) + len(test_images), "questions": len(plan.fit) + len(plan.select)
              + len(test_questions)}
    return plan, model, fitted, probabilities, test_questions, counts


def run_benchmark(spec: VqaBenchmarkSpec, params: VqaParams, loaded: LoadedModel, model_ref: str,
                  world: World) -> BenchmarkResult | None:
    """Train, select and score one benchmark's answer model and write it: its result on rank 0,
    None on the other ranks of a DDP world."""
    start = time.perf_counter()
    dataset = load_vqa(spec.name, spec.path, format=spec.format, languages=params.languages, s3=params.s3)
    test_in_train = len(set(dataset.images("test")) & set(dataset.images("train")))
    work = _frozen if params.freeze_encoders else _fine_tuned
    plan, model, fitted, probabilities, test_questions, embedded = work(loaded, dataset, params, world)
    if not world.is_main:
        return None
    fit_images, select_images = {q.image for q in plan.fit}, {q.image for q in plan.select}
    result_dir = params.outputs.model / spec.name
    predicted = [plan.vocabulary[i] for i in probabilities.argmax(dim=-1).tolist()]
    training = [*plan.fit, *plan.select]
    result = BenchmarkResult(
        name=spec.name, format=dataset.format, layout=dataset.layout,
        mode="frozen_encoders" if params.freeze_encoders else "fine_tuned",
        questions={"fit": len(plan.fit), "select": len(plan.select), "test": len(test_questions)},
        images={"fit": len(fit_images), "select": len(select_images),
                "test": len({q.image for q in test_questions})},
        vocabulary=len(plan.vocabulary), coverage=vocabulary_coverage(test_questions, plan.vocabulary),
        accuracy=accuracy(predicted, test_questions),
        question_only=accuracy(question_only(training, test_questions), test_questions),
        selection={"how": plan.selection, "epoch": fitted.best_epoch, "epochs_run": fitted.epochs_run,
                   "accuracy": fitted.select_accuracy},
        rejects=list(dataset.rejects), left_out_by_language=dict(dataset.left_out_by_language),
        test_images_in_train=test_in_train, embedded=embedded, model_folder=str(result_dir))
    answer = model.answer if isinstance(model, EncodedAnswerModel) else model
    encoders = model.clip.state_dict() if isinstance(model, EncodedAnswerModel) else None
    write_answer_model(result_dir, answer_state=answer.state_dict(), vocabulary=plan.vocabulary,
                       encoder_state=encoders, config=_folder_config(spec, dataset, params, loaded, model_ref,
                                                                     answer, result))
    result.seconds = time.perf_counter() - start
    log.info("benchmark %s: overall accuracy %s (question-only %s) on %d test questions", spec.name,
             result.accuracy["overall"]["accuracy"], result.question_only["overall"]["accuracy"],
             len(test_questions))
    return result


def _folder_config(spec: VqaBenchmarkSpec, dataset: VqaDataset, params: VqaParams, loaded: LoadedModel,
                   model_ref: str, answer: AnswerModel, result: BenchmarkResult) -> dict[str, Any]:
    return {"benchmark": {"name": spec.name, "format": dataset.format, "layout": dataset.layout,
                          "version": dataset.version()},
            "encoder": {"model": model_ref, "digest": loaded.digest, "fine_tuned": not params.freeze_encoders},
            "widths": {"image": answer.fusion.image_in.in_features, "text": answer.fusion.text_in.in_features},
            "fusion": params.fusion.model_dump(mode="json"), "languages": list(params.languages),
            "selection": {k: v for k, v in result.selection.items()},
            "accuracy": {group: value["accuracy"] for group, value in result.accuracy.items()}}


def run(params: VqaParams, *, model: str, benchmark: str | None = None, tracking: Any = None) -> VqaReport:
    """The stage: every benchmark of `params` (or only `benchmark`) with `model` (a folder,
    `hf-hub:`, an MLflow URI read from `tracking`'s store). Metrics and report are written when
    every benchmark ran; one benchmark alone writes its answer model and returns its report."""
    world = init_world()
    try:
        if world.distributed and params.freeze_encoders:
            raise ValueError("frozen encoders train the answer model in one process: run without torchrun, "
                             "or set vqa.freeze_encoders: false")
        loaded = load_model(model, device=world.device, tracking=tracking)
        specs = [params.benchmark(benchmark)] if benchmark else list(params.benchmarks)
        results = [run_benchmark(spec, params, loaded, model, world) for spec in specs]
        report = VqaReport(model, params, [r for r in results if r is not None])
        if world.is_main and benchmark is None:
            write_outputs(report, params)
        elif world.is_main:
            log.info("one benchmark ran (%s): %s and %s are left as they are", benchmark,
                     params.outputs.metrics, params.outputs.report)
        return report
    finally:
        close_world(world)


def write_outputs(report: VqaReport, params: VqaParams) -> None:
    metrics = json.dumps(report.metrics(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(params.outputs.metrics, metrics.encode())
    atomic_write_bytes(params.outputs.report, report.markdown().encode())
