"""One compound figure into panel pairs: the image's panels matched to the caption's sub-captions.

`split_figure` runs the two halves (`layout.find_panels` on the image, with the number of panel
letters the caption names as evidence; `captions.split_caption` on the caption) and pairs them in
reading order: rows top to bottom, left to right, which is the order journals letter panels in.
The letters found on the image are evidence of *where* a letter is, not *which* one (no OCR here),
so the order is the match. A wrong pairing teaches a panel another panel's words, which is worse
than keeping the figure whole, so the figure stays whole, with the reason, when:
- the image shows one panel, or the caption names no panels;
- the caption names its panels by position ("Left:", "Top:") rather than by letter;
- the image's panel count and the caption's letter count differ;
- the layout's confidence is below `min_confidence` (`layout.find_panels` keeps the figure whole
  and says at what confidence it declined the split; 0 lets every split the image shows through).

Each reason has a short code (`KEPT_WHOLE`), which the ingest counts in its report.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from biomedclip.panels.captions import SplitCaption, split_caption
from biomedclip.panels.layout import Layout, find_panels
from biomedclip.panels.scoring import MIN_CONFIDENCE

# Why a figure stays whole, by code: what the ingest's report counts.
KEPT_WHOLE = {
    "no_panel_markers": "the caption names no panels",
    "positional_markers": "the caption names its panels by position, not by letter",
    "one_panel": "the image shows one panel",
    "count_mismatch": "the image's panel count differs from the caption's",
    "low_confidence": "the layout's confidence is below min_confidence",
}


@dataclass(frozen=True)
class PanelPair:
    index: int  # 0-based, reading order
    letter: str  # the caption's panel letter ("A", "B", ...)
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 normalised to [0, 1] of the figure
    subcaption: str  # what the caption says of this panel alone
    text: str  # the shared caption and this panel's sub-caption


@dataclass(frozen=True)
class FigureSplit:
    panels: tuple[PanelPair, ...]  # empty when the figure stays whole
    confidence: float  # the layout's confidence (0 when there is nothing to pair)
    kept_whole: str | None  # why the figure stays whole; None when it is split
    layout: Layout | None  # None when the caption names no panel letters: the image is not read
    caption: SplitCaption
    code: str | None = None  # the reason's code (a `KEPT_WHOLE` key); None when it is split


def split_figure(image: Image.Image, caption: str, *,
                 min_confidence: float = MIN_CONFIDENCE) -> FigureSplit:
    """The panel pairs of one figure, or the reason it stays whole."""
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    parts = split_caption(caption)
    letters = [key for key in parts.panels if len(key) == 1]
    if parts.style == "none":  # nothing to pair a panel with: the image is not looked at
        return FigureSplit((), 0.0, "the caption names no panels", None, parts, "no_panel_markers")
    if not letters:
        return FigureSplit((), 0.0, f"the caption names its panels by position "
                           f"({', '.join(parts.panels)}), not by letter", None, parts,
                           "positional_markers")
    layout = find_panels(image, expected=len(letters), min_confidence=min_confidence)

    def whole(code: str, reason: str) -> FigureSplit:
        confidence = layout.confidence if len(layout.panels) > 1 else layout.declined or 0.0
        return FigureSplit((), confidence, reason, layout, parts, code)

    if layout.declined is not None:
        return whole("low_confidence", f"layout confidence {layout.declined:.2f} < "
                     f"{min_confidence:.2f} ({layout.reason.removeprefix('ambiguous: ')})")
    if len(layout.panels) < 2:
        return whole("one_panel", f"the image shows one panel ({layout.reason})")
    if len(layout.panels) != len(letters):
        return whole("count_mismatch", f"the image shows {len(layout.panels)} panels, the caption "
                     f"names {len(letters)} ({', '.join(letters)})")
    pairs = tuple(PanelPair(i, letter, panel.box, parts.panels[letter], parts.text_for(letter))
                  for i, (letter, panel) in enumerate(zip(letters, layout.panels, strict=True)))
    return FigureSplit(pairs, layout.confidence, None, layout, parts)
