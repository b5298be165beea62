"""One optimisation step of the contrastive objective, with open_clip's feature-cached
gradient accumulation and its sharded loss (local rows against features gathered with
gradients from every rank), so the loss and gradients equal one process at the same global batch.
"""

from __future__ import annotations

import contextlib
import math

import torch
from open_clip.loss import ClipLoss

MAX_LOGIT_SCALE = math.log(100)  # CLIP's clamp on the learnable temperature


def clip_loss(rank: int, world_size: int) -> ClipLoss:
    return ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank,
                    world_size=world_size)


def lr_at(step: int, *, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 0 (open_clip's `cosine_lr`)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * base


def contrastive_backward(model: torch.nn.Module, loss_fn: ClipLoss,
                         micro_batches: list[tuple[torch.Tensor, torch.Tensor]], *,
                         autocast: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """Backpropagate the loss of the whole step (all micro-batches as one batch); returns it.

    With one micro-batch this is a plain forward/backward. With several, features of every
    micro-batch are computed without gradients first, then each micro-batch is recomputed with
    gradients and its slice swapped in, so every loss sees the step's full set of negatives and
    the summed gradients are the full batch's (without dropout, exactly).
    """
    autocast = autocast or contextlib.nullcontext()
    if len(micro_batches) == 1:
        images, texts = micro_batches[0]
        with autocast:
            image_features, text_features, logit_scale = model(images, texts)
            loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward()
        return loss.detach()
    cached_images, cached_texts = [], []
    with torch.no_grad(), autocast:
        for images, texts in micro_batches:
            image_features, text_features, _ = model(images, texts)
            cached_images.append(image_features)
            cached_texts.append(text_features)
    no_sync = getattr(model, "no_sync", None)
    for j, (images, texts) in enumerate(micro_batches):
        last = j == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
        with sync:
            with autocast:
                image_features, text_features, logit_scale = model(images, texts)
                all_images = torch.cat([*cached_images[:j], image_features, *cached_images[j + 1:]])
                all_texts = torch.cat([*cached_texts[:j], text_features, *cached_texts[j + 1:]])
                # Each pass differentiates the full loss through its own slice; summed over the
                # passes that is the full gradient. The temperature takes its gradient once.
                loss = loss_fn(all_images, all_texts, logit_scale if last else logit_scale.detach())
            loss.backward()
    return loss.detach()
