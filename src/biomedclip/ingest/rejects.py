"""Why an input was rejected: one enum for every stage, and the row the rejects table keeps.

Bad input never crashes a run and never disappears: each rejected article, figure or image
becomes a `Reject` with a reason code from `Reason` and a human-readable detail, counted in the
stage report and kept in `rejects.parquet`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    # Article level: the source object itself.
    SUPERSEDED_VERSION = "superseded_version"  # a newer version of the article exists
    METADATA_INVALID = "metadata_invalid"  # the PMC JSON is missing, malformed or inconsistent
    XML_MISSING = "xml_missing"
    XML_MALFORMED = "xml_malformed"  # not well-formed, or not decodable (non-UTF-8 without declaration)
    XML_ENTITIES = "xml_entities"  # a DTD internal subset declaring entities (XXE, billion laughs)
    NOT_AN_ARTICLE = "not_an_article"  # parsed, but no JATS <article> (after unwrapping OAI-PMH)
    ARCHIVE_CORRUPT = "archive_corrupt"  # truncated gzip, not a tar
    ARCHIVE_UNSAFE = "archive_unsafe"  # absolute paths, '..', links or devices in a package
    RETRACTED = "retracted"
    LICENSE_NOT_ALLOWED = "license_not_allowed"
    LICENSE_UNKNOWN = "license_unknown"
    NO_FIGURES = "no_figures"
    # Figure level.
    CAPTION_MISSING = "caption_missing"
    CAPTION_TOO_SHORT = "caption_too_short"
    CAPTION_TOO_LONG = "caption_too_long"
    GRAPHIC_MISSING = "graphic_missing"  # a <fig> without any <graphic>
    # Image level.
    MEDIA_NAME_UNSAFE = "media_name_unsafe"  # an href or media name that would escape its folder
    MEDIA_MISSING = "media_missing"  # no media file matches the graphic's stem
    IMAGE_UNREADABLE = "image_unreadable"  # empty, truncated, not an image
    IMAGE_TOO_LARGE = "image_too_large"  # more pixels than the limit (decompression bomb)
    IMAGE_TOO_SMALL = "image_too_small"
    # Corpus level.
    DUPLICATE_EXACT = "duplicate_exact"  # same image bytes and caption as an earlier pair
    DUPLICATE_NEAR = "duplicate_near"  # perceptually the same image, same caption
    BENCHMARK_OVERLAP = "benchmark_overlap"  # the image (or a panel of it) is nearly a benchmark image
    # Panel level (ingest.panels): a panel crop of a kept figure, not the figure.
    PANEL_DUPLICATE_EXACT = "panel_duplicate_exact"  # same crop bytes and text as an earlier panel
    PANEL_DUPLICATE_NEAR = "panel_duplicate_near"  # perceptually the same crop, same text


LEVELS = {
    "article": {Reason.SUPERSEDED_VERSION, Reason.METADATA_INVALID, Reason.XML_MISSING,
                Reason.XML_MALFORMED, Reason.XML_ENTITIES, Reason.NOT_AN_ARTICLE,
                Reason.ARCHIVE_CORRUPT, Reason.ARCHIVE_UNSAFE, Reason.RETRACTED,
                Reason.LICENSE_NOT_ALLOWED, Reason.LICENSE_UNKNOWN, Reason.NO_FIGURES},
    "figure": {Reason.CAPTION_MISSING, Reason.CAPTION_TOO_SHORT, Reason.CAPTION_TOO_LONG,
               Reason.GRAPHIC_MISSING},
    "image": {Reason.MEDIA_NAME_UNSAFE, Reason.MEDIA_MISSING, Reason.IMAGE_UNREADABLE,
              Reason.IMAGE_TOO_LARGE, Reason.IMAGE_TOO_SMALL},
    "corpus": {Reason.DUPLICATE_EXACT, Reason.DUPLICATE_NEAR, Reason.BENCHMARK_OVERLAP},
    "panel": {Reason.PANEL_DUPLICATE_EXACT, Reason.PANEL_DUPLICATE_NEAR},
}
LEVEL_OF = {reason: level for level, reasons in LEVELS.items() for reason in reasons}


class Rejected(Exception):
    """Raised inside a stage for one bad input; caught and turned into a `Reject` row."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reject:
    reason: Reason
    detail: str
    source_uri: str
    pmcid: str = ""
    version: int = 0
    fig_id: str = ""
    href: str = ""

    @property
    def level(self) -> str:
        return LEVEL_OF[self.reason]

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason.value, "level": self.level}
