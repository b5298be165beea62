"""The co-attention answer model (`vqa.fusion`): shapes, padding ignored, both streams reading
each other, and its saved folder (`vqa.model_folder`) giving back the same answers."""

from __future__ import annotations

import json

import pytest
import torch

from biomedclip.vqa.fusion import AnswerModel, new_answer_model
from biomedclip.vqa.model_folder import (
    ANSWER_WEIGHTS,
    CONFIG,
    REJECTS,
    VOCABULARY,
    AnswerModelError,
    read_answer_model,
    write_answer_model,
)
from biomedclip.vqa.params import FusionParams

pytestmark = pytest.mark.unit
SMALL = FusionParams(width=32, layers=2, heads=4, dropout=0.0)


def inputs(batch: int = 3, patches: int = 10, words: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, patches, 24, generator=g)
    text = torch.randn(batch, words, 16, generator=g)
    mask = torch.ones(batch, words, dtype=torch.bool)
    mask[0, 4:] = False  # the first question has 4 tokens
    return image, text, mask


def test_logits_per_answer_and_padding_changes_nothing():
    torch.manual_seed(0)
    model = AnswerModel(24, 16, answers=7, params=SMALL).eval()
    image, text, mask = inputs()
    logits = model(image, text, mask)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    # other values in the padded positions, or more padding: the same answers
    noisy = text.clone()
    noisy[0, 4:] = 100.0
    longer = torch.cat([text, torch.randn(3, 5, 16)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], dim=1)
    assert torch.allclose(model(image, noisy, mask), logits, atol=1e-5)
    assert torch.allclose(model(image, longer, longer_mask), logits, atol=1e-5)


def test_co_attention_runs_both_ways():
    """The pooled text token depends on the image and the pooled image token on the question."""
    torch.manual_seed(0)
    model = AnswerModel(24, 16, answers=5, params=SMALL).eval()
    image, text, mask = inputs()
    image.requires_grad_(True)
    text.requires_grad_(True)
    pooled = model.fusion(image, text, mask)  # (B, 2W): text half, then image half
    width = SMALL.width
    text_half, image_half = pooled[:, :width].sum(), pooled[:, width:].sum()
    from_image = torch.autograd.grad(text_half, image, retain_graph=True)[0]
    from_text = torch.autograd.grad(image_half, text)[0]
    assert from_image.abs().sum() > 0 and from_text.abs().sum() > 0
    assert from_text[0, 4:].abs().sum() == 0, "padding takes no part"
    one_layer = AnswerModel(24, 16, answers=5, params=SMALL.model_copy(update={"layers": 1}))
    assert len(one_layer.fusion.text_layers) == 1 and len(model.fusion.image_layers) == 2


def test_a_new_answer_model_depends_on_its_seed_alone():
    """Whatever the process drew before (another benchmark's training, a reseeding elsewhere), the
    same seed gives the same initial weights, and the caller's generator is left as it was."""
    torch.manual_seed(123)
    first = new_answer_model(24, 16, 7, SMALL, seed=0).state_dict()
    torch.rand(1000)
    torch.seed()  # a nondeterministic seed, as something before the stage's first model did
    state = torch.get_rng_state()
    second = new_answer_model(24, 16, 7, SMALL, seed=0).state_dict()
    assert torch.equal(torch.get_rng_state(), state), "the caller's generator was moved"
    assert all(torch.equal(first[name], second[name]) for name in first)
    other = new_answer_model(24, 16, 7, SMALL, seed=1).state_dict()
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_a_saved_answer_model_gives_the_same_answers(tmp_path):
    torch.manual_seed(0)
    model = AnswerModel(24, 16, answers=3, params=SMALL).eval()
    config = {"encoder": {"model": "data/train/final", "digest": "ab" * 32, "fine_tuned": False},
              "widths": {"image": 24, "text": 16}, "fusion": SMALL.model_dump(mode="json")}
    write_answer_model(tmp_path / "slake", answer_state=model.state_dict(),
                       vocabulary=["yes", "no", "肺"], config=config)
    written = sorted(p.name for p in (tmp_path / "slake").iterdir())
    assert written == sorted([ANSWER_WEIGHTS, CONFIG, REJECTS, VOCABULARY])
    saved = read_answer_model(tmp_path / "slake")
    assert saved.vocabulary == ["yes", "no", "肺"] and not saved.fine_tuned
    assert saved.encoder_model == "data/train/final" and saved.encoder_digest == "ab" * 32
    assert torch.equal(saved.answer_model()(*inputs()), model(*inputs()))
    stored = json.loads((tmp_path / "slake" / VOCABULARY).read_text(encoding="utf-8"))
    assert stored["answers"][2] == "肺"
    (tmp_path / "slake" / VOCABULARY).unlink()
    with pytest.raises(AnswerModelError, match=r"missing vocabulary.json"):
        read_answer_model(tmp_path / "slake")
