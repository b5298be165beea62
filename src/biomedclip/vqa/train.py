"""Training the answer model, in two modes, with the epoch chosen on validation data.

- Frozen encoders (`freeze_encoders: true`, the default, what a CPU runs): the fusion and the
  classifier train on cached token features (`vqa.features`) at `frozen_lr`.
- Full fine-tuning: images and questions go through the encoders at every step; the encoders
  train at `lr` (METER: 5e-6), the fusion at `lr x fusion_lr_multiplier` (x5) and the classifier
  at `lr x head_lr_multiplier` (x50); bf16 autocast and DDP (one process per GPU under torchrun,
  the trainer's `init_world`) as `biomedclip.train` does.

Both: AdamW (no decay on biases and norms), linear warm-up then cosine decay (the trainer's
`lr_at`), cross-entropy over the answer vocabulary. After each epoch the validation questions
are scored (exact match: an answer outside the vocabulary is wrong); the best epoch's weights are
kept, and training stops after `patience` epochs without a better score.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn

from biomedclip.console import progress
from biomedclip.train.distributed import World
from biomedclip.train.step import lr_at
from biomedclip.vqa.features import TokenFeatures, image_tokens, text_tokens
from biomedclip.vqa.formats import Question
from biomedclip.vqa.fusion import AnswerModel
from biomedclip.vqa.params import VqaParams

log = logging.getLogger(__name__)
GRAD_CLIP = 1.0


@dataclass
class Fitted:
    """The selected epoch's weights and how it was chosen."""

    state: dict[str, torch.Tensor]  # the answer model's (fine-tuned: and the encoders' as `clip.*`)
    best_epoch: int
    epochs_run: int
    select_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)  # epochs: loss, accuracy, seconds


def param_groups(named: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float
                 ) -> list[dict[str, Any]]:
    """Two AdamW groups at `lr`: no weight decay on biases, norms and embeddings' gains (1-D)."""
    decay, no_decay = [], []
    for _, param in named:
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0, "base_lr": lr},
            {"params": decay, "weight_decay": weight_decay, "base_lr": lr}]


def autocast(params: VqaParams, device: torch.device) -> contextlib.AbstractContextManager:
    if params.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


class _Selection:
    """Best epoch so far and the early stop."""

    def __init__(self, patience: int | None) -> None:
        self.patience, self.best, self.best_epoch, self.since = patience, -1.0, 0, 0
        self.state: dict[str, torch.Tensor] = {}

    def update(self, epoch: int, accuracy: float, model: nn.Module) -> bool:
        """Record an epoch's score; True when training should stop."""
        if accuracy > self.best:
            self.best, self.best_epoch, self.since, self.state = accuracy, epoch, 0, _state(model)
        else:
            self.since += 1
        return self.patience is not None and self.since >= self.patience


def _epochs(params: VqaParams, steps_per_epoch: int, optimizer: torch.optim.Optimizer,
            train_epoch: Callable[[int, Callable[[], None]], float], score: Callable[[], float],
            model: nn.Module, *, description: str, main: bool = True) -> Fitted:
    """The loop both modes share: epochs of `train_epoch` (given a per-step lr update), each
    scored by `score` on the validation questions, the best kept."""
    total = params.epochs * steps_per_epoch
    warmup = round(params.warmup_fraction * total)
    selection, history, step = _Selection(params.patience), [], 0

    def schedule() -> None:
        nonlocal step
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, base=group["base_lr"], warmup=warmup, total=total)
        step += 1

    epochs: Iterable[int] = range(1, params.epochs + 1)
    if main:
        epochs = progress(epochs, total=params.epochs, description=description)
    for epoch in epochs:
        start = time.perf_counter()
        loss = train_epoch(epoch, schedule)
        accuracy = score()
        history.append({"epoch": epoch, "loss": loss, "select_accuracy": accuracy,
                        "seconds": time.perf_counter() - start})
        stop = selection.update(epoch, accuracy, model)
        if main:
            log.info("%s epoch %d: loss %.4f, validation accuracy %.4f (best %.4f at epoch %d)",
                     description, epoch, loss, accuracy, selection.best, selection.best_epoch)
        if stop:
            break
    return Fitted(selection.state, selection.best_epoch, len(history), selection.best, history)


