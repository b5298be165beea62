"""The expectation suite on the pairs manifest: code, versioned with the library.

Each expectation belongs to a named check (`checks.CHECKS`); a check is critical (its
failure stops the pipeline) unless `validate.warn_only` lists it. Thresholds come from params:
the `ingest` section for what a single row may hold, the `validate` section for the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import great_expectations.expectations as gxe

from biomedclip.ingest.licenses import allowed_codes
from biomedclip.ingest.params import IngestParams
from biomedclip.ingest.split import SPLITS
from biomedclip.validate.params import ValidateParams

# Columns the pipeline relies on (DESIGN.md), with the SQL type the staged table must carry.
REQUIRED_COLUMNS = {
    "pair_id": "TEXT", "pmcid": "TEXT", "pmid": "TEXT", "fig_id": "TEXT", "label": "TEXT",
    "caption": "TEXT", "image_key": "TEXT", "image_sha256": "TEXT", "width": "INTEGER",
    "height": "INTEGER", "license": "TEXT", "split": "TEXT", "source_uri": "TEXT",
}
# pmid (articles without one) and label (figures without one) may be empty.
NOT_NULL = tuple(c for c in REQUIRED_COLUMNS if c not in ("pmid", "label"))

# The panel table's columns the pipeline relies on (ingest.panels.enabled), none may be null.
PANEL_COLUMNS = {
    "panel_id": "TEXT", "pair_id": "TEXT", "split": "TEXT", "panel_index": "INTEGER", "letter": "TEXT",
    "x0": "REAL", "y0": "REAL", "x1": "REAL", "y1": "REAL", "subcaption": "TEXT", "text": "TEXT",
    "image_key": "TEXT", "image_sha256": "TEXT", "width": "INTEGER", "height": "INTEGER",
}

PAIRS, ARTICLES, INGEST = "pairs", "articles", "ingest_report"  # the data assets
PANELS, PANEL_FIGURES = "panels", "panel_figures"  # with ingest.panels.enabled


class Check(NamedTuple):
    name: str  # one of checks.CHECKS
    asset: str  # PAIRS, ARTICLES or INGEST
    expectation: gxe.Expectation


def checks(ingest: IngestParams, validate: ValidateParams) -> list[Check]:
    """Every expectation of the gate, in the order they are reported."""
    image, split = ingest.image, ingest.split
    found = [
        Check("required_columns", PAIRS, gxe.ExpectTableColumnsToMatchSet(
            column_set=sorted(REQUIRED_COLUMNS), exact_match=False)),
        *(Check("column_types", PAIRS, gxe.ExpectColumnValuesToBeOfType(column=c, type_=t))
          for c, t in REQUIRED_COLUMNS.items()),
        *(Check("not_null", PAIRS, gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in NOT_NULL),
        Check("unique_pair_id", PAIRS, gxe.ExpectColumnValuesToBeUnique(column="pair_id")),
        Check("min_pairs", PAIRS, gxe.ExpectTableRowCountToBeBetween(min_value=validate.min_pairs)),
        Check("caption_words", PAIRS, gxe.ExpectColumnValuesToBeBetween(
            column="caption_words", min_value=ingest.caption.min_words,
            max_value=ingest.caption.max_words)),
        *(Check("image_size", PAIRS, gxe.ExpectColumnValuesToBeBetween(
            column=side, min_value=image.min_side, max_value=image.max_side))
          for side in ("width", "height")),
        Check("split_values", PAIRS, gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))),
        Check("license_allowed", PAIRS, gxe.ExpectColumnValuesToBeInSet(
            column="license", value_set=sorted(allowed_codes(
                ingest.licenses.allowed, ingest.licenses.allow_non_commercial)))),
        Check("split_leakage", ARTICLES, gxe.ExpectColumnValuesToBeBetween(
            column="splits", max_value=1)),
        *(Check("split_fractions", ARTICLES, gxe.ExpectColumnMeanToBeBetween(
            column=name, min_value=max(0.0, round(target - validate.split_tolerance, 6)),
            max_value=min(1.0, round(target + validate.split_tolerance, 6))))
          for name, target in (("train", split.train), ("val", split.val), ("test", split.test))),
        Check("reject_rate", INGEST, gxe.ExpectColumnValuesToBeBetween(
            column="reject_rate", min_value=0, max_value=validate.max_reject_rate)),
        Check("caption_words_median", PAIRS, gxe.ExpectColumnMedianToBeBetween(
            column="caption_words", min_value=validate.caption_words_median.min,
            max_value=validate.caption_words_median.max)),
        Check("figures_per_article_median", ARTICLES, gxe.ExpectColumnMedianToBeBetween(
            column="figures", min_value=validate.figures_per_article_median.min,
            max_value=validate.figures_per_article_median.max)),
    ]
    if ingest.panels.enabled:
        found += panel_checks(ingest, validate)
    for check in found:
        check.expectation.severity = "warning" if check.name in validate.warn_only else "critical"
        check.expectation.meta = {"check": check.name}
    return found


def panel_checks(ingest: IngestParams, validate: ValidateParams) -> list[Check]:
    """The panel table's expectations: boxes, overlap, sub-captions, panels per figure, splits."""
    bounds = validate.panels
    return [
        Check("panel_columns", PANELS, gxe.ExpectTableColumnsToMatchSet(
            column_set=sorted(PANEL_COLUMNS), exact_match=False)),
        *(Check("panel_columns", PANELS, gxe.ExpectColumnValuesToNotBeNull(column=c)) for c in PANEL_COLUMNS),
        Check("unique_panel_id", PANELS, gxe.ExpectColumnValuesToBeUnique(column="panel_id")),
        *(Check("panel_boxes", PANELS, gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1))
          for c in ("x0", "y0", "x1", "y1")),
        *(Check("panel_boxes", PANELS, gxe.ExpectColumnValuesToBeBetween(
            column=c, min_value=0, max_value=1, strict_min=True)) for c in ("box_width", "box_height")),
        Check("panel_subcaption", PANELS, gxe.ExpectColumnValueLengthsToBeBetween(column="subcaption", min_value=1)),
        Check("panel_overlap", PANEL_FIGURES, gxe.ExpectColumnValuesToBeBetween(
            column="max_overlap", min_value=0, max_value=bounds.max_overlap)),
        Check("panels_per_figure", PANEL_FIGURES, gxe.ExpectColumnValuesToBeBetween(
            column="panels", min_value=bounds.per_figure.min, max_value=bounds.per_figure.max)),
        Check("panel_figure", PANEL_FIGURES, gxe.ExpectColumnValuesToBeBetween(
            column="in_manifest", min_value=1, max_value=1)),
        Check("panel_figure", PANEL_FIGURES, gxe.ExpectColumnValuesToBeBetween(
            column="off_split", min_value=0, max_value=0)),
        Check("split_values", PANELS, gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))),
    ]
