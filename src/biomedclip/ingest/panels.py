"""A kept figure into panel pairs, inside the ingest (`ingest.panels.enabled`).

`decide` says whether and where to split one figure, on the figure as decoded for panels: with
panels on, the ingest decodes figures at no less than twice `image.max_side` on the long side
(`decode_side`), and `biomedclip.panels.match.split_figure` looks at those pixels (the layout
area-averages them to 768-1,024 px, `panels.sheet`). Deciding on the stored figure instead
(long side at most `max_side`, 512) lost the gutters and letters of journal-size figures: a 6 px
gutter of an 1,800 px figure is under 2 px after the LANCZOS resize; 13 of 120 compound figures
tiled at 1,200-4,000 px stayed whole, none now (BENCHMARKS.md, "At the sizes journals publish").
`biomedclip inspect --panels` calls `decide` on the same decode (`biomedclip.panels.inspect`), so
what it shows is what the ingest does.

The crops are cut from that same decode, so a panel of half the figure is cut at full `max_side`
(a six-panel figure of 2,400 px gives panels of ~340 px from its 1,200 px decode, not ~170 from
the stored figure). They are then normalised like every image (`images.encode_image`: JPEG, pHash)
and put in the same content-addressed store, so the dedup and the decontamination see panels as
they see figures.

A split whose smallest panel would fall under `image.min_side` in the figure as found keeps the
figure whole (`panel_too_small`): the same bound every figure meets. A panel's training text is the
shared caption then its sub-caption; when that is longer than `panels.max_words`, the shared part
is cut (its first words, the title, stay) so the sub-caption is never lost to the context length.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from biomedclip.ingest.images import Decoded, ImageStore, encode_image
from biomedclip.ingest.params import IngestParams
from biomedclip.panels.match import KEPT_WHOLE, FigureSplit, split_figure

SPLIT = "split"
DECODE_SCALE = 2  # with panels on, figures are decoded at ≥ this x image.max_side (long side)
# Every outcome a figure can have, by code: split, or kept whole for a reason.
OUTCOMES = {SPLIT: "split into panel pairs", **KEPT_WHOLE,
            "panel_too_small": "a panel would be smaller than image.min_side"}
PANEL_COLUMNS = ("panel_id", "pair_id", "panel_index", "letter", "x0", "y0", "x1", "y1",
                 "subcaption", "text", "confidence", "method", "image_key", "image_sha256", "width",
                 "height", "phash")


@dataclass(frozen=True)
class PanelOutcome:
    status: str  # an `OUTCOMES` key
    detail: str  # for people: the splitter's own words
    panels: list[dict[str, Any]] = field(default_factory=list)  # `PANEL_COLUMNS` rows, when split


def panel_id(pair_id: str, index: int) -> str:
    """Stable across runs: the figure's pair and the panel's place in reading order."""
    return hashlib.sha256(f"{pair_id}\x1fpanel\x1f{index}".encode()).hexdigest()[:20]


def panel_text(shared: str, own: str, max_words: int) -> str:
    """Shared caption then sub-caption, at most `max_words` words; the shared part gives way."""
    own_words, shared_words = own.split(), shared.split()
    room = max_words - len(own_words)
    if len(shared_words) > room:
        shared_words = [*shared_words[:max(room - 1, 0)], "…"] if room > 1 else []
    return " ".join([*shared_words, *own_words])


def pixel_box(box: tuple[float, float, float, float], width: int,
              height: int) -> tuple[int, int, int, int]:
    """A normalised box on a figure `width` x `height`: outward to whole pixels, inside it."""
    x0, y0, x1, y1 = box
    return (max(0, math.floor(x0 * width)), max(0, math.floor(y0 * height)),
            min(width, math.ceil(x1 * width)), min(height, math.ceil(y1 * height)))


def decode_side(params: IngestParams) -> int:
    """The long side the ingest decodes figures at, at least (`images.decode_image`)."""
    return params.image.max_side * (DECODE_SCALE if params.panels.enabled else 1)


@dataclass(frozen=True)
class PanelDecision:
    status: str  # an `OUTCOMES` key
    detail: str  # for people: the splitter's own words
    split: FigureSplit  # the layout, the caption's parts, the pairs (empty unless split)


def decide(original: Decoded, caption: str, params: IngestParams) -> PanelDecision:
    """Whether and where the ingest splits one figure, decided on `original`: the figure as
    decoded with `long_side=decode_side(params)`."""
    split = split_figure(original.rgb, caption, min_confidence=params.panels.min_confidence)
    if split.kept_whole is not None:
        return PanelDecision(split.code or "", split.kept_whole, split)
    for p in split.panels:  # the bound on the figure as found, whatever the decode's scale
        x0, y0, x1, y1 = pixel_box(p.box, original.width, original.height)
        if min(x1 - x0, y1 - y0) < params.image.min_side:
            return PanelDecision("panel_too_small", f"panel {p.letter} would be {x1 - x0}x"
                                 f"{y1 - y0} px < {params.image.min_side} px", split)
    assert split.layout is not None, "a split figure has a layout"
    return PanelDecision(SPLIT, split.layout.reason, split)


def split_panels(original: Decoded, caption: str, pair: str, params: IngestParams,
                 images: ImageStore) -> PanelOutcome:
    """The panel rows of one figure (crops stored), or why it stays whole."""
    decision = decide(original, caption, params)
    split = decision.split
    if decision.status != SPLIT or split.layout is None:
        return PanelOutcome(decision.status, decision.detail)
    rows = []
    for p in split.panels:
        crop = encode_image(original.rgb.crop(pixel_box(p.box, *original.rgb.size)), params.image)
        x0, y0, x1, y1 = (round(v, 6) for v in p.box)
        rows.append({
            "panel_id": panel_id(pair, p.index), "pair_id": pair, "panel_index": p.index,
            "letter": p.letter, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "subcaption": p.subcaption,
            "text": panel_text(split.caption.shared, p.subcaption, params.panels.max_words),
            "confidence": split.confidence, "method": split.layout.method,
            "image_key": images.put(crop), "image_sha256": crop.sha256, "width": crop.width,
            "height": crop.height, "phash": crop.phash,
        })
    return PanelOutcome(SPLIT, decision.detail, rows)
