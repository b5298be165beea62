"""The VQA scoring protocol (`vqa.protocol`): no test-only answer ever enters the vocabulary,
VQA-RAD's validation part is held out by image, the metrics agree with a naive reference, the
ceiling and the question-only baseline."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomedclip.vqa.formats import Question
from biomedclip.vqa.protocol import (
    accuracy,
    answer_labels,
    held_out_by_image,
    normalise,
    plan_splits,
    question_only,
    vocabulary_coverage,
)

pytestmark = pytest.mark.unit

ANSWERS = ("yes", "No", "  chest ", "CT", "left lung", "mri")
TEST_ONLY = ("hemorrhage", "Carotid  Artery", "pa")


def question(qid: int, image: int, answer: str, kind: str = "open",
             text: str = "what is it?") -> Question:
    return Question(str(qid), f"imgs/{image}.jpg", text, answer, kind, "en", "file.json")


@st.composite
def benchmark_splits(draw: st.DrawFn) -> dict[str, list[Question]]:
    """Train (and maybe validation) answers from ANSWERS, test answers from ANSWERS and TEST_ONLY,
    spelled with random case and spaces."""
    def spelled(answer: str) -> str:
        upper = draw(st.booleans())
        return draw(st.sampled_from(("", " "))) + (answer.upper() if upper else answer) + draw(
            st.sampled_from(("", "  ")))

    def split(n: int, pool: tuple[str, ...], first: int) -> list[Question]:
        return [question(first + i, draw(st.integers(0, 12)), spelled(draw(st.sampled_from(pool))),
                         draw(st.sampled_from(("open", "closed")))) for i in range(n)]

    splits = {"train": split(draw(st.integers(1, 30)), ANSWERS, 0),
              "test": split(draw(st.integers(1, 20)), ANSWERS + TEST_ONLY, 1000)}
    if draw(st.booleans()):
        splits["val"] = split(draw(st.integers(1, 10)), ANSWERS, 2000)
    return splits


@settings(max_examples=100, deadline=None)
@given(benchmark_splits(), st.floats(0.05, 0.5), st.integers(0, 3))
def test_the_vocabulary_is_the_training_answers_and_never_a_test_only_one(splits, fraction, seed):
    plan = plan_splits(splits, val_fraction=fraction, seed=seed)
    training = {normalise(q.answer) for split in ("train", "val") for q in splits.get(split, [])}
    assert set(plan.vocabulary) == training
    assert not set(plan.vocabulary) & {normalise(a) for a in TEST_ONLY}
    assert plan.test == splits["test"]
    labels = answer_labels(plan.test, plan.vocabulary)
    outside = [q for q, label in zip(plan.test, labels, strict=True) if label == -1]
    assert all(normalise(q.answer) not in training for q in outside)
    coverage = vocabulary_coverage(plan.test, plan.vocabulary)
    assert coverage["answers_outside_vocabulary"] == len(outside)


@settings(max_examples=100, deadline=None)
@given(benchmark_splits(), st.floats(0.05, 0.5), st.integers(0, 3))
def test_selection_uses_the_own_validation_split_else_train_images_held_out(splits, fraction, seed):
    plan = plan_splits(splits, val_fraction=fraction, seed=seed)
    if splits.get("val"):
        assert plan.fit == splits["train"] and plan.select == splits["val"]
        assert plan.selection.startswith("the benchmark's validation split")
        return
    assert sorted([*plan.fit, *plan.select], key=lambda q: int(q.qid)) == splits["train"]
    assert not {q.image for q in plan.fit} & {q.image for q in plan.select}, "an image in both"
    images = {q.image for q in splits["train"]}
    if len(images) >= 2:
        assert plan.fit and plan.select
    assert plan.selection.endswith(f"held out by image ({len(plan.select)} questions)")


def test_held_out_images_are_stable_as_the_benchmark_grows():
    small = [question(i, i // 3, "yes") for i in range(60)]  # 20 images, 3 questions each
    grown = small + [question(100 + i, 50 + i // 3, "no") for i in range(60)]
    _, held_small = held_out_by_image(small, 0.2, seed=0)
    _, held_grown = held_out_by_image(grown, 0.2, seed=0)
    assert len({q.image for q in held_small}) == 4 and len({q.image for q in held_grown}) == 8
    # an image held out of the grown benchmark and present in the small one was held out there too
    small_images = {q.image for q in small}
    assert {q.image for q in held_grown} & small_images <= {q.image for q in held_small}
    assert held_out_by_image(small, 0.2, seed=1)[1] != held_small


def naive_accuracy(predicted: list[str],
                   questions: list[Question]) -> dict[str, tuple[float | None, int]]:
    out = {}
    for group in ("open", "closed", "overall"):
        pairs = [(p, q) for p, q in zip(predicted, questions, strict=True)
                 if group == "overall" or q.answer_type == group]
        hits = sum(p.strip().lower().split() == q.answer.strip().lower().split() for p, q in pairs)
        out[group] = (hits / len(pairs) if pairs else None, len(pairs))
    return out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ANSWERS + TEST_ONLY),
                          st.sampled_from(ANSWERS + TEST_ONLY),
                          st.sampled_from(("open", "closed"))), max_size=40))
def test_accuracy_matches_a_naive_reference(rows):
    questions = [question(i, i, truth, kind) for i, (_, truth, kind) in enumerate(rows)]
    predicted = [p for p, _, _ in rows]
    got = accuracy(predicted, questions)
    for group, (value, samples) in naive_accuracy(predicted, questions).items():
        assert got[group]["samples"] == samples
        if value is None:
            assert got[group]["accuracy"] is None
        else:
            assert got[group]["accuracy"] == pytest.approx(value)


def test_answers_match_after_folding_case_and_whitespace_only():
    assert normalise(" Yes ") == normalise("YES") == "yes"
    assert normalise("Left\t  Lung\n") == "left lung"
    assert normalise("left-lung") != normalise("left lung")  # no further rewriting: exact match
    qs = [question(0, 0, "Yes ", "closed"), question(1, 1, "right lobe", "open"),
          question(2, 2, "CT", "open")]
    result = accuracy(["yes", "Right  Lobe", "mri"], qs)
    assert result["closed"] == {"accuracy": 1.0, "samples": 1}
    assert result["open"] == {"accuracy": 0.5, "samples": 2}
    assert result["overall"]["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 predictions for 3 questions"):
        accuracy(["yes", "no"], qs)


def test_the_ceiling_is_the_share_of_answers_the_vocabulary_holds():
    test = [question(0, 0, "yes", "closed"), question(1, 1, "hemorrhage"), question(2, 2, "ct"),
            question(3, 3, "pa")]
    coverage = vocabulary_coverage(test, ["yes", "no", "ct"])
    assert coverage == {"answers_outside_vocabulary": 2,
                        "ceiling": {"open": pytest.approx(1 / 3), "closed": 1.0, "overall": 0.5}}


def test_the_question_only_baseline_answers_by_question_text():
    training = [question(0, 0, "CT", text="What modality?"),
                question(1, 1, "ct", text="what  MODALITY?"),
                question(2, 2, "mri", text="What modality?"),
                question(3, 3, "yes", text="Is it normal?"),
                question(4, 4, "yes", text="Is there a mass?"),
                question(5, 5, "no", text="Is there a mass?")]
    asked = [question(10, 9, "mri", text="What Modality?"),
             question(11, 9, "no", text="Is there a mass?"),
             question(12, 9, "chest", text="Which organ?")]
    # the most frequent per text; a tie goes alphabetically; an unseen text: the most frequent
    assert question_only(training, asked) == ["ct", "no", "ct"]
    assert Counter(normalise(q.answer) for q in training).most_common(1)[0][0] == "ct"
    assert question_only([], asked) == ["", "", ""]
