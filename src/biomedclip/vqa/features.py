"""Token features of the pipeline's encoders: the image tower's patch tokens and the text tower's
token states, from any model `biomedclip.models.load_model` takes.

- Image: the last block's tokens, after the tower's final norm, prefix (CLS) token first:
  (B, 1 + P, Dv), P = (side / patch)^2 (196 for ViT-B/16 at 224 px). open_clip's own ViT and
  timm's ViTs (the published model's) both give them through `forward_intermediates`.
- Text: the last hidden states of the text tower (B, T, Dt) and the mask of real tokens: a
  Hugging Face tower's (PubMedBERT's) `last_hidden_state`, or open_clip's own transformer's last
  block after its final norm.

With frozen encoders each split's features are computed once and kept in the feature cache the
linear probe uses (`biomedclip.evaluate.feature_cache`), per (model weights digest, benchmark
version, split and its questions): a second run embeds nothing. They are stored in float16,
the text padded only to the split's longest question: SLAKE's English questions at ViT-B/16 +
BERT-base are 505 MiB, one split at a time in memory (bench/vqa.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from biomedclip.console import progress
from biomedclip.evaluate.benchmarks import MAX_PIXELS
from biomedclip.evaluate.embedding import Encoder
from biomedclip.evaluate.feature_cache import cache_key, cached_tensors
from biomedclip.evaluate.formats import StoreImages
from biomedclip.streams import chunked
from biomedclip.vqa.formats import Question, VqaDataset

log = logging.getLogger(__name__)
STORED = torch.float16  # the cache's dtype: half the bytes, ample for features fed to a new model
FEATURES_VERSION = "vqa-tokens-1"  # part of the cache key: bump when what is stored changes


class TokenError(ValueError):
    """A model whose towers give no token features (names the tower)."""


def image_tokens(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + P, Dv): the prefix token, then the patch tokens."""
    visual = model.visual
    if not hasattr(visual, "forward_intermediates"):
        raise TokenError(f"the image tower {type(visual).__name__} gives no patch tokens "
                         "(a ViT does)")
    try:
        out = visual.forward_intermediates(pixels, indices=1, intermediates_only=True,
                                           output_fmt="NLC", normalize_intermediates=True,
                                           output_extra_tokens=True)
    except (AssertionError, TypeError, NotImplementedError) as exc:  # a tower without NLC tokens
        raise TokenError(f"the image tower {type(visual).__name__} gives no token sequence "
                         f"({type(exc).__name__}: {exc})") from None
    patches = out["image_intermediates"][-1]  # (B, P, Dv)
    if patches.ndim != 3:
        raise TokenError(f"the image tower {type(visual).__name__} gives no token sequence "
                         f"(shape {tuple(patches.shape)})")
    prefix = out.get("image_intermediates_prefix")
    return torch.cat([prefix[-1], patches], dim=1) if prefix else patches


def _hugging_face(model: torch.nn.Module) -> bool:
    text = getattr(model, "text", None)
    return text is not None and hasattr(text, "config") and hasattr(text, "transformer")


def pad_id(model: torch.nn.Module) -> int:
    """The id of the padding token of the model's text tower."""
    if _hugging_face(model):
        return int(model.text.config.pad_token_id)
    return int(getattr(getattr(model, "text", None) or model, "pad_id", 0))


def text_tokens(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) token ids -> ((B, T, Dt) token states, (B, T) bool mask of real tokens), T <= L the
    longest question's length: the padding columns past it are never run through the tower (a
    question of 15 tokens in a context of 256 costs 15 positions, not 256). Trailing padding is
    masked out of attention, or behind a causal mask, so the real tokens' states are the same."""
    ids, mask = trimmed(ids, ids != pad_id(model))
    if _hugging_face(model):
        out = model.text.transformer(input_ids=ids, attention_mask=mask.long())
        return out.last_hidden_state, mask
    tower = getattr(model, "text", None) or model  # open_clip's own: a TextTransformer, or CLIP
    if not hasattr(tower, "forward_intermediates"):
        raise TokenError(f"the text tower {type(tower).__name__} gives no token states")
    if tower is model:
        out = tower.forward_intermediates(text=ids, text_indices=1, intermediates_only=True,
                                          normalize_intermediates=True)
    else:
        out = tower.forward_intermediates(ids, indices=1, intermediates_only=True, output_fmt="NLC",
                                          normalize_intermediates=True)
    return out["text_intermediates"][-1], mask


