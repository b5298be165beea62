"""Full fine-tuning of the encoders under real `torchrun`: 2 gloo processes, bf16 autocast,
METER's learning rates, rank 0 writing the answer model with its fine-tuned encoders, which
`ask` then loads. The model is the tiny profile at random weights (what is under test is the
wiring, not what a random model answers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biomedclip.atomic_io import atomic_directory
from biomedclip.demo.vqa import VqaDemoParams, write_vqa_demo
from biomedclip.models import WEIGHT_FILES, TextTower, write_model_folder
from biomedclip.train.model import build
from biomedclip.train.tokenizer import build_tokenizer, text_directory
from biomedclip.vqa.ask import ask
from biomedclip.vqa.formats import load_vqa
from biomedclip.vqa.launch import torchrun_vqa
from biomedclip.vqa.model_folder import ENCODER_WEIGHTS
from biomedclip.vqa.params import FusionParams, VqaBenchmarkSpec, VqaOutputs, VqaParams

FOREIGN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
           "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def random_tiny_model(root: Path, questions: list[str]) -> Path:
    """The tiny profile at random weights, in the published layout, with a vocabulary of the
    questions."""
    build_tokenizer(iter(questions * 2), root / "tokenizer", vocab_size=300, min_frequency=1)
    text = text_directory("biomedclip-tiny", root / "tokenizer", root / "text")
    torch.manual_seed(0)
    bundle = build("biomedclip-tiny", text)
    final = root / "model"
    with atomic_directory(final) as staging:
        write_model_folder(staging, final=final, weights=bundle.model.state_dict(),
                           model_cfg=bundle.config, text=TextTower(text, text, None),
                           card="random tiny model\n")
    return final


@pytest.mark.integration
def test_fine_tuning_under_torchrun_writes_the_encoders_and_ask_reads_them(tmp_path, monkeypatch):
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPU, also on a machine with GPUs
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    write_vqa_demo(VqaDemoParams(out=tmp_path / "benchmarks", vqa_rad_images=4, slake_images=8))
    slake = load_vqa("slake", str(tmp_path / "benchmarks" / "slake"))
    model = random_tiny_model(tmp_path, [q.question for qs in slake.splits.values() for q in qs])
    params = VqaParams(
        benchmarks=(VqaBenchmarkSpec(name="slake", path=str(tmp_path / "benchmarks" / "slake")),),
        fusion=FusionParams(width=32, layers=1, heads=2), freeze_encoders=False, nproc=2, epochs=2,
        batch_size=8, precision="bf16", lr=1e-4, cache=tmp_path / "cache",
        outputs=VqaOutputs(metrics=tmp_path / "vqa.json", report=tmp_path / "vqa.md",
                           model=tmp_path / "vqa"))
    assert torchrun_vqa(params, model=str(model)) == 0

    metrics = json.loads((tmp_path / "vqa.json").read_text())["slake"]
    assert metrics["mode"] == "fine_tuned"
    assert metrics["overall"]["samples"] == len(slake.splits["test"])
    assert metrics["selection"]["epochs_run"] == 2
    assert "fine-tuned at 0.0001, fusion x5, classifier x50" in (tmp_path / "vqa.md").read_text()
    folder = tmp_path / "vqa" / "slake"
    tuned = load_file(str(folder / ENCODER_WEIGHTS))
    source = load_file(str(model / WEIGHT_FILES[0]))
    assert tuned.keys() == source.keys()
    changed = [k for k in tuned if not torch.equal(tuned[k], source[k])]
    assert any(k.startswith("visual.") for k in changed)
    assert any(k.startswith("text.") for k in changed)
    assert not list(tmp_path.glob(".vqa.partial-*")) and not list((tmp_path / "vqa").glob(".*"))
    image = tmp_path / "benchmarks" / "slake" / slake.splits["test"][0].image
    answers = ask(folder, image, slake.splits["test"][0].question, top_k=2)
    assert len(answers) == 2 and answers[0].probability >= answers[1].probability
