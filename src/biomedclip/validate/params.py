"""The `validate` section: the quality gate's thresholds (per-row bounds come from `ingest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, model_validator

from biomedclip.config import Interval, IntRange, PathValue, Rate, Section
from biomedclip.validate.checks import CHECKS


class MedianRange(Interval):
    min: Annotated[float, Field(ge=0, strict=False)]
    max: Annotated[float, Field(ge=0, strict=False)]


class ValidateOutputs(Section):
    result: PathValue = Path("metrics/validate.json")  # per check: success, observed value
    data_docs: PathValue = Path("reports/validation")  # Great Expectations Data Docs (HTML)


class PanelChecks(Section):
    """Bounds on the panel table (with ingest.panels.enabled)."""

    max_overlap: Rate = 0.05  # of the smaller box: how much two panels of a figure may share
    per_figure: IntRange = IntRange(min=2, max=16)  # panels of one split figure


class ValidateParams(Section):
    """`biomedclip validate`: the quality gate between ingest and shard.

    Bounds on single values (caption words, image sides, licences, split names and fractions)
    come from the `ingest` section, so the gate checks what the ingest was asked to produce.
    """

    min_pairs: Annotated[int, Field(ge=1)] = 100
    split_tolerance: Annotated[float, Field(gt=0, le=0.5)] = 0.03  # |article fraction - target|
    max_reject_rate: Rate = 0.3  # of the last ingest (rejected / (rejected + kept))
    # Distribution checks that catch a silently broken parser (captions cut, figures merged).
    caption_words_median: MedianRange = MedianRange(min=8, max=250)
    figures_per_article_median: MedianRange = MedianRange(min=1, max=15)
    warn_only: Annotated[tuple[str, ...], Field(strict=False)] = (
        "caption_words_median", "figures_per_article_median")  # reported, never fatal
    panels: PanelChecks = PanelChecks()
    batch_rows: Annotated[int, Field(ge=1000)] = 5_000  # manifest rows staged per batch (memory flat past it)
    outputs: ValidateOutputs = ValidateOutputs()

    @model_validator(mode="after")
    def _known_checks(self) -> Self:
        unknown = sorted(set(self.warn_only) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown checks {unknown} in warn_only; known: {', '.join(CHECKS)}")
        return self
