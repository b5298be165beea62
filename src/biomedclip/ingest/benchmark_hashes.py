"""The `benchmark-hashes` stage: the pHash of every benchmark image, which the ingest
decontaminates the corpus against (`biomedclip.ingest.decontaminate`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from biomedclip.ingest.decontaminate import hash_benchmarks
from biomedclip.params import Params
from biomedclip.stage import StageContext
from biomedclip.vqa.formats import image_splits


@dataclass(frozen=True)
class HashesReport:
    """The `benchmark-hashes` stage's report: the images hashed per benchmark and split."""

    hashes: Path  # the list the ingest reads
    counts: Mapping[str, Mapping[str, int]]  # benchmark -> split -> images hashed

    def markdown(self) -> str:
        lines = [f"## Benchmark hashes → `{self.hashes}`", "", "| benchmark | split | images hashed |",
                 "|---|---|---:|"]
        lines += [f"| {name} | {split} | {n:,} |"
                  for name, splits in self.counts.items() for split, n in splits.items()]
        return "\n".join(lines) + "\n"


def run(params: Params, context: StageContext) -> HashesReport:
    """The `benchmark-hashes` stage: the pHash of every image of every `evaluate.benchmarks` and
    `vqa.benchmarks` benchmark, every split, into `ingest.decontaminate.hashes`."""
    clean, vqa = params.ingest.decontaminate, params.vqa
    more = [(spec.name, image_splits(spec.name, spec.path, format=spec.format, s3=vqa.s3)) for spec in vqa.benchmarks]
    counts = hash_benchmarks(params.evaluate.benchmarks, params.evaluate.s3, clean.hashes, clean.cache, more=more)
    return HashesReport(clean.hashes, counts)