def _optimise(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """One step on `loss`: gradients clipped to a norm of GRAD_CLIP."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    return float(loss.detach())


# -- frozen encoders: cached features ------------------------------------------------------------
@torch.no_grad()
def predict_on_features(model: AnswerModel, features: TokenFeatures, *, batch_size: int,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """(Q, A) answer probabilities of the questions in `features`."""
    model.eval()
    rows = torch.arange(len(features.image_of))
    out = [torch.softmax(model(*features.batch(chunk, device)).float(), dim=-1).cpu()
           for chunk in rows.split(batch_size) if len(chunk)]
    return torch.cat(out) if out else torch.zeros((0, model.head[-1].out_features))


def _accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact match on class indices: a label of -1 (outside the vocabulary) is never right."""
    return float((probabilities.argmax(dim=-1) == labels).float().mean()) if len(labels) else 0.0


def fit_on_features(model: AnswerModel, fit: TokenFeatures, fit_labels: torch.Tensor,
                    select: TokenFeatures, select_labels: torch.Tensor, params: VqaParams, *,
                    device: torch.device | str = "cpu",
                    description: str = "answer model") -> Fitted:
    """Train the fusion and classifier on cached features; the best validation epoch's weights."""
    device = torch.device(device)
    torch.manual_seed(params.seed)
    model.to(device)
    groups = param_groups(model.named_parameters(), params.frozen_lr, params.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=params.frozen_lr)
    n = len(fit_labels)
    generator = torch.Generator().manual_seed(params.seed)
    cast = autocast(params, device)

    def train_epoch(epoch: int, schedule: Callable[[], None]) -> float:
        model.train()
        losses = []
        for rows in torch.randperm(n, generator=generator).split(params.batch_size):
            schedule()
            images, text, mask = fit.batch(rows, device)
            with cast:
                logits = model(images, text, mask)
            loss = F.cross_entropy(logits.float(), fit_labels[rows].to(device), ignore_index=-1)
            losses.append(_optimise(loss, model, optimizer))
        return sum(losses) / len(losses)

    def score() -> float:
        probabilities = predict_on_features(model, select, batch_size=params.embed_batch_size,
                                            device=device)
        return _accuracy(probabilities, select_labels)

    return _epochs(params, math.ceil(n / params.batch_size), optimizer, train_epoch, score, model,
                   description=description)


# -- full fine-tuning: through the encoders ------------------------------------------------------
class EncodedAnswerModel(nn.Module):
    """The encoders and the answer model: pixels and token ids -> answer logits (B, A)."""

    def __init__(self, clip: nn.Module, answer: AnswerModel) -> None:
        super().__init__()
        self.clip, self.answer = clip, answer

    def forward(self, pixels: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        image = image_tokens(self.clip, pixels)  # (B, 1 + P, Dv)
        text, mask = text_tokens(self.clip, ids)  # (B, T, Dt), (B, T)
        return self.answer(image, text, mask)


@dataclass
class QuestionInputs:
    """What the encoders read for a list of questions: decoded images and token ids."""

    images: dict[str, Image.Image]  # image key -> RGB image
    questions: Sequence[Question]
    ids: torch.Tensor  # (Q, L) token ids

    def batch(self, rows: torch.Tensor, preprocess: Callable[[Image.Image], torch.Tensor],
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([preprocess(self.images[self.questions[int(i)].image]) for i in rows])
        return pixels.to(device), self.ids[rows].to(device)


@torch.no_grad()
def predict_end_to_end(model: EncodedAnswerModel, inputs: QuestionInputs, preprocess: Callable, *,
                       batch_size: int, device: torch.device, params: VqaParams) -> torch.Tensor:
    """(Q, A) answer probabilities, through the encoders."""
    model.eval()
    out = []
    chunks = torch.arange(len(inputs.questions)).split(batch_size) if inputs.questions else ()
    for rows in chunks:
        with autocast(params, device):
            logits = model(*inputs.batch(rows, preprocess, device))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros((0, model.answer.head[-1].out_features))


def _sum_over_ranks(values: list[float], world: World) -> list[float]:
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def fit_end_to_end(model: EncodedAnswerModel, preprocess: Callable[[Image.Image], torch.Tensor],
                   fit: QuestionInputs, fit_labels: torch.Tensor, select: QuestionInputs,
                   select_labels: torch.Tensor, params: VqaParams, world: World, *,
                   description: str = "fine-tuning") -> Fitted:
    """Fine-tune encoders, fusion and classifier (METER's rates), DDP over `world`; every rank
    returns the same selected weights."""
    if params.batch_size % world.size:
        raise ValueError(f"vqa.batch_size ({params.batch_size}) must split evenly over "
                         f"{world.size} processes")
    torch.manual_seed(params.seed)
    model.to(world.device)
    rates = ((model.clip, params.lr),
             (model.answer.fusion, params.lr * params.fusion_lr_multiplier),
             (model.answer.head, params.lr * params.head_lr_multiplier))
    groups = [group for part, lr in rates
              for group in param_groups(part.named_parameters(), lr, params.weight_decay)]
    optimizer = torch.optim.AdamW(groups, lr=params.lr)
    # The towers' projections and the temperature take no part in the answer: unused parameters.
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) \
        if world.distributed else model
    per_rank = params.batch_size // world.size
    n = len(fit_labels)
    steps = max(1, n // params.batch_size)  # every rank takes the same number of steps
    generator = torch.Generator().manual_seed(params.seed)
    cast = autocast(params, world.device)

    def train_epoch(epoch: int, schedule: Callable[[], None]) -> float:
        ddp.train()
        order = torch.randperm(n, generator=generator)  # the same on every rank
        losses = []
        for step in range(steps):
            chunk = order[step * params.batch_size:(step + 1) * params.batch_size]
            rows = chunk[world.rank::world.size][:per_rank]
            schedule()
            with cast:
                logits = ddp(*fit.batch(rows, preprocess, world.device))
            labels = fit_labels[rows].to(world.device)
            losses.append(_optimise(F.cross_entropy(logits.float(), labels, ignore_index=-1), model,
                                    optimizer))
        total, count = _sum_over_ranks([sum(losses), len(losses)], world)
        return total / count

    def score() -> float:
        rows = torch.arange(len(select_labels))[world.rank::world.size]
        mine = QuestionInputs(select.images, [select.questions[int(i)] for i in rows],
                              select.ids[rows])
        probabilities = predict_end_to_end(model, mine, preprocess, device=world.device,
                                           batch_size=params.embed_batch_size, params=params)
        right = float((probabilities.argmax(dim=-1) == select_labels[rows]).sum())
        right, count = _sum_over_ranks([right, len(rows)], world)
        return right / count if count else 0.0

    return _epochs(params, steps, optimizer, train_epoch, score, model, description=description,
                   main=world.is_main)