def trimmed(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`values` (B, L, ...) and `mask` (B, L) without the trailing columns no row reaches."""
    length = max(1, int(mask.sum(dim=1).max()))
    return values[:, :length], mask[:, :length]


def token_widths(encoder: Encoder) -> tuple[int, int]:
    """(Dv, Dt) of an encoder, from one blank image and one word."""
    device = next(encoder.model.parameters()).device
    with torch.no_grad():
        blank = encoder.preprocess(Image.new("RGB", (32, 32))).unsqueeze(0).to(device)
        image = image_tokens(encoder.model, blank)
        text, _ = text_tokens(encoder.model, encoder.tokenizer(["what"]).to(device))
    return image.shape[-1], text.shape[-1]


@dataclass
class TokenFeatures:
    """A split's encoder outputs, index-aligned with its questions."""

    image_tokens: torch.Tensor  # (I, 1 + P, Dv) float16, the split's distinct images, sorted by key
    image_ok: torch.Tensor  # (I,) bool: False where the image did not decode (its tokens are zeros)
    image_of: torch.Tensor  # (Q,) int64: each question's row in image_tokens
    text_tokens: torch.Tensor  # (Q, T, Dt) float16, T = the split's longest question in tokens
    text_mask: torch.Tensor  # (Q, T) bool

    def as_dict(self) -> dict[str, torch.Tensor]:
        return dict(vars(self))

    def select(self, rows: Sequence[int] | torch.Tensor) -> TokenFeatures:
        """The features of the questions at `rows` (the images stay whole; all the rows in
        order: these features, not a copy)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        if torch.equal(rows, torch.arange(len(self.image_of))):
            return self
        return TokenFeatures(self.image_tokens, self.image_ok, self.image_of[rows],
                             self.text_tokens[rows], self.text_mask[rows])

    def batch(self, rows: torch.Tensor, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 image tokens (B, 1 + P, Dv), text tokens (B, T', Dt), mask (B, T') of `rows`."""
        text, mask = trimmed(self.text_tokens[rows], self.text_mask[rows])
        images = self.image_tokens[self.image_of[rows]]
        return images.to(device).float(), text.to(device).float(), mask.to(device)


def _questions_digest(questions: Sequence[Question]) -> str:
    digest = hashlib.sha256()
    for q in questions:
        digest.update(f"{q.file}\0{q.qid}\0{q.image}\0{q.question}\n".encode())
    return digest.hexdigest()[:16]


def _image_rows(encoder: Encoder, dataset: VqaDataset, keys: list[str], *, batch_size: int,
                description: str) -> tuple[torch.Tensor, torch.Tensor]:
    """((I, 1 + P, Dv) tokens, (I,) decoded) of the images at `keys`, written batch by batch
    into one tensor (memory holds the split's tokens once); zeros where an image does not
    decode (logged, named)."""
    device = next(encoder.model.parameters()).device
    decoded = progress(zip(keys, StoreImages(dataset.store, MAX_PIXELS).read(keys), strict=True),
                       total=len(keys), description=f"{description} images")
    tokens: torch.Tensor | None = None  # allocated at the first batch: its shape is the tower's
    ok = torch.zeros(len(keys), dtype=torch.bool)
    start = 0
    with torch.no_grad():
        for batch in chunked(decoded, batch_size):
            for key, image in batch:
                if isinstance(image, Exception):
                    log.warning("%s: image %s unreadable (%s: %s)", dataset.name, key,
                                type(image).__name__, image)
            rows = [start + i for i, (_, im) in enumerate(batch) if not isinstance(im, Exception)]
            if rows:
                pixels = torch.stack([encoder.preprocess(batch[r - start][1]) for r in rows])
                out = image_tokens(encoder.model, pixels.to(device)).to("cpu", STORED)
                if tokens is None:
                    tokens = torch.zeros((len(keys), *out.shape[1:]), dtype=STORED)
                tokens[rows] = out
                ok[rows] = True
            start += len(batch)
    if tokens is None:  # no image decoded: zeros of the tower's width, one token each
        tokens = torch.zeros((len(keys), 1, token_widths(encoder)[0]), dtype=STORED)
    return tokens, ok


def _question_rows(encoder: Encoder, texts: list[str], *, batch_size: int, description: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, T, Dt) token states, zeros at padding, and (Q, T) mask of `texts`, T the longest
    question; written batch by batch into one tensor."""
    device = next(encoder.model.parameters()).device
    ids = [encoder.tokenizer(batch) for batch in chunked(texts, batch_size)]  # cheap: ids only
    pad = pad_id(encoder.model)
    length = max((int((b != pad).sum(dim=1).max()) for b in ids), default=1)
    states: torch.Tensor | None = None  # allocated at the first batch: its width is the tower's
    mask = torch.zeros((len(texts), length), dtype=torch.bool)
    start = 0
    with torch.no_grad():
        for batch in progress(ids, total=len(ids), description=f"{description} questions"):
            out, real = text_tokens(encoder.model, batch.to(device))  # (B, T_b, Dt), (B, T_b)
            if states is None:
                states = torch.zeros((len(texts), length, out.shape[-1]), dtype=STORED)
            end, width = start + len(batch), out.shape[1]
            states[start:end, :width] = (out * real.unsqueeze(-1)).to("cpu", STORED)
            mask[start:end, :width] = real.cpu()
            start = end
    return (states if states is not None else torch.zeros((0, length, 1), dtype=STORED)), mask


def compute_features(encoder: Encoder, dataset: VqaDataset, questions: Sequence[Question], *,
                     batch_size: int, description: str = "") -> TokenFeatures:
    """Embed the questions' images and texts (no cache). An image that does not decode gets
    zeros and `image_ok` False (the stage rejects its questions)."""
    keys = sorted({q.image for q in questions})
    row = {key: i for i, key in enumerate(keys)}
    images, ok = _image_rows(encoder, dataset, keys, batch_size=batch_size, description=description)
    texts, mask = _question_rows(encoder, [q.question for q in questions], batch_size=batch_size,
                                 description=description)
    image_of = torch.tensor([row[q.image] for q in questions], dtype=torch.long)
    return TokenFeatures(images, ok, image_of, texts, mask)


def split_features(encoder: Encoder, model_digest: str, dataset: VqaDataset, split: str,
                   questions: Sequence[Question], *, cache: Path, batch_size: int
                   ) -> tuple[TokenFeatures, bool]:
    """(features of `questions`, from_cache): cached per (model weights, benchmark version, split
    and its questions). Without a digest (a model built in memory) nothing is cached."""
    description = f"{dataset.name} {split}"

    def compute() -> dict[str, torch.Tensor]:
        return compute_features(encoder, dataset, questions, batch_size=batch_size,
                                description=description).as_dict()

    if not model_digest:
        return TokenFeatures(**compute()), False
    key = cache_key(model_digest, dataset.version(),
                    f"{FEATURES_VERSION}/{split}/{_questions_digest(questions)}")
    stored, from_cache = cached_tensors(cache, key, compute)
    return TokenFeatures(**stored), from_cache
