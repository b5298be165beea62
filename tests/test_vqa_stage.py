"""The `vqa` stage end to end on the demo stand-ins (`vqa.stage.run`), with the session's trained
tiny model: the answer model trains on cached features and beats the question-only baseline,
the outputs say what the issue asks, a second run embeds nothing, `ask` answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomedclip.demo.vqa import TEST_ONLY, VqaDemoParams, write_vqa_demo
from biomedclip.vqa.ask import ask
from biomedclip.vqa.formats import load_vqa
from biomedclip.vqa.model_folder import AnswerModelError
from biomedclip.vqa.params import VqaBenchmarkSpec, VqaOutputs, VqaParams
from biomedclip.vqa.report import PAPER_VQA
from biomedclip.vqa.stage import answer_benchmarks

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    """The demo's VQA-RAD and SLAKE stand-ins (128 images each); one SLAKE train image does not
    decode."""
    out = tmp_path_factory.mktemp("vqa") / "benchmarks"
    write_vqa_demo(VqaDemoParams(out=out))
    slake = load_vqa("slake", str(out / "slake"))
    (out / "slake" / slake.splits["train"][0].image).write_bytes(b"\xff\xd8 not a JPEG")
    return out


def vqa_params(root: Path, stand_ins: Path) -> VqaParams:
    """The defaults (a small fusion), a third of the epochs."""
    outputs = VqaOutputs(metrics=root / "metrics" / "vqa.json", report=root / "reports" / "vqa.md",
                         model=root / "vqa")
    benchmarks = (VqaBenchmarkSpec(name="vqa-rad", path=str(stand_ins / "vqa_rad")),
                  VqaBenchmarkSpec(name="slake", path=str(stand_ins / "slake"), format="slake"))
    return VqaParams(benchmarks=benchmarks, epochs=10, patience=4, cache=root / "cache",
                     outputs=outputs)


def vocabulary(folder: Path) -> list[str]:
    return json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))["answers"]


def test_the_answer_model_beats_the_question_only_baseline_and_a_second_run_embeds_nothing(
        tiny_world, stand_ins, tmp_path):
    model = tiny_world.trained["model_dir"]
    params = vqa_params(tmp_path, stand_ins)
    report = answer_benchmarks(params, model=model)
    metrics = json.loads(params.outputs.metrics.read_text())
    assert sorted(metrics) == ["slake", "vqa-rad"]
    for name, m in metrics.items():
        assert m["open"]["samples"] + m["closed"]["samples"] == m["overall"]["samples"] > 100
        baseline = m["question_only"]["overall"]["accuracy"]
        assert m["overall"]["accuracy"] > baseline + 0.05, (name, m)  # measured at 10 epochs: +0.20, +0.26
        answers = vocabulary(params.outputs.model / name)
        assert m["vocabulary"] == len(answers) and not set(answers) & set(TEST_ONLY)
        assert m["answers_outside_vocabulary"] > 0 and m["ceiling"]["overall"] < 1
        assert m["selection"]["epoch"] <= m["selection"]["epochs_run"] <= 10
    assert metrics["vqa-rad"]["test_images_in_train"] > 0
    assert "test_images_in_train" not in metrics["slake"]
    unreadable = metrics["slake"]["rejected"]["unreadable_image"]
    assert unreadable > 0 and metrics["slake"]["rejected"] == {"unreadable_image": unreadable}
    rejects = json.loads((params.outputs.model / "slake" / "rejects.json").read_text())
    assert len(rejects) == unreadable and {r["reason"] for r in rejects} == {"unreadable_image"}
    assert all(r["file"] == "train.json" and r["qid"] for r in rejects)
    assert metrics["slake"]["left_out_by_language"]["zh"] > 0
    assert all(r.embedded["images"] > 0 and r.embedded["questions"] > 0 for r in report.results)

    markdown = params.outputs.report.read_text()
    measured, _, paper = markdown.partition("the paper's published numbers (not measured here)")
    for numbers in (n for rows in PAPER_VQA.values() for n in rows.values()):
        assert all(f"{value:.1f}" in paper for value in numbers)
    assert "72.7" not in measured and "86.1" not in measured, "the paper's numbers stand apart"
    assert "unreadable_image" in measured and "test images also appear in its train" in measured
    flat = report.flat_metrics()
    assert flat["vqa/slake/overall/accuracy"] == metrics["slake"]["overall"]["accuracy"]

    written = params.outputs.metrics.read_bytes()
    again = answer_benchmarks(params.model_copy(update={"epochs": 1}), model=model, write=False)
    assert [r.embedded for r in again.results] == [{"images": 0, "questions": 0}] * 2
    assert params.outputs.metrics.read_bytes() == written, "write=False writes nothing"

    test = load_vqa("slake", str(stand_ins / "slake")).splits["test"][0]
    answers = ask(params.outputs.model / "slake", stand_ins / "slake" / test.image,
                  "What imaging modality was used?", top_k=3)
    assert len(answers) == 3
    assert answers[0].probability >= answers[1].probability >= answers[2].probability
    assert sum(a.probability for a in answers) <= 1 + 1e-6
    assert {a.answer for a in answers} <= set(vocabulary(params.outputs.model / "slake"))
    with pytest.raises(AnswerModelError, match="trained on encoders with weights sha256"):
        ask(params.outputs.model / "slake", stand_ins / "slake" / test.image, test.question,
            model=str(tiny_world.random_model))
