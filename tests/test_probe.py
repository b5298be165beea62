"""Few-shot and full linear probes (`evaluate.probe`): the draws, the carved validation split, the
probe on features with a known answer, the feature cache, and the probe inside `evaluate` on a
PCam-format benchmark with the session's trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from biomedclip.evaluate.params import (
    BenchmarkSpec,
    EvaluateOutputs,
    EvaluateParams,
    LinearProbeParams,
)
from biomedclip.evaluate.probe import (
    cached_features,
    carve_validation,
    linear_probe,
    stratified_draw,
)

from .test_benchmark_formats import write_pcam


@pytest.mark.unit
def test_draws_are_class_stratified_with_one_per_class_at_least():
    labels = np.array([0] * 90 + [1] * 10)
    draw = stratified_draw(labels, 0.1, np.random.default_rng(0))
    assert (labels[draw] == 0).sum() == 9 and (labels[draw] == 1).sum() == 1
    assert (labels[stratified_draw(labels, 0.01, np.random.default_rng(0))] == 1).sum() == 1
    assert not np.array_equal(draw, stratified_draw(labels, 0.1, np.random.default_rng(1)))
    kept, held = carve_validation(labels, 0.2)
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 100
    assert (labels[held] == 0).sum() == 18 and (labels[held] == 1).sum() == 2


def clusters(n: int, seed: int, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes around fixed centres; `noise` sets how separable they are."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(3, 32, generator=torch.Generator().manual_seed(7)), dim=1)
    labels = torch.arange(n) % 3
    features = centres[labels] + noise * torch.randn(n, 32, generator=g)
    return torch.nn.functional.normalize(features, dim=1), labels


@pytest.mark.unit
def test_more_labels_probe_better_and_the_full_fraction_is_one_draw():
    params = LinearProbeParams(fractions=(0.01, 0.1, 1.0), seeds=3, c_grid=(0.1, 1.0, 10.0))
    result = linear_probe(clusters(600, 0, 0.3), None, clusters(300, 1, 0.3), 3, params)
    assert result["validation"].startswith("20% of train")
    few, full = result["0.01"], result["1"]
    assert few["draws"] == 3 and full["draws"] == 1 and full["top1_std"] == 0
    assert few["train_samples"] == 6 and full["train_samples"] == 480  # 1% of 160 per class: 1.6, rounded to 2
    # Measured: 0.838 ± 0.040 at 1%, 0.943 ± 0.005 at 10%, 0.960 at 100%.
    assert full["top1"] > 0.9 and full["top1"] > result["0.1"]["top1"] > few["top1"] + 0.05
    assert few["top1_std"] > result["0.1"]["top1_std"] > 0
    assert set(full["c"]) <= {0.1, 1.0, 10.0}
    separable = linear_probe(clusters(300, 0, 0.01), clusters(60, 2, 0.01), clusters(90, 1, 0.01), 3, params)
    assert separable["validation"] == "the benchmark's own" and separable["1"]["top1"] == 1.0


@pytest.mark.unit
def test_features_are_computed_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(4, 2), torch.tensor([0, 1, 0, 1])

    first = cached_features(tmp_path, "k", compute)
    again = cached_features(tmp_path, "k", compute)
    assert len(calls) == 1 and torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    (tmp_path / "k.pt").write_bytes(b"damaged")
    cached_features(tmp_path, "k", compute)
    assert len(calls) == 2, "a damaged entry is recomputed"


@pytest.mark.integration
def test_evaluate_probes_a_pcam_benchmark_and_reuses_its_features(tiny_world, tmp_path, monkeypatch):
    """Bright patches are metastases here: a linear probe on the trained model's features learns it."""
    from biomedclip.evaluate import run

    rng = np.random.default_rng(0)
    for split, n in (("train", 80), ("valid", 20), ("test", 40)):
        write_pcam(tmp_path / "pcam", split, n)
        import h5py

        y = (np.arange(n) % 2).astype(np.uint8)
        x = np.where(y[:, None, None, None] == 1, 200, 50) + rng.integers(-40, 40, size=(n, 96, 96, 3))
        with h5py.File(tmp_path / "pcam" / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle.create_dataset("x", data=x.clip(0, 255).astype(np.uint8))
    probe = LinearProbeParams(fractions=(0.1, 1.0), seeds=2, cache=tmp_path / "cache")
    params = EvaluateParams(batch_size=32, linear_probe=probe, cache=tmp_path / "evaluations", benchmarks=(
        BenchmarkSpec(name="pcam", path=str(tmp_path / "pcam"), preset="pcam"),),
        outputs=EvaluateOutputs(metrics=tmp_path / "eval.json", plots=tmp_path / "plots", report=tmp_path / "r.md"))
    model, shards = tiny_world.trained["model_dir"], tiny_world.shards.outputs.shards
    result = run.evaluate(params, model=model, shards_dir=shards)
    probed = result["linear_probe"]["pcam"]
    assert probed["validation"] == "the benchmark's own"
    assert probed["1"]["train_samples"] == 80 and probed["0.1"]["train_samples"] == 8
    assert probed["1"]["top1"] > 0.9, probed
    assert result["zero_shot"]["pcam"]["headline"] == "top1"
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3  # train, valid, test
    saved = json.loads((tmp_path / "eval.json").read_text())  # the headline: the probes per fraction
    assert saved["pcam probe 100%"] == probed["1"]["top1"] and saved["pcam probe 10%"] == probed["0.1"]["top1"]
    assert "Linear probes" in (tmp_path / "r.md").read_text()
    curve = (tmp_path / "plots" / "label_fraction_pcam.csv").read_text().splitlines()
    assert curve[0] == "fraction,method,top1,top1_std" and curve[1].startswith("0.0,zero-shot,")
    assert [line.split(",")[0] for line in curve[1:]] == ["0.0", "0.1", "1.0"]

    embedded = []
    original = run.embed_images
    monkeypatch.setattr(run, "embed_images", lambda *a, **k: embedded.append(1) or original(*a, **k))
    recomputed = params.model_copy(update={"cache": tmp_path / "evaluations-elsewhere"})
    again = run.evaluate(recomputed, model=model, shards_dir=shards)  # evaluated again, features reused
    assert again["linear_probe"] == result["linear_probe"] and not again.get("reused")
    assert len(embedded) == 3, "the model tests' three passes, and no benchmark split again"
    embedded.clear()
    assert run.evaluate(params, model=model, shards_dir=shards).get("reused")  # the same evaluation: recalled
    assert embedded == []
