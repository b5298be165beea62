"""What a candidate split rests on, and how much to trust it.

A `Candidate` collects the evidence the cuts found (gutters, ragged gutters backed by letters, the
seams of an abutting grid); `judge` turns it, the share of panels with a letter at one corner and
the caption's panel count into a confidence in [0, 1] and a reason people can read. A split whose
confidence is under `min_confidence` keeps the figure whole: a wrong split is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from biomedclip.panels.sheet import Box

# The default `min_confidence` (`ingest.panels.min_confidence`): at 0.5 a split needs more than a
# coin's worth of evidence: on 400 generated figures (`bench/panels.py`, "calibration") splits at
# confidence >= 0.8 are right 97-98% of the time, under 0.6 about 70%.
MIN_CONFIDENCE = 0.5
# Evidence, each as the confidence it gives alone (measured, bench/panels.py "calibration").
GUTTERS = 0.85  # clean gutters on the sheet: the most reliable cut
RAGGED_GUTTERS = 0.6  # a black sheet's gutter with no straight panel edge, cut on letters
GRID_BASE, GRID_SPAN = 0.5, 0.35  # an abutting grid: 0.5 + its seam contrast (at most 0.35 more)
LETTER_GRID = 0.55  # an abutting grid accepted on its letters alone (weak seams)
LETTERED = 0.15  # x the share of panels lettered at one corner
CAPTION_AGREES, CAPTION_DIFFERS = 0.1, 0.3  # the caption's panel count: + when equal, - when not


@dataclass
class Candidate:
    cells: list[Box] = field(default_factory=list)
    weak: int = 0  # ragged black gutters cut (letters on both sides)
    uncut: int = 0  # ragged black gutters left uncut (no letters on both sides)
    seam: float | None = None  # the weakest grid line's contrast, if a grid was found
    letter_grid: bool = False  # a grid accepted on its letters
    method: str = "gutters"


def judge(candidate: Candidate, lettered: float, expected: int | None) -> tuple[float, str]:
    """Confidence in a split and the reason it gives."""
    n = len(candidate.cells)
    parts = []
    confidence = 1.0
    if candidate.method != "grid":
        confidence = RAGGED_GUTTERS if candidate.weak else GUTTERS
        parts.append(f"gutters ({candidate.weak} ragged, backed by letters)" if candidate.weak
                     else "gutters")
    if candidate.seam is not None:
        grid = LETTER_GRID if candidate.letter_grid else GRID_BASE + min(GRID_SPAN, candidate.seam)
        confidence = min(confidence, grid)
        parts.append("a grid of letters" if candidate.letter_grid else "seams of abutting panels")
    confidence += LETTERED * lettered
    if lettered:
        parts.append(f"letters at {lettered:.0%} of panels")
    if expected is not None:
        confidence += CAPTION_AGREES if expected == n else -CAPTION_DIFFERS
        parts.append(f"caption names {expected}" + (" too" if expected == n else f", found {n}"))
    return min(1.0, max(0.0, confidence)), ", ".join(parts)
