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
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.evaluate.benchmarks import MAX_PIXELS
from biomedclip.evaluate.formats import StoreImages
from biomedclip.models import LoadedModel, chosen_or_trained, load_model
from biomedclip.params import Params
from biomedclip.stage import StageContext
from biomedclip.train.distributed import World, close_world, init_world
from biomedclip.vqa.features import TokenFeatures, split_features, token_widths
from biomedclip.vqa.formats import Question, Reject, RejectReason, VqaDataset, load_vqa
from biomedclip.vqa.fusion import AnswerModel, new_answer_model
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
from biomedclip.vqa.report import BenchmarkResult, VqaReport, flat_metrics_of
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


@dataclass
class Trained:
    """A benchmark's answer model, how its epoch was chosen, and its test predictions."""

    plan: Plan
    model: AnswerModel | EncodedAnswerModel
    fitted: Fitted
    probabilities: torch.Tensor  # (Q, A) over the test questions kept (rank 0; empty elsewhere)
    test: list[Question]  # the test questions whose image decoded
    embedded: dict[str, int]  # images and questions this run put through the encoders

    @property
    def answer_model(self) -> AnswerModel:
        return self.model.answer if isinstance(self.model, EncodedAnswerModel) else self.model


def _reject_unreadable(dataset: VqaDataset, questions: Sequence[Question],
                       unreadable: dict[str, str]) -> list[Question]:
    """The questions whose image decoded; the others rejected, named."""
    kept = []
    for q in questions:
        if q.image in unreadable:
            detail = f"image {q.image!r}: {unreadable[q.image]}"
            dataset.rejects.append(Reject(q.file, q.qid, RejectReason.UNREADABLE_IMAGE, detail))
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
        features, from_cache = split_features(
            self.loaded, self.loaded.digest, self.dataset, split, questions,
            cache=self.params.cache, batch_size=self.params.embed_batch_size)
        if not from_cache:
            self.counts["images"] += len(features.image_ok)
            self.counts["questions"] += len(questions)
        keys = self.dataset.images(split)
        failed = (~features.image_ok).nonzero().flatten().tolist()
        unreadable = {keys[i]: "does not decode" for i in failed}
        kept = _reject_unreadable(self.dataset, questions, unreadable)
        rows = [i for i, q in enumerate(questions) if q.image not in unreadable]
        return features.select(rows), kept


def _rows(questions: Sequence[Question], subset: Sequence[Question]) -> list[int]:
    index = {q: i for i, q in enumerate(questions)}
    return [index[q] for q in subset]


def _labels(questions: Sequence[Question], vocabulary: list[str]) -> torch.Tensor:
    return torch.tensor(answer_labels(questions, vocabulary), dtype=torch.long)


def _frozen(loaded: LoadedModel, dataset: VqaDataset, params: VqaParams, world: World) -> Trained:
    """The answer model trained on cached token features."""
    embedded = _Embedded(loaded, dataset, params)
    train, dataset.splits["train"] = embedded.split("train")
    val = None
    if dataset.splits.get("val"):
        val, dataset.splits["val"] = embedded.split("val")
    plan = plan_splits(dataset.splits, val_fraction=params.val_fraction, seed=params.seed)
    fit = train.select(_rows(dataset.splits["train"], plan.fit))
    select = val if val is not None else train.select(_rows(dataset.splits["train"], plan.select))
    model = new_answer_model(train.image_tokens.shape[-1], train.text_tokens.shape[-1],
                             len(plan.vocabulary), params.fusion, seed=params.seed)
    fitted = fit_on_features(model, fit, _labels(plan.fit, plan.vocabulary), select,
                             _labels(plan.select, plan.vocabulary), params, device=world.device,
                             description=f"{dataset.name} answer model")
    model.load_state_dict(fitted.state)
    del train, val, fit, select  # memory holds one split's features at a time
    test, kept = embedded.split("test")  # the test split, read once, at the end
    probabilities = predict_on_features(model, test, batch_size=params.embed_batch_size,
                                        device=world.device)
    return Trained(plan, model.cpu(), fitted, probabilities, kept, embedded.counts)


def _decoded(dataset: VqaDataset, questions: Sequence[Question]
             ) -> tuple[dict[str, Any], dict[str, str]]:
    """(image key -> RGB image, image key -> why it did not decode) of the questions' images."""
    keys = sorted({q.image for q in questions})
    images, unreadable = {}, {}
    for key, image in zip(keys, StoreImages(dataset.store, MAX_PIXELS).read(keys), strict=True):
        if isinstance(image, Exception):
            unreadable[key] = f"{type(image).__name__}: {image}"
        else:
            images[key] = image
    return images, unreadable


def _inputs(loaded: LoadedModel, images: dict[str, Any],
            questions: Sequence[Question]) -> QuestionInputs:
    texts = [q.question for q in questions]
    ids = loaded.tokenizer(texts) if texts else torch.zeros((0, 1), dtype=torch.long)
    return QuestionInputs(images, questions, ids)


