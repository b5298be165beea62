"""Token features of the encoders (`vqa.features`) on the tiny profile at random weights: the
shapes, padding never run through the text tower, an unreadable image, and the feature cache
(a second run embeds nothing)."""

from __future__ import annotations

import pytest
import torch

from biomedclip.demo.vqa import VqaDemoParams, write_vqa_demo
from biomedclip.evaluate.embedding import ModelEncoder
from biomedclip.train.model import build
from biomedclip.train.tokenizer import build_tokenizer, text_directory
from biomedclip.vqa.features import (
    compute_features,
    image_tokens,
    split_features,
    text_tokens,
    token_widths,
)
from biomedclip.vqa.formats import load_vqa

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def slake(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa-features")
    write_vqa_demo(VqaDemoParams(out=root / "benchmarks", vqa_rad_images=4, slake_images=8))
    return load_vqa("slake", str(root / "benchmarks" / "slake"))


@pytest.fixture(scope="module")
def encoder(slake, tmp_path_factory) -> ModelEncoder:
    """The tiny profile (open_clip's ViT + a Hugging Face BERT) at random weights."""
    root = tmp_path_factory.mktemp("vqa-encoder")
    texts = [q.question for qs in slake.splits.values() for q in qs]
    build_tokenizer(iter(texts * 2), root / "tokenizer", vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    bundle = build("biomedclip-tiny", text_directory("biomedclip-tiny", root / "tokenizer",
                                                      root / "text"))
    return ModelEncoder(bundle.model.eval(), bundle.preprocess_val, bundle.tokenizer)


def test_tokens_of_both_towers_and_padding_never_run(encoder):
    ids = encoder.tokenizer(["Is this image normal?", "What abnormality is seen in the lung?"])
    assert ids.shape == (2, 64)  # the tiny profile's context, mostly padding
    with torch.no_grad():
        states, mask = text_tokens(encoder.model, ids)
        full = encoder.model.text.transformer(input_ids=ids, attention_mask=(ids != 0).long())
    length = int((ids != 0).sum(dim=1).max())
    assert states.shape == (2, length, 128) and mask.shape == (2, length) and length < 16
    assert mask.sum().item() == (ids != 0).sum().item()
    real = mask.unsqueeze(-1)  # the real tokens' states are those of the full-length run
    assert torch.allclose(states * real, full.last_hidden_state[:, :length] * real, atol=1e-5)
    pixels = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        tokens = image_tokens(encoder.model, pixels)
    assert tokens.shape == (3, 1 + 36, 192)  # CLS, then (96 / 16)^2 patches
    assert token_widths(encoder) == (192, 128)


def test_features_are_cached_and_an_unreadable_image_is_marked(encoder, slake, tmp_path):
    questions = slake.splits["train"]
    broken = slake.images("train")[1]
    (slake.store.root / broken).write_bytes(b"not an image")  # (no other test reads images)
    features, from_cache = split_features(encoder, "digest-a", slake, "train", questions,
                                          cache=tmp_path, batch_size=4)
    assert not from_cache and len(list(tmp_path.glob("*.pt"))) == 1
    keys = slake.images("train")
    assert features.image_tokens.shape == (len(keys), 37, 192)
    assert features.image_ok.tolist() == [key != broken for key in keys]
    assert features.image_tokens[keys.index(broken)].abs().sum() == 0
    assert [keys[i] for i in features.image_of.tolist()] == [q.image for q in questions]
    assert features.text_tokens.shape[:2] == features.text_mask.shape
    again, from_cache = split_features(encoder, "digest-a", slake, "train", questions,
                                       cache=tmp_path, batch_size=4)
    assert from_cache and all(torch.equal(getattr(again, k), getattr(features, k))
                              for k in ("image_tokens", "image_ok", "image_of", "text_tokens"))
    other_model, cached = split_features(encoder, "digest-b", slake, "train", questions[:3],
                                         cache=tmp_path, batch_size=4)
    assert not cached and len(list(tmp_path.glob("*.pt"))) == 2
    uncached = compute_features(encoder, slake, questions[:3], batch_size=2)
    # the same states whatever the batching (zeros at padding)
    assert torch.allclose(uncached.text_tokens.float(), other_model.text_tokens.float(), atol=1e-3)
    rows = features.select([0, 2])
    images, text, mask = rows.batch(torch.arange(2))
    assert images.dtype == torch.float32 and images.shape[0] == text.shape[0] == mask.shape[0] == 2
    assert features.select(range(len(questions))) is features
