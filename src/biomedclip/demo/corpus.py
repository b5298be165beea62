"""`biomedclip demo-data`: generate the demo PMC corpus, optionally also in the legacy layout.

Articles are built in worker processes (each from its own seed, so the order of completion does
not matter) and written by this process in article order into a staging folder that replaces the
output folder only when everything is written.

Beside the PMC prefixes, `PANEL_TRUTH` records where the panels of every composite graphic (and
of every single image with a panel letter drawn on it) are and what the caption says of each, so
that panel splitting can be measured on the corpus the pipeline ingests. It is outside every
prefix and the inventory: a PMC listing never sees it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_directory, check_replaceable
from biomedclip.console import progress
from biomedclip.demo.article import ArticleVersion
from biomedclip.demo.build import ArticleBuilder
from biomedclip.demo.layout import LegacyLayout, OpenDataLayout
from biomedclip.demo.params import DemoParams
from biomedclip.demo.plan import Planner

log = logging.getLogger(__name__)

Built = tuple[list[ArticleVersion], dict[str, Any]]
# Marks a folder demo-data wrote, so a later run may replace it (and nothing else).
MARKER = ".biomedclip-demo"
# The panel truth sidecar, relative to the corpus folder: one JSON line per recorded graphic.
PANEL_TRUTH = "demo-truth/panels.jsonl"


def write_marker(folder: Path) -> None:
    (folder / MARKER).write_text("Written by `biomedclip demo-data`; regenerating replaces this folder.\n")
_BUILDERS: dict[str, ArticleBuilder] = {}


def build_article(params: DemoParams, index: int) -> Built:
    """Build article `index` of the corpus `params` describes (all versions + truth)."""
    key = params.model_dump_json()
    if key not in _BUILDERS:
        _BUILDERS.clear()
        _BUILDERS[key] = ArticleBuilder(Planner(params))
    builder = _BUILDERS[key]
    return builder.build(builder.planner.article(index))


@dataclass
class CorpusReport:
    """What was generated, and the ground truth of every article's newest version."""

    articles: int = 0
    versions: int = 0
    figures: int = 0
    graphics: int = 0
    files: int = 0
    bytes: int = 0
    truth: list[dict[str, Any]] = field(default_factory=list)

    def noise_counts(self) -> Counter[str]:
        """Articles carrying each article-level kind, figures carrying each figure-level kind."""
        counts: Counter[str] = Counter()
        for article in self.truth:
            counts.update(article["noise"])
            seen: set[int] = set()
            for graphic in article["graphics"]:
                if graphic["figure"] not in seen:
                    seen.add(graphic["figure"])
                    counts.update(graphic["noise"])
        return counts


    def markdown(self) -> str:
        """A summary for people: sizes, then every noise kind with its count."""
        lines = ["| corpus | count |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in self.sizes()]
        lines += ["", "| noise kind | articles or figures |", "|---|---:|"]
        lines += [f"| {kind} | {count} |" for kind, count in sorted(self.noise_counts().items())]
        return "\n".join(lines)

    def sizes(self) -> list[tuple[str, str]]:
        return [("articles", str(self.articles)), ("article versions", str(self.versions)),
                ("figures", str(self.figures)), ("figure graphics", str(self.graphics)),
                ("files", str(self.files)), ("size", f"{self.bytes / 2**20:.1f} MiB")]


def panel_truth_rows(truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sidecar's rows: every graphic with a panel truth, by PMCID number and figure order."""
    rows = []
    for article in sorted(truth, key=lambda a: int(a["pmcid"][3:])):
        for g in article["graphics"]:  # in figure order, a figure's graphics in order
            if g["panel_truth"] is not None:
                rows.append({"pmcid": article["pmcid"], "version": article["version"], "fig_id": g["fig_id"],
                             "href": g["href"], "media_file": g["media_file"], "condition": g["condition"],
                             "caption": g["caption"], **g["panel_truth"]})
    return rows


def write_panel_truth(folder: Path, truth: list[dict[str, Any]]) -> None:
    path = folder / PANEL_TRUTH
    path.parent.mkdir(parents=True, exist_ok=True)
    # ASCII (non-ASCII escaped): the same bytes whatever the reader's locale.
    lines = [json.dumps(row, sort_keys=True) + "\n" for row in panel_truth_rows(truth)]
    path.write_bytes("".join(lines).encode("ascii"))


def _built_articles(params: DemoParams, workers: int) -> Iterator[Built]:
    indices = range(params.articles)
    if workers <= 1:
        yield from (build_article(params, i) for i in indices)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield from pool.map(build_article, repeat(params), indices, chunksize=8)


def generate_corpus(params: DemoParams, *, workers: int = 1, force: bool = False) -> CorpusReport:
    """Write the corpus to `params.out` (and `params.legacy_out` if set), atomically.

    An existing output folder is replaced only if an earlier run wrote it (its `MARKER` file),
    or with `force`. `workers > 1` starts worker processes (spawn): call from a script's
    `if __name__ == "__main__":` block.
    """
    report = CorpusReport()
    folders = [params.out] + ([params.legacy_out] if params.legacy_out is not None else [])
    for folder in folders:
        check_replaceable(folder, MARKER, force=force)
    with ExitStack() as stack:
        staging = stack.enter_context(atomic_directory(params.out))
        write_marker(staging)
        opendata = OpenDataLayout(staging)
        legacy = None
        if params.legacy_out is not None:
            legacy_staging = stack.enter_context(atomic_directory(params.legacy_out))
            write_marker(legacy_staging)
            legacy = LegacyLayout(legacy_staging)
        built = progress(_built_articles(params, workers), total=params.articles,
                         description="demo articles")
        for versions, truth in built:
            for version in versions:
                opendata.write(version)
            if legacy is not None:
                legacy.write(versions[-1])
            report.articles += 1
            report.versions += len(versions)
            report.figures += truth["figures"]
            report.graphics += len(truth["graphics"])
            report.truth.append(truth)
        opendata.finish(params.snapshot_date)
        write_panel_truth(staging, report.truth)
        if legacy is not None:
            legacy.finish()
        report.files, report.bytes = opendata.files, opendata.bytes
    log.info("wrote %d articles (%d versions, %d figures) to %s", report.articles,
             report.versions, report.figures, params.out)
    return report
