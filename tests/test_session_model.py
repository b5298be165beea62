"""The session's one trained model (conftest's `tiny_world`) learned, and is laid out as published.

Its own module in the `tiny-world` xdist group (the modules that share that model, trained once per
worker): test_train's other tests train models of their own on a few pairs, so that module runs
on whichever worker is free instead of waiting behind the session model's training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .test_train import loss_rows, sha256

pytestmark = pytest.mark.unit


def test_tiny_profile_learns(tiny_world):
    """150 steps of 32 on the noisy corpus's train split. The contrastive loss starts near chance
    (ln 32) and ends well below it; the outputs are the model folder, its digest and the curve.
    (Tracking off writes no store: test_train's MLflow test.)"""
    params, info = tiny_world.train_params, tiny_world.trained
    rows = loss_rows(params.outputs.loss_curve)
    steps = params.samples_per_epoch // params.global_batch
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    losses = [float(r["loss"]) for r in rows]
    chance = math.log(params.global_batch)
    first, last = losses[0], sum(losses[-10:]) / 10
    assert first > chance - 0.2, f"an untrained model should start near chance ({chance:.3f}): {first}"
    assert last < chance - 0.4 and last < first - 0.4, f"loss did not go down: {losses}"
    assert info["metrics"]["final_loss"] == losses[-1]
    assert json.loads(params.outputs.metrics.read_text())["final_loss"] == losses[-1]
    final = Path(info["model_dir"])
    assert final == params.outputs.dir / "final"
    # The published layout: the text tower's config and tokenizer beside the weights, a model card.
    assert {"open_clip_model.safetensors", "open_clip_config.json", "config.json", "vocab.txt",
            "README.md"} <= {p.name for p in final.iterdir()}
    assert info["model_sha256"] == sha256(final / "open_clip_model.safetensors")
