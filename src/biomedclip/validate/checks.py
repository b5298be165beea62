"""The gate's checks by name, with what each one guards against (`validate.warn_only` lists names
from here; `suite.py` builds the expectations of each)."""

from __future__ import annotations

from typing import Any

CHECKS: dict[str, str] = {
    "required_columns": "every column the pipeline relies on is in the manifest",
    "column_types": "each required column has its type",
    "not_null": "no nulls where a value is required",
    "unique_pair_id": "no pair twice",
    "min_pairs": "enough pairs to be worth training on",
    "caption_words": "captions within ingest.caption's word bounds",
    "image_size": "image sides within ingest.image's bounds",
    "split_values": "every pair in train, val or test",
    "license_allowed": "only the licences ingest.licenses allows",
    "split_leakage": "no article in two splits",
    "split_fractions": "each split's share of articles near ingest.split",
    "reject_rate": "the last ingest rejected no more than validate.max_reject_rate",
    "caption_words_median": "median caption length in range (a parser that cuts or merges captions)",
    "figures_per_article_median": "median figures per article in range (a parser that merges figures)",
    # With ingest.panels.enabled: the panel table.
    "panel_columns": "every column the panel table needs, none null where required",
    "unique_panel_id": "no panel twice",
    "panel_boxes": "panel boxes inside the figure (normalised to [0, 1]) and not empty",
    "panel_overlap": "panels of a figure overlap no more than validate.panels.max_overlap",
    "panel_subcaption": "every panel has a non-empty sub-caption",
    "panels_per_figure": "panels of a split figure within validate.panels.per_figure",
    "panel_figure": "every panel's figure is in the manifest, in the panel's split",
}
# Checked only with ingest.panels.enabled.
PANEL_CHECKS = frozenset({"panel_columns", "unique_panel_id", "panel_boxes", "panel_overlap", "panel_subcaption",
                          "panels_per_figure", "panel_figure"})


def observed_text(row: dict[str, Any]) -> str:
    """What a check saw, short enough for a table cell."""
    if "error" in row:
        return f"error: {row['error']}"
    if "unexpected_count" in row:
        return f"{row['unexpected_count']} unexpected ({row['unexpected_percent']:.3g}%)"
    observed = row.get("observed", "")
    return f"{len(observed)} columns" if isinstance(observed, list) else str(observed)
