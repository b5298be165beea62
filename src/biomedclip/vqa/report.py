"""What the VQA stage measured: `metrics/vqa.json` and `reports/vqa.md`.

`metrics/vqa.json`, per benchmark: `open`, `closed` and `overall` (`accuracy`, `samples`),
`answers_outside_vocabulary`, `vocabulary`, the accuracy `ceiling` the vocabulary leaves, the
`question_only` baseline (same shape as the accuracies), how the epoch was chosen (`selection`),
the rejects by reason, the questions left out by language, and for VQA-RAD how many test images
also appear in train. The report shows the same for people, and the paper's published numbers
in a table of their own, cited as the paper's: they are never mixed with measured ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biomedclip.vqa.formats import Reject
from biomedclip.vqa.params import VqaParams

# As read from the VQA figure of Zhang et al. (2023), "BiomedCLIP: a multimodal biomedical
# foundation model pretrained from fifteen million scientific image-text pairs": accuracy in %,
# (open, closed, overall), BiomedCLIP's encoders in METER against PubMedCLIP's.
PAPER_VQA = {
    "VQA-RAD": {"BiomedCLIP + METER": (67.0, 76.5, 72.7), "PubMedCLIP": (60.1, 80.0, 72.1)},
    "SLAKE": {"BiomedCLIP + METER": (84.3, 88.9, 86.1), "PubMedCLIP": (78.4, 82.5, 80.1)},
}
GROUPS = ("open", "closed", "overall")
EXAMPLES = 10  # rejects named in the report per benchmark (all of them are in the metrics' counts)


@dataclass
class BenchmarkResult:
    name: str
    format: str  # vqa_rad | slake
    layout: str  # osf | mevf | slake
    mode: str  # frozen_encoders | fine_tuned
    questions: dict[str, int]  # fit, select, test
    images: dict[str, int]  # the same splits' distinct images
    vocabulary: int
    coverage: dict[str, Any]  # answers_outside_vocabulary, ceiling
    accuracy: dict[str, dict[str, Any]]  # open | closed | overall -> accuracy, samples
    question_only: dict[str, dict[str, Any]]
    selection: dict[str, Any]  # how, epoch, epochs_run, accuracy
    rejects: list[Reject] = field(default_factory=list)
    left_out_by_language: dict[str, int] = field(default_factory=dict)
    test_images_in_train: int = 0
    embedded: dict[str, int] = field(default_factory=dict)  # images, questions embedded by this run
    model_folder: str = ""
    seconds: float = 0.0

    def reject_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reject in self.rejects:
            counts[str(reject.reason)] = counts.get(str(reject.reason), 0) + 1
        return dict(sorted(counts.items()))

    def metrics(self) -> dict[str, Any]:
        entry: dict[str, Any] = {group: dict(self.accuracy[group]) for group in GROUPS}
        entry.update(answers_outside_vocabulary=self.coverage["answers_outside_vocabulary"],
                     vocabulary=self.vocabulary, ceiling=dict(self.coverage["ceiling"]),
                     question_only={group: dict(self.question_only[group]) for group in GROUPS},
                     selection={k: v for k, v in self.selection.items() if k != "how"},
                     questions=dict(self.questions), rejected=self.reject_counts(),
                     left_out_by_language=dict(self.left_out_by_language), mode=self.mode)
        if self.format == "vqa_rad":
            entry["test_images_in_train"] = self.test_images_in_train
        return entry


def flat_metrics_of(metrics: dict[str, Any]) -> dict[str, float]:
    """`metrics/vqa.json`'s numbers as `vqa/<benchmark>/<group>/accuracy`, the baseline's as
    `vqa/<benchmark>/question_only/<group>/accuracy`, the vocabulary's size and misses."""
    flat: dict[str, float] = {}
    for name, entry in metrics.items():
        prefix = f"vqa/{name}"
        for group in GROUPS:
            for kind, measured in (("", entry), ("question_only/", entry["question_only"])):
                if measured[group]["accuracy"] is not None:
                    flat[f"{prefix}/{kind}{group}/accuracy"] = float(measured[group]["accuracy"])
        flat[f"{prefix}/answers_outside_vocabulary"] = float(entry["answers_outside_vocabulary"])
        flat[f"{prefix}/vocabulary"] = float(entry["vocabulary"])
    return flat


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _cell(group: dict[str, Any]) -> str:
    return f"{_percent(group['accuracy'])} ({group['samples']})"


