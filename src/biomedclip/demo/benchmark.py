"""The labelled zero-shot benchmark written beside the demo corpus.

One class per figure type, images drawn from a seed stream the corpus never uses, laid out the
way users prepare real benchmarks (PCam, LC25000, RSNA...): `images/<class>/<file>.jpg` and a
`labels.csv` of `path,label` with human-readable class names, which evaluation turns into
prompts ("this is an image of {label}").
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from biomedclip.atomic_io import atomic_directory, check_replaceable
from biomedclip.console import progress
from biomedclip.demo.corpus import MARKER, write_marker
from biomedclip.demo.figures import CLASS_NAMES, render
from biomedclip.demo.params import BenchmarkParams
from biomedclip.demo.plan import BENCHMARK_STREAM, new_seed, rng_for


@dataclass(frozen=True)
class BenchmarkReport:
    path: Path
    classes: int
    images: int

    def summary(self) -> str:
        return f"benchmark `{self.path}`: {self.classes} classes, {self.images} images"


def benchmark_jobs(params: BenchmarkParams) -> list[tuple[str, int, int, int, int]]:
    """(kind, index, render seed, width, height) of every benchmark image."""
    jobs = []
    for c, kind in enumerate(CLASS_NAMES):
        for i in range(params.per_class):
            rng = rng_for(params.seed, BENCHMARK_STREAM, c * 1_000_000 + i)
            side = params.image_side
            w = int(rng.integers(side.min, side.max + 1))
            h = int(rng.integers(side.min, side.max + 1))
            jobs.append((kind, i, new_seed(rng), w, h))
    return jobs


def generate_benchmark(params: BenchmarkParams, *, force: bool = False) -> BenchmarkReport:
    """Write `params.out/params.name/` atomically; same params, same bytes."""
    final = params.out / params.name
    check_replaceable(final, MARKER, force=force)
    rows: list[tuple[str, str]] = []
    jobs = benchmark_jobs(params)
    with atomic_directory(final) as staging:
        write_marker(staging)
        for kind, i, seed, w, h in progress(jobs, total=len(jobs), description="benchmark images"):
            img, _ = render(kind, seed, w, h)
            rel = f"images/{kind}/{kind}_{i:04d}.jpg"
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            img.save(staging / rel, format="JPEG", quality=90)
            rows.append((rel, CLASS_NAMES[kind]))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label"])
        writer.writerows(rows)
        (staging / "labels.csv").write_text(buf.getvalue(), encoding="utf-8")
        card = {
            "name": params.name,
            "description": "Synthetic PMC-style figures, one class per figure type; none of "
            "these images is in the demo corpus.",
            "classes": list(CLASS_NAMES.values()),
            "images": len(rows),
            "per_class": params.per_class,
            "seed": params.seed,
        }
        (staging / "dataset.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return BenchmarkReport(final, len(CLASS_NAMES), len(rows))