def _fine_tuned(loaded: LoadedModel, dataset: VqaDataset, params: VqaParams,
                world: World) -> Trained:
    """The encoders fine-tuned with the answer model. Images are decoded once and kept in
    memory (VQA-RAD's 315, SLAKE's 642)."""
    images: dict[str, Any] = {}
    for split in ("train", "val"):
        if dataset.splits.get(split):
            found, unreadable = _decoded(dataset, dataset.splits[split])
            images.update(found)
            dataset.splits[split] = _reject_unreadable(dataset, dataset.splits[split], unreadable)
    plan = plan_splits(dataset.splits, val_fraction=params.val_fraction, seed=params.seed)
    image_width, text_width = token_widths(loaded)
    answer = new_answer_model(image_width, text_width, len(plan.vocabulary), params.fusion, seed=params.seed)
    model = EncodedAnswerModel(loaded.model, answer)
    fit, select = _inputs(loaded, images, plan.fit), _inputs(loaded, images, plan.select)
    fitted = fit_end_to_end(model, loaded.preprocess, fit, _labels(plan.fit, plan.vocabulary),
                            select, _labels(plan.select, plan.vocabulary), params, world,
                            description=f"{dataset.name} fine-tuning")
    model.load_state_dict(fitted.state)
    embedded = {"images": len(images), "questions": len(plan.fit) + len(plan.select)}
    if not world.is_main:  # rank 0 reads the test split and writes the results
        return Trained(plan, model, fitted, torch.zeros(0), [], embedded)
    test_images, unreadable = _decoded(dataset, plan.test)  # read once, at the end
    kept = _reject_unreadable(dataset, plan.test, unreadable)
    probabilities = predict_end_to_end(model, _inputs(loaded, test_images, kept), loaded.preprocess,
                                       batch_size=params.embed_batch_size, device=world.device,
                                       params=params)
    embedded = {"images": len(images) + len(test_images),
                "questions": embedded["questions"] + len(kept)}
    return Trained(plan, model, fitted, probabilities, kept, embedded)


def _result(spec: VqaBenchmarkSpec, dataset: VqaDataset, params: VqaParams, trained: Trained,
            test_in_train: int) -> BenchmarkResult:
    plan, test = trained.plan, trained.test
    predicted = [plan.vocabulary[i] for i in trained.probabilities.argmax(dim=-1).tolist()]
    return BenchmarkResult(
        name=spec.name, format=dataset.format, layout=dataset.layout,
        mode="frozen_encoders" if params.freeze_encoders else "fine_tuned",
        questions={"fit": len(plan.fit), "select": len(plan.select), "test": len(test)},
        images={name: len({q.image for q in qs})
                for name, qs in (("fit", plan.fit), ("select", plan.select), ("test", test))},
        vocabulary=len(plan.vocabulary), coverage=vocabulary_coverage(test, plan.vocabulary),
        accuracy=accuracy(predicted, test),
        question_only=accuracy(question_only([*plan.fit, *plan.select], test), test),
        selection={"how": plan.selection, "epoch": trained.fitted.best_epoch,
                   "epochs_run": trained.fitted.epochs_run,
                   "accuracy": trained.fitted.select_accuracy},
        rejects=list(dataset.rejects), left_out_by_language=dict(dataset.left_out_by_language),
        test_images_in_train=test_in_train, embedded=trained.embedded,
        model_folder=str(params.outputs.model / spec.name))


def run_benchmark(spec: VqaBenchmarkSpec, params: VqaParams, loaded: LoadedModel, model_ref: str,
                  world: World, *, write: bool = True) -> BenchmarkResult | None:
    """Train, select and score one benchmark's answer model and (with `write`) save it: its
    result on rank 0, None on the other ranks of a DDP world."""
    start = time.perf_counter()
    dataset = load_vqa(spec.name, spec.path, format=spec.format, languages=params.languages,
                       s3=params.s3)
    test_in_train = len(set(dataset.images("test")) & set(dataset.images("train")))
    trained = (_frozen if params.freeze_encoders else _fine_tuned)(loaded, dataset, params, world)
    if not world.is_main:
        return None
    result = _result(spec, dataset, params, trained, test_in_train)
    if not write:
        result.model_folder, result.seconds = "", time.perf_counter() - start
        return result
    encoders = trained.model.clip.state_dict() if isinstance(trained.model, EncodedAnswerModel) \
        else None
    write_answer_model(params.outputs.model / spec.name,
                       answer_state=trained.answer_model.state_dict(),
                       vocabulary=trained.plan.vocabulary, encoder_state=encoders,
                       rejects=[reject.as_dict() for reject in dataset.rejects],
                       config=_folder_config(dataset, params, loaded, model_ref, trained, result))
    result.seconds = time.perf_counter() - start
    log.info("benchmark %s: overall accuracy %s (question-only %s) on %d test questions", spec.name,
             result.accuracy["overall"]["accuracy"], result.question_only["overall"]["accuracy"],
             len(trained.test))
    return result


