"""The scoring protocol, without the leaks open implementations have: pure functions.

- The answer vocabulary comes from the training answers only (VQA-RAD's train split; SLAKE's
  train + validate), never from test. A test answer outside it counts as wrong; how many there
  are and the accuracy ceiling they leave are reported.
- Model selection uses validation data: SLAKE's own validation split; for VQA-RAD, which has
  none, a part of train held out by image (no image in both parts: its questions would leak).
- Answers are compared by exact match after normalising case and whitespace; accuracy on open,
  closed and all questions, each with its sample count.
- The question-only baseline answers each question with the most frequent training answer to the
  same question text (the most frequent training answer overall for a text never seen in
  training): what a model gets without looking at the image.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from biomedclip.vqa.formats import Question

ANSWER_TYPES = ("open", "closed")


def normalise(text: str) -> str:
    """Case and whitespace folded: 'Yes ', 'yes' and 'YES' are one answer."""
    return " ".join(str(text).split()).lower()


def answer_vocabulary(training: Iterable[Question]) -> list[str]:
    """The normalised answers of `training`, most frequent first (ties alphabetical)."""
    counts = Counter(normalise(q.answer) for q in training)
    return sorted(counts, key=lambda answer: (-counts[answer], answer))


def answer_labels(questions: Sequence[Question], vocabulary: Sequence[str]) -> list[int]:
    """Each question's answer as a class index; -1 where it is outside the vocabulary."""
    index = {answer: i for i, answer in enumerate(vocabulary)}
    return [index.get(normalise(q.answer), -1) for q in questions]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{key}".encode()).digest()


def held_out_by_image(questions: Sequence[Question], fraction: float, seed: int
                      ) -> tuple[list[Question], list[Question]]:
    """(kept, held out): the questions of `fraction` of the images (at least one image, and one
    left when there are two), chosen by a seeded hash of the image key, so an image and all its
    questions are on one side. Stable: adding images never moves an image already held out in."""
    images = sorted({q.image for q in questions}, key=lambda key: _rank(seed, key))
    count = min(max(1, round(fraction * len(images))), max(len(images) - 1, 0))
    held = set(images[:count])
    return [q for q in questions if q.image not in held], [q for q in questions if q.image in held]


@dataclass(frozen=True)
class Plan:
    """What each split is used for."""

    fit: list[Question]  # trains the answer model
    select: list[Question]  # picks the epoch (early stop)
    test: list[Question]  # scored once, at the end
    vocabulary: list[str]  # from fit + select: the training answers
    selection: str  # how `select` was made, for the report


def plan_splits(splits: Mapping[str, Sequence[Question]], *, val_fraction: float,
                seed: int) -> Plan:
    """The protocol's use of a benchmark's splits (`train`, `test`, `val` where it has one)."""
    train, test = list(splits.get("train", ())), list(splits.get("test", ()))
    own = list(splits.get("val", ()))
    if own:
        fit, select = train, own
        selection = f"the benchmark's validation split ({len(own)} questions)"
    else:
        fit, select = held_out_by_image(train, val_fraction, seed)
        held, images = len({q.image for q in select}), len({q.image for q in train})
        selection = f"{held} of train's {images} images held out by image ({len(select)} questions)"
    return Plan(fit, select, test, answer_vocabulary([*fit, *select]), selection)


def accuracy(predicted: Sequence[str], questions: Sequence[Question]) -> dict[str, dict[str, Any]]:
    """{"open"|"closed"|"overall": {"accuracy", "samples"}}: exact match after normalising;
    accuracy None where there are no samples."""
    if len(predicted) != len(questions):
        raise ValueError(f"{len(predicted)} predictions for {len(questions)} questions")
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for answer, question in zip(predicted, questions, strict=True):
        hit = normalise(answer) == normalise(question.answer)
        for group in (question.answer_type, "overall"):
            total[group] += 1
            right[group] += hit
    return {group: {"accuracy": right[group] / total[group] if total[group] else None,
                    "samples": total[group]} for group in (*ANSWER_TYPES, "overall")}


def vocabulary_coverage(questions: Sequence[Question], vocabulary: Iterable[str]) -> dict[str, Any]:
    """How many answers lie outside the vocabulary, and the accuracy ceiling that leaves (a model
    right wherever it can be)."""
    known = set(vocabulary)
    oracle = [q.answer if normalise(q.answer) in known else "" for q in questions]
    ceiling = accuracy(oracle, questions)
    return {"answers_outside_vocabulary": sum(1 for answer in oracle if answer == ""),
            "ceiling": {group: value["accuracy"] for group, value in ceiling.items()}}


def question_only(training: Sequence[Question], questions: Sequence[Question]) -> list[str]:
    """The question-only baseline's answer to each of `questions`."""
    by_text: dict[str, Counter[str]] = defaultdict(Counter)
    overall: Counter[str] = Counter()
    for q in training:
        by_text[normalise(q.question)][normalise(q.answer)] += 1
        overall[normalise(q.answer)] += 1

    def most_frequent(counts: Counter[str]) -> str:
        return min(counts, key=lambda answer: (-counts[answer], answer)) if counts else ""

    fallback = most_frequent(overall)
    return [most_frequent(by_text[text]) if text in by_text else fallback
            for text in (normalise(q.question) for q in questions)]
