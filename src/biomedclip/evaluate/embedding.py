"""The one embedding path: L2-normalised image and text features of any open_clip model, in batches.

Training's validation retrieval, the `evaluate` stage and the promotion gate all embed through
these functions, so a model scores the same wherever it is measured. An `Encoder` is a model with
its evaluation transform and tokenizer: a loaded model folder (`models.LoadedModel`) is one, and
the trainer builds one from its model in training.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
from PIL import Image

from biomedclip.streams import chunked


class Encoder(Protocol):
    model: torch.nn.Module  # an open_clip CLIP / CustomTextCLIP
    preprocess: Callable[[Image.Image], torch.Tensor]  # PIL image -> (3, H, W)
    tokenizer: Callable[[list[str]], torch.Tensor]  # texts -> (N, context_length)


class ModelEncoder(NamedTuple):
    model: torch.nn.Module
    preprocess: Any
    tokenizer: Any


def decode(data: bytes) -> Image.Image:
    """JPEG (or any Pillow format) bytes as an RGB image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def shard_samples(folder: Path) -> Iterator[tuple[bytes, str]]:
    """(JPEG bytes, caption) of every sample of a split's shards, in shard order. The whole split,
    also inside a DDP world (no split by node: one rank measures)."""
    import webdataset as wds

    urls = sorted(str(p) for p in folder.glob("*.tar"))
    if not urls:
        return
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None):
        yield sample["jpg"], sample["txt"].decode("utf-8")


def _device(encoder: Encoder) -> torch.device:
    return next(encoder.model.parameters()).device


@torch.no_grad()
def embed_images(encoder: Encoder, images: Iterable[Image.Image], batch_size: int) -> torch.Tensor:
    """(N, D) float32 on the CPU, L2-normalised."""
    device = _device(encoder)
    chunks = [encoder.model.encode_image(torch.stack([encoder.preprocess(i) for i in batch]).to(device),
                                         normalize=True).float().cpu()
              for batch in chunked(images, batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


@torch.no_grad()
def embed_texts(encoder: Encoder, texts: Iterable[str], batch_size: int) -> torch.Tensor:
    """(N, D) float32 on the CPU, L2-normalised."""
    device = _device(encoder)
    chunks = [encoder.model.encode_text(encoder.tokenizer(batch).to(device), normalize=True).float().cpu()
              for batch in chunked(texts, batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def embed_pairs(encoder: Encoder, samples: Iterable[tuple[bytes, str]],
                batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index-aligned image and text features of (JPEG bytes, caption) pairs, streamed: memory holds
    one batch of images, never the split."""
    image_chunks, text_chunks = [], []
    for batch in chunked(samples, batch_size):
        image_chunks.append(embed_images(encoder, (decode(jpeg) for jpeg, _ in batch), batch_size))
        text_chunks.append(embed_texts(encoder, [caption for _, caption in batch], batch_size))
    if not image_chunks:
        return torch.empty(0), torch.empty(0)
    return torch.cat(image_chunks), torch.cat(text_chunks)