def _folder_config(dataset: VqaDataset, params: VqaParams, loaded: LoadedModel, model_ref: str,
                   trained: Trained, result: BenchmarkResult) -> dict[str, Any]:
    """`vqa_model.json`: what rebuilds the answer model, and what it scored."""
    fusion = trained.answer_model.fusion
    return {"benchmark": {"name": dataset.name, "format": dataset.format, "layout": dataset.layout,
                          "version": dataset.version()},
            "encoder": {"model": model_ref, "digest": loaded.digest,
                        "fine_tuned": not params.freeze_encoders},
            "widths": {"image": fusion.image_in.in_features, "text": fusion.text_in.in_features},
            "fusion": params.fusion.model_dump(mode="json"), "languages": list(params.languages),
            "selection": dict(result.selection),
            "accuracy": {group: value["accuracy"] for group, value in result.accuracy.items()}}


def answer_benchmarks(params: VqaParams, *, model: str, benchmark: str | None = None, tracking: Any = None,
                      write: bool = True) -> VqaReport:
    """The stage: every benchmark of `params` (or only `benchmark`) with `model` (a folder,
    `hf-hub:`, an MLflow URI read from `tracking`'s store). Metrics and report are written when
    every benchmark ran; one benchmark alone writes its answer model and returns its report.
    `write=False` writes nothing (the features cache aside): a score for a comparison, such as
    the promotion gate's of champion and challenger."""
    world = init_world()
    try:
        if world.distributed and params.freeze_encoders:
            raise ValueError("frozen encoders train the answer model in one process: run without "
                             "torchrun, or set vqa.freeze_encoders: false")
        loaded = load_model(model, device=world.device, tracking=tracking)
        specs = [params.benchmark(benchmark)] if benchmark else list(params.benchmarks)
        results = [run_benchmark(spec, params, loaded, model, world, write=write) for spec in specs]
        report = VqaReport(model, params, [r for r in results if r is not None])
        if world.is_main and write and benchmark is None:
            write_outputs(report, params)
        elif world.is_main and write:
            log.info("one benchmark ran (%s): %s and %s are left as they are", benchmark,
                     params.outputs.metrics, params.outputs.report)
        return report
    finally:
        close_world(world)


def write_outputs(report: VqaReport, params: VqaParams) -> None:
    """`vqa.outputs.metrics` (JSON) and `vqa.outputs.report` (markdown), atomically."""
    metrics = json.dumps(report.metrics(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(params.outputs.metrics, metrics.encode())
    atomic_write_bytes(params.outputs.report, report.markdown().encode())


class VqaFailed(RuntimeError):
    """Fine-tuning processes (torchrun) exited with a non-zero status (their error is above)."""


@dataclass(frozen=True)
class WrittenReport:
    """The report the fine-tuning processes wrote (`vqa.outputs.report`), as the stage shows it."""

    text: str

    def markdown(self) -> str:
        return self.text


def stage_model(params: Params) -> tuple[str, str | None]:
    """The model to answer with and the MLflow run its scores go into: `vqa.model` (in its full
    form; no run), else the train stage's model and its training run."""
    return chosen_or_trained(params.vqa.model, params.register.model_name, params.train.outputs.run_info,
                             key="vqa.model", verb="answer with")


def run(params: Params, context: StageContext, *, benchmark: str | None = None) -> VqaReport | WrittenReport:
    """The `vqa` stage: every benchmark of `vqa.benchmarks` (or only `benchmark`) answered with
    `stage_model(params)`; fine-tuning with `vqa.nproc` > 1 runs under torchrun. The scores of the
    train stage's model go into its MLflow run (as `vqa/<benchmark>/<group>/accuracy`)."""
    model, run_id = stage_model(params)
    vqa, tracking = params.vqa, params.tracking
    if run_id and tracking.enabled:  # a run the store does not hold stops here, before the work
        from biomedclip.tracking import connect, workspace_run

        run_id = workspace_run(connect(tracking), run_id, recorded_in=str(params.train.outputs.run_info))
    if vqa.nproc > 1 and "RANK" not in os.environ:
        from biomedclip.vqa.launch import torchrun_vqa

        status = torchrun_vqa(vqa, model=model, benchmark=benchmark, tracking=tracking)
        if status:
            raise VqaFailed(f"VQA fine-tuning under torchrun exited with status {status}")
        report: VqaReport | WrittenReport = WrittenReport(vqa.outputs.report.read_text(encoding="utf-8"))
        flat = flat_metrics_of(json.loads(vqa.outputs.metrics.read_text()))
    else:
        report = answer_benchmarks(vqa, model=model, benchmark=benchmark, tracking=tracking)
        flat = report.flat_metrics()
    if run_id and tracking.enabled and benchmark is None:
        from biomedclip.tracking import log_evaluation

        log_evaluation(run_id, tracking, flat, [(vqa.outputs.metrics, "vqa"), (vqa.outputs.report, "vqa")])
    return report
