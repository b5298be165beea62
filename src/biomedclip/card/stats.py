"""The card's numbers, counted in one streamed pass per Parquet file.

Only the columns a number needs are read, `batch_rows` rows at a time, into Counters and fixed
histograms: memory holds one batch and the counters (bounded by the distinct values: caption
lengths, image sides, years, reasons), never the table, so a 15M-row manifest is counted like a
1,700-row one. Articles and panelled figures are counted as runs of consecutive rows, which needs
the order the ingest writes (PMCID order; a figure's panels together); a manifest that breaks it
is refused with the two PMCIDs that show it, not miscounted.

Quantiles are of the empirical distribution (`numpy.quantile(..., method="inverted_cdf")`): the
smallest value with at least a fraction q of the rows at or below it, always an observed value.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from biomedclip.tables import open_table, read_batches

BATCH_ROWS = 65_536
PAIR_COLUMNS = ("pmcid", "caption", "split", "license", "year", "width", "height", "source_format",
                "source_mode", "source_width", "source_height")
REJECT_COLUMNS = ("level", "reason", "detail", "pmcid", "fig_id", "source_uri")
PANEL_COLUMNS = ("pair_id", "split")
EXAMPLES_PER_REASON = 3
UNKNOWN = "unknown"
# Aspect ratio (width / height) bins: powers of two from 1/8 to 8, 4 bins an octave; ratios beyond
# fall in the end bins.
ASPECT_EDGES = np.round(2.0 ** np.linspace(-3, 3, 25), 6)
SQUARE = 1.05  # |log aspect| within this factor counts as square
SPLIT_ORDER = ("train", "val", "test")
_PMCID = re.compile(r"PMC(\d+)")


class CardInputError(ValueError):
    """An input the card cannot read as the ingest writes it; the message names the file."""


def quantile(counts: Mapping[int, int], q: float) -> int | None:
    """The q-quantile of integer values given as value -> count (inverted CDF; None if empty)."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, math.ceil(round(q * total, 9)))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return int(value)
    raise AssertionError("unreachable: the ranks add up to the total")


def distribution(counts: Mapping[int, int]) -> dict[str, Any]:
    """Count, min, quartiles, p90, p99, max and mean of integer values given as value -> count."""
    total = sum(counts.values())
    if not total:
        return {"count": 0}
    mean = sum(v * n for v, n in counts.items()) / total
    return {"count": total, "min": int(min(counts)), "p10": quantile(counts, 0.1), "p25": quantile(counts, 0.25),
            "median": quantile(counts, 0.5), "p75": quantile(counts, 0.75), "p90": quantile(counts, 0.9),
            "p99": quantile(counts, 0.99), "max": int(max(counts)), "mean": round(mean, 3)}


def stride_for(rows: int, sample: int) -> int:
    """Every k-th row, from the first, gives at most `sample` rows of `rows`."""
    return max(1, math.ceil(rows / sample)) if sample > 0 else max(1, rows)


def ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Most frequent first, ties by name: the order tables and bar charts show."""
    return {k: int(counts[k]) for k in sorted(counts, key=lambda k: (-counts[k], k))}


def split_order(counts: Mapping[str, int]) -> dict[str, int]:
    """train, val, test first (the ingest's splits), any other name after them by name."""
    rank = {name: i for i, name in enumerate(SPLIT_ORDER)}
    return {k: int(counts[k]) for k in sorted(counts, key=lambda k: (rank.get(k, len(rank)), k))}


def open_parquet(path: Path, columns: tuple[str, ...], what: str) -> pq.ParquetFile:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {what} does not exist (the ingest stage writes it)")
    return open_table(path, what, columns, error=CardInputError)


def _value_counts(column: pa.Array) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in pc.value_counts(column).to_pylist():
        value = entry["values"]
        counts[UNKNOWN if value is None or value == "" else str(value)] += entry["counts"]
    return counts


def _int_counts(values: np.ndarray) -> Counter[int]:
    unique, counts = np.unique(values, return_counts=True)
    return Counter({int(v): int(n) for v, n in zip(unique, counts, strict=True)})


def _year_key(year: str) -> tuple[int, int, str]:
    return (0, int(year), "") if year.isdigit() else (1, 0, year)


def _pmcid_key(pmcid: str) -> tuple[int, int, str]:
    match = _PMCID.fullmatch(pmcid)
    return (0, int(match.group(1)), "") if match else (1, 0, pmcid)


# -- pairs ------------------------------------------------------------------------------------
@dataclass
class PairStats:
    """Counters of the pairs manifest; `summary()` is their JSON form."""

    rows: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    licenses: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    modes: Counter[str] = field(default_factory=Counter)
    words: Counter[int] = field(default_factory=Counter)  # caption words -> pairs
    long_side: Counter[int] = field(default_factory=Counter)  # as published
    stored_long_side: Counter[int] = field(default_factory=Counter)  # after the ingest's resize
    resized: int = 0
    aspect: np.ndarray = field(default_factory=lambda: np.zeros(len(ASPECT_EDGES) - 1, dtype=np.int64))
    orientation: Counter[str] = field(default_factory=Counter)
    years: Counter[str] = field(default_factory=Counter)  # articles per publication year
    article_splits: Counter[str] = field(default_factory=Counter)
    figures_per_article: Counter[int] = field(default_factory=Counter)
    caption_sample: list[str] = field(default_factory=list)  # every `stride`-th caption
    stride: int = 1

    @property
    def articles(self) -> int:
        return sum(self.figures_per_article.values())

    def summary(self) -> dict[str, Any]:
        return {
            "pairs": {"total": self.rows, "by_split": split_order(self.splits)},
            "articles": {"total": self.articles, "by_split": split_order(self.article_splits),
                         "by_year": {k: self.years[k] for k in sorted(self.years, key=_year_key)}},
            "figures_per_article": {**distribution(self.figures_per_article),
                                    "articles_by_figures": {str(k): self.figures_per_article[k]
                                                            for k in sorted(self.figures_per_article)}},
            "licenses": ordered(self.licenses),
            "captions": {"words": distribution(self.words)},
            "images": {"formats": ordered(self.formats), "modes": ordered(self.modes),
                       "long_side": distribution(self.long_side),
                       "stored_long_side": distribution(self.stored_long_side),
                       "resized": self.resized,
                       "orientation": {k: self.orientation[k] for k in ("landscape", "square", "portrait")}},
        }


def pair_stats(pairs: Path, *, token_sample: int, batch_rows: int = BATCH_ROWS) -> PairStats:
    """Count the pairs manifest in one pass; keep every k-th caption (k = `stride_for(rows,
    token_sample)`, from row 0) for the token counts."""
    parquet = open_parquet(pairs, PAIR_COLUMNS, "pairs manifest")
    stats = PairStats(stride=stride_for(parquet.metadata.num_rows, token_sample))
    article: list[Any] = []  # the open run: [pmcid, rows, year, split]

    def close_run() -> None:
        if article:
            stats.figures_per_article[article[1]] += 1
            stats.years[article[2]] += 1
            stats.article_splits[article[3]] += 1

    for batch in read_batches(parquet, batch_rows, PAIR_COLUMNS):
        n = batch.num_rows
        col = {name: batch.column(name) for name in PAIR_COLUMNS}
        captions = col["caption"].to_pylist()
        stats.words.update(_int_counts(np.array([len(c.split()) if c else 0 for c in captions], dtype=np.int64)))
        first = (-stats.rows) % stats.stride
        stats.caption_sample.extend(c or "" for c in captions[first::stats.stride])
        for name, counter in (("split", stats.splits), ("license", stats.licenses),
                              ("source_format", stats.formats), ("source_mode", stats.modes)):
            counter.update(_value_counts(col[name]))
        width, height = (col[c].to_numpy(zero_copy_only=False).astype(np.int64) for c in ("width", "height"))
        source_w, source_h = (col[c].to_numpy(zero_copy_only=False).astype(np.int64)
                              for c in ("source_width", "source_height"))
        stats.long_side.update(_int_counts(np.maximum(source_w, source_h)))
        stats.stored_long_side.update(_int_counts(np.maximum(width, height)))
        stats.resized += int(np.count_nonzero((source_w != width) | (source_h != height)))
        ratio = source_w / np.maximum(source_h, 1)
        bins = np.clip(np.searchsorted(ASPECT_EDGES, ratio, side="right") - 1, 0, len(ASPECT_EDGES) - 2)
        stats.aspect += np.bincount(bins, minlength=len(ASPECT_EDGES) - 1)
        stats.orientation.update(landscape=int(np.count_nonzero(ratio > SQUARE)),
                                 portrait=int(np.count_nonzero(ratio < 1 / SQUARE)))
        stats.orientation["square"] += int(np.count_nonzero((ratio <= SQUARE) & (ratio >= 1 / SQUARE)))
        years = col["year"].to_pylist()
        for pmcid, year, split in zip(col["pmcid"].to_pylist(), years, col["split"].to_pylist(), strict=True):
            if article and pmcid == article[0]:
                article[1] += 1
                continue
            if article and _pmcid_key(pmcid) <= _pmcid_key(article[0]):
                raise CardInputError(f"{pairs}: {pmcid} follows {article[0]}: the manifest is not in PMCID order "
                                     "(the ingest writes it so; the card counts articles as runs of rows)")
            close_run()
            article[:] = [pmcid, 1, UNKNOWN if year is None else str(year), split or UNKNOWN]
        stats.rows += n
    close_run()
    return stats


# -- rejects ----------------------------------------------------------------------------------
@dataclass
class RejectStats:
    rows: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    levels: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # the first few, file order

    def summary(self) -> dict[str, Any]:
        return {"total": self.rows, "by_reason": ordered(self.reasons), "by_level": ordered(self.levels),
                "examples": {reason: self.examples[reason] for reason in ordered(self.reasons)}}


def reject_stats(rejects: Path, *, batch_rows: int = BATCH_ROWS) -> RejectStats:
    """Rejects by reason and level, and the first `EXAMPLES_PER_REASON` of each reason."""
    parquet = open_parquet(rejects, REJECT_COLUMNS, "rejects table")
    stats = RejectStats()
    for batch in read_batches(parquet, batch_rows, REJECT_COLUMNS):
        stats.rows += batch.num_rows
        stats.reasons.update(_value_counts(batch.column("reason")))
        stats.levels.update(_value_counts(batch.column("level")))
        wanted = [r for r, n in stats.reasons.items() if len(stats.examples.get(r, ())) < min(n, EXAMPLES_PER_REASON)]
        if not wanted:
            continue
        reasons = batch.column("reason").to_pylist()
        for i, reason in enumerate(reasons):
            reason = reason or UNKNOWN
            kept = stats.examples.setdefault(reason, [])
            if len(kept) < EXAMPLES_PER_REASON:
                kept.append({name: str(batch.column(name)[i].as_py() or "")
                             for name in ("detail", "pmcid", "fig_id", "source_uri")})
    return stats


# -- panels -----------------------------------------------------------------------------------
@dataclass
class PanelStats:
    rows: int = 0
    splits: Counter[str] = field(default_factory=Counter)
    per_figure: Counter[int] = field(default_factory=Counter)  # panels of a split figure -> figures

    def summary(self) -> dict[str, Any]:
        figures = sum(self.per_figure.values())
        return {"total": self.rows, "figures": figures, "by_split": split_order(self.splits),
                "per_figure": {**distribution(self.per_figure),
                               "figures_by_panels": {str(k): self.per_figure[k] for k in sorted(self.per_figure)}}}


def panel_stats(panels: Path, *, batch_rows: int = BATCH_ROWS) -> PanelStats:
    """Panel pairs per split and per figure (a figure's panels are consecutive rows)."""
    parquet = open_parquet(panels, PANEL_COLUMNS, "panel table")
    stats = PanelStats()
    current: list[Any] = []  # [pair_id, panels]
    for batch in read_batches(parquet, batch_rows, PANEL_COLUMNS):
        stats.rows += batch.num_rows
        stats.splits.update(_value_counts(batch.column("split")))
        for pair_id in batch.column("pair_id").to_pylist():
            if current and pair_id == current[0]:
                current[1] += 1
                continue
            if current:
                stats.per_figure[current[1]] += 1
            current[:] = [pair_id, 1]
    if current:
        stats.per_figure[current[1]] += 1
    return stats
