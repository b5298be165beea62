"""The side-by-side comparison's arithmetic and its table (`biomedclip compare`); the evaluation it
runs on real models is tested in test_published.py."""

from __future__ import annotations

import pytest

from biomedclip.evaluate.compare import markdown, side_by_side
from biomedclip.register.params import GateParams, RegisterParams
from biomedclip.register.promotion import gate

R10, RANK, CHANCE = "retrieval/image_to_text/recall_at_10", "retrieval/image_to_text/median_rank", \
    "retrieval/chance_recall_at_1"


@pytest.mark.unit
def test_best_and_differences_respect_which_way_is_better():
    result = side_by_side({"ours": {R10: 0.8, RANK: 3.0, CHANCE: 0.01},
                           "microsoft": {R10: 0.6, RANK: 2.0, CHANCE: 0.01},
                           "random": {R10: 0.05, RANK: 40.0}}, split="test")
    assert result["models"] == ["ours", "microsoft", "random"]
    assert result["best"] == {R10: "ours", RANK: "microsoft"}  # a lower rank is better; chance is no score
    assert result["delta"][R10] == pytest.approx({"microsoft": -0.2, "random": -0.75})
    assert CHANCE not in result["delta"] and result["metrics"][CHANCE] == {"ours": 0.01, "microsoft": 0.01}
    table = markdown(result)
    assert "| retrieval/image_to_text/recall_at_10 | **0.8000** | 0.6000 | 0.0500 | -0.2000 | -0.7500 |" in table
    assert "| retrieval/image_to_text/median_rank | 3.0000 | **2.0000** | 40.0000 | -1.0000 | +37.0000 |" in table
    assert "Best on 1 metric(s): `ours`, 1 metric(s): `microsoft`, 0 metric(s): `random`." in table


@pytest.mark.unit
def test_a_tie_has_no_winner():
    assert side_by_side({"a": {R10: 0.5}, "b": {R10: 0.5}}, split="test")["best"] == {}


@pytest.mark.unit
def test_the_gate_holds_the_reference_within_the_tolerance():
    params = RegisterParams(gate=GateParams(primary="p", guards=(), tolerance=0.02, reference="baseline"))
    champion, reference = {"p": 0.50}, {"p": 0.70}
    passed, why = gate(champion, {"p": 0.60}, params, reference)  # beats the champion, 0.10 below the baseline
    assert not passed and "below reference baseline" in why and "0.1000" in why
    assert gate(champion, {"p": 0.69}, params, reference)[0]  # within the tolerance
    assert gate(None, {"p": 0.69}, params, reference)[0]
    assert not gate(None, {"p": 0.60}, params, reference)[0], "the first version must not fall below it either"
    assert gate(champion, {"p": 0.60}, params)[0], "no reference: the champion alone decides"
