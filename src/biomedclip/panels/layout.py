"""Where the panels of a compound figure are: boxes, a confidence, and why.

`find_panels(image)` splits a figure with numpy and Pillow alone (no model weights, no OCR), in
four steps, one module each:

1. The sheet (`panels.sheet`): the figure at most `DECISION_SIDE` px on its long side, the white
   or black it is laid out on (none: panels fill it edge to edge), and its content mask.
2. Gutters (`panels.gutters`): recursive X-Y cuts along rows and columns of pure sheet, with a
   minimum size rule (titles, colour bars and margin letters are no panels) and, on black sheets,
   a panel edge along each gutter or letters on both sides of it.
3. Abutting panels (`panels.seams`): inside each cell that is not mostly white, the equal grid of
   up to 4 x 4 whose lines fall on seams where the picture changes abruptly and lastingly.
4. Letters, as evidence (`panels.letters`): a letter-like glyph at a corner of each panel.

Then the decision (`panels.scoring`): a split's confidence is its evidence (gutters 0.85, ragged
ones 0.6; a grid 0.5 + its seam contrast, 0.55 on letters alone; + 0.15 x the share of panels
lettered at one corner) and the caption's `expected` count (+0.1 when it agrees, -0.3 when not).
Below `min_confidence` the figure stays whole, "ambiguous: ...", and `Layout.declined` keeps the
confidence it was refused at: a wrong split is worse than none. `expected` never makes a split.

Chosen by measurement (`python bench/panels.py`: 400 generated figures, 1579 panels; panel F1 at
IoU >= 0.5): connected regions on the sheet 0.72 (charts fall apart, 2-4 px gutters vanish between
4 px blocks), gutters alone 0.86 (abutting panels stay whole), gutters + grid without letter
evidence 0.95, with letters 0.98 at ~120 figures/s per core (held-out seeds 1000-1399: 0.965);
an equal grid of the true panel count scores 0.83, keeping figures whole 0.10. Figures tiled from
the real NIH chest X-rays: 0.99-1.00; at journal sizes (1,200-4,000 px, decided at 768-1,024), see
BENCHMARKS.md. Known misses: 2 px gutters lost to JPEG, dark panels on a black sheet without
letters (kept whole), abutting scans whose black surrounds meet (no seam).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from PIL import Image

from biomedclip.panels.gutters import MIN_PANEL_PX, MIN_PANEL_SHARE, split_gutters
from biomedclip.panels.letters import letter_corner, letter_support
from biomedclip.panels.scoring import CAPTION_DIFFERS, MIN_CONFIDENCE, Candidate, judge
from biomedclip.panels.seams import add_grids
from biomedclip.panels.sheet import DECISION_SIDE, Box, Sheet, as_planes

METHODS = frozenset({"gutters", "grid", "letters"})
ONE_PANEL, ONE_PANEL_RAGGED = 0.9, 0.55  # confidence that a figure with no cut is one panel


@dataclass(frozen=True)
class Panel:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 normalised to [0, 1]
    letter_corner: str | None  # "tl"/"tr"/"bl"/"br" where a letter-like glyph was found


@dataclass(frozen=True)
class Layout:
    panels: tuple[Panel, ...]  # in reading order: rows top to bottom, left to right
    confidence: float  # in what is returned: the split, or (kept whole) that it is one panel
    method: str  # "gutters", "grid", "gutters+grid", or "none" (kept whole)
    reason: str  # why it is or is not split: "gutters", "one panel", "ambiguous: ..."
    declined: float | None = None  # kept whole as ambiguous: the split's confidence, < the minimum


def find_panels(image: Image.Image, *, expected: int | None = None,
                methods: Collection[str] = METHODS,
                min_confidence: float = MIN_CONFIDENCE) -> Layout:
    """The panels of a figure. `expected` is the panel count the caption names, if any: evidence
    for the confidence, never a reason to split. A split under `min_confidence` keeps the figure
    whole. `methods` leaves some out (for measuring)."""
    if expected is not None and expected < 1:
        raise ValueError(f"expected panel count must be at least 1, got {expected}")
    if not 0 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    if unknown := set(methods) - METHODS:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {sorted(METHODS)}")
    sheet = Sheet(as_planes(image), resampled=max(image.size) > DECISION_SIDE)
    w, h = sheet.w, sheet.h
    letters = "letters" in methods

    def whole(confidence: float, reason: str, declined: float | None = None) -> Layout:
        corner = letter_corner(sheet, (0, 0, w, h)) if letters else None
        return Layout((Panel((0.0, 0.0, 1.0, 1.0), corner),), round(confidence, 3), "none", reason,
                      None if declined is None else round(declined, 3))

    if min(w, h) < 2 * MIN_PANEL_PX:
        return whole(ONE_PANEL, "one panel: too small to split")
    candidate = find_cells(sheet, methods)
    if len(candidate.cells) < 2:
        confidence, reason = ONE_PANEL, "one panel"
        if candidate.uncut:
            confidence = ONE_PANEL_RAGGED
            reason = "one panel: its only gutters are ragged black gaps with no letters beside them"
        if expected is not None and expected > 1:
            confidence -= CAPTION_DIFFERS
            reason += (f" (the caption names {expected}; the image shows no gutters or seams "
                       "for them)")
        return whole(confidence, reason)
    corners = [letter_corner(sheet, c) if letters else None for c in candidate.cells]
    confidence, reason = judge(candidate, letter_support(corners), expected)
    if confidence < min_confidence:
        return whole(1 - confidence, f"ambiguous: {reason}", declined=confidence)
    order = reading_order(candidate.cells)
    panels = tuple(Panel((c[0] / w, c[1] / h, c[2] / w, c[3] / h), corners[i]) for i, c in order)
    return Layout(panels, round(confidence, 3), candidate.method, reason)


def find_cells(sheet: Sheet, methods: Collection[str]) -> Candidate:
    """The figure's cells, by gutters, then abutting grids inside them."""
    letters = "letters" in methods
    candidate = Candidate()
    root = (0, 0, sheet.w, sheet.h)
    if "gutters" in methods and sheet.bg is not None:
        boxes: list[Box] = []
        split_gutters(sheet, root, root, candidate, boxes, letters)
        min_w = max(MIN_PANEL_PX, MIN_PANEL_SHARE * sheet.w)
        min_h = max(MIN_PANEL_PX, MIN_PANEL_SHARE * sheet.h)
        candidate.cells = [c for c, b in zip(candidate.cells, boxes, strict=True)
                           if b[2] - b[0] >= min_w and b[3] - b[1] >= min_h]
    else:
        candidate.cells = [root]
    if "grid" in methods:
        add_grids(sheet, candidate, letters)
    return candidate


def reading_order(cells: list[Box]) -> list[tuple[int, Box]]:
    """(index, cell) in reading order: rows (cells overlapping the row's first by half their
    height) top to bottom, left to right within a row."""
    rows: list[list[tuple[int, Box]]] = []
    for i, cell in sorted(enumerate(cells), key=lambda ic: (ic[1][1], ic[1][0])):
        for row in rows:
            first = row[0][1]
            overlap = min(first[3], cell[3]) - max(first[1], cell[1])
            if overlap > 0.5 * min(first[3] - first[1], cell[3] - cell[1]):
                row.append((i, cell))
                break
        else:
            rows.append([(i, cell)])
    return [ic for row in rows for ic in sorted(row, key=lambda ic: (ic[1][0], ic[1][1]))]