@dataclass
class VqaReport:
    model: str
    params: VqaParams
    results: list[BenchmarkResult]

    def metrics(self) -> dict[str, Any]:
        """`metrics/vqa.json`: one entry per benchmark."""
        return {result.name: result.metrics() for result in self.results}

    def flat_metrics(self) -> dict[str, float]:
        """Numbers for a tracker and the promotion gate (`flat_metrics_of` the metrics)."""
        return flat_metrics_of(self.metrics())

    def _encoders(self) -> str:
        p = self.params
        if p.freeze_encoders:
            return "frozen (cached token features)"
        return (f"fine-tuned at {p.lr:g}, fusion x{p.fusion_lr_multiplier:g}, classifier "
                f"x{p.head_lr_multiplier:g}")

    def markdown(self) -> str:
        fusion = self.params.fusion
        lines = [f"## Visual question answering with `{self.model}`", "",
                 f"Answer model: METER-style co-attention ({fusion.layers} layers, width "
                 f"{fusion.width}, {fusion.heads} heads) over the image tower's patch tokens and "
                 "the text tower's token states, pooled into a classifier over the answer "
                 f"vocabulary; encoders {self._encoders()}.", "", PROTOCOL, "",
                 "### Measured here", "",
                 "Accuracy in % (test questions).", "",
                 "| benchmark | | open | closed | overall |", "|---|---|---:|---:|---:|"]
        for r in self.results:
            ceiling = r.coverage["ceiling"]
            rows = (("answer model", [_cell(r.accuracy[g]) for g in GROUPS]),
                    ("question-only baseline", [_cell(r.question_only[g]) for g in GROUPS]),
                    ("ceiling of the vocabulary", [_percent(ceiling[g]) for g in GROUPS]))
            lines += [f"| {r.name} | {name} | " + " | ".join(cells) + " |" for name, cells in rows]
        for r in self.results:
            lines += ["", *_details(r)]
        lines += ["", "### For reference: the paper's published numbers (not measured here)", "",
                  PAPER_NOTE, "", "| dataset | model (the paper's) | open | closed | overall |",
                  "|---|---|---:|---:|---:|"]
        for dataset, models in PAPER_VQA.items():
            lines += [f"| {dataset} | {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |"
                      for name, values in models.items()]
        return "\n".join(lines) + "\n"


PROTOCOL = ("Protocol: the answer vocabulary comes from the training answers only (never "
            "from test); the epoch is chosen on validation data; the test split is scored once, "
            "at the end; an answer is right when it matches exactly after normalising case and "
            "whitespace. A test answer outside the vocabulary counts as wrong: the ceiling is the "
            "best accuracy the vocabulary allows. The question-only baseline answers with the most "
            "frequent training answer to the same question text: what is reached without the "
            "image.")
PAPER_NOTE = ("Accuracy in %, as read from the VQA figure of Zhang et al. (2023), BiomedCLIP's "
              "encoders in METER beside PubMedCLIP's, on the real VQA-RAD and SLAKE. The tables "
              "above are this pipeline's measurements, on the benchmarks configured here.")
RAD_NOTE = ("- VQA-RAD's test images also appear in its train split (the release asks different "
            "questions about the same images): {shared} of the {test} test images here. Its scores "
            "measure new questions, not new images.")


def _details(r: BenchmarkResult) -> list[str]:
    splits = ", ".join(f"{split} {r.questions[split]} questions / {r.images[split]} images"
                       for split in r.questions)
    s, embedded = r.selection, r.embedded
    lines = [f"### {r.name}", "",
             f"- Format {r.format} ({r.layout} layout); {splits}.",
             f"- Vocabulary: {r.vocabulary} answers from the training answers; "
             f"{r.coverage['answers_outside_vocabulary']} test answers outside it (ceiling "
             f"{_percent(r.coverage['ceiling']['overall'])}%).",
             f"- Model selection on {s['how']}: epoch {s['epoch']} of {s['epochs_run']} run, "
             f"validation accuracy {_percent(s['accuracy'])}%.",
             f"- Embedded by this run: {embedded.get('images', 0)} images, "
             f"{embedded.get('questions', 0)} questions (the rest from the feature cache).",
             f"- Answer model: {f'`{r.model_folder}`' if r.model_folder else 'not saved'}; "
             f"{r.seconds:.0f} s."]
    if r.format == "vqa_rad":
        lines.append(RAD_NOTE.format(shared=r.test_images_in_train, test=r.images.get("test", 0)))
    if r.left_out_by_language:
        left = ", ".join(f"{n} in `{lang}`" for lang, n in r.left_out_by_language.items())
        lines.append(f"- Left out by `vqa.languages`: {left}.")
    if not r.rejects:
        return [*lines, "- Rejected: none."]
    counts = ", ".join(f"{reason} {n}" for reason, n in r.reject_counts().items())
    where = f" (all of them in `{r.model_folder}/rejects.json`)" if r.model_folder else ""
    lines += [f"- Rejected: {len(r.rejects)} questions ({counts}); the first "
              f"{min(EXAMPLES, len(r.rejects))}{where}:", "", "| file | qid | reason | detail |",
              "|---|---|---|---|"]
    return lines + [f"| {x.file} | {x.qid} | {x.reason} | {x.detail.replace('|', '/')} |"
                    for x in r.rejects[:EXAMPLES]]
