"""Abutting panels: no gutter between them, only the picture changes (a seam).

Each cell the gutters leave that is not mostly white (`MOSTLY_WHITE`) is tested against the equal
grids of 1-4 x 1-4. Each grid line goes to the strongest seam within 3% of the equal division; a
seam is the share of lines across which the picture steps abruptly (`SEAM_STEP_RATIO` x the steps
beside it, plus `SEAM_STEP_MARGIN`) and lastingly (x-3 against x+2 by `SEAM_FAR`: no thin line).
A grid holds when its weakest line stands `GRID_SEAM` above the 98th percentile of the seams
elsewhere in the cell (the picture's own edges, a heatmap's columns), or `GRID_LETTERED` above it
with letters at one corner of 3/4 of its cells. Most cells win.
"""

from __future__ import annotations

import numpy as np

from biomedclip.panels.letters import letter_corner, letter_support
from biomedclip.panels.scoring import Candidate
from biomedclip.panels.sheet import Box, Sheet

# A seam step is at least SEAM_STEP_RATIO x the larger step beside it, plus SEAM_STEP_MARGIN grey
# levels (JPEG noise), and the picture 3 px before differs from 2 px after by more than SEAM_FAR
# (a 1-2 px line inside one picture steps twice and returns: it is no seam).
SEAM_STEP_RATIO, SEAM_STEP_MARGIN, SEAM_FAR = 3, 4, 8
# A grid's weakest line must stand this far above the cell's own edges (98th percentile of the
# seam profile elsewhere); GRID_LETTERED with letters at one corner of 3/4 of the cells.
GRID_SEAM, GRID_LETTERED = 0.2, 0.05
MIN_CELL = 48  # px: the smallest abutting panel looked for
MOSTLY_WHITE = 0.25  # cells whiter than this are charts on white (a heatmap), not abutting images
MAX_GRID = 4  # rows and columns tried: 1-4 each


def add_grids(sheet: Sheet, candidate: Candidate, letters: bool) -> None:
    """Replace each cell that is not mostly white by the abutting grid found in it, if any."""
    cells: list[Box] = []
    for cell in candidate.cells:
        pictures = sheet.white_share(cell) <= MOSTLY_WHITE
        found = split_grid(sheet, cell, letters) if pictures else None
        if found is None:
            cells.append(cell)
            continue
        grid, seam = found
        cells += grid
        candidate.seam = seam if candidate.seam is None else min(candidate.seam, seam)
        candidate.letter_grid |= seam < GRID_SEAM
        candidate.method = "grid" if len(candidate.cells) == 1 else "gutters+grid"
    candidate.cells = cells


def split_grid(sheet: Sheet, box: Box, letters: bool) -> tuple[list[Box], float] | None:
    """The equal grid of abutting panels in the box, with the most cells (then the strongest
    evidence): its cells and its weakest line's seam contrast; None if no grid is supported."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if min(w, h) < 2 * MIN_CELL:
        return None
    profiles = (seam_profile(sheet, box, 0), seam_profile(sheet, box, 1))
    lines = ({n: grid_lines(profiles[0], n) for n in range(1, MAX_GRID + 1)},
             {n: grid_lines(profiles[1], n) for n in range(1, MAX_GRID + 1)})
    best, best_key = None, None
    for rows in range(1, MAX_GRID + 1):
        for cols in range(1, MAX_GRID + 1):
            if rows * cols < 2 or min(w / cols, h / rows) < max(MIN_CELL, 0.12 * max(w, h)):
                continue
            if not 0.3 <= (w / cols) / (h / rows) <= 3.3:
                continue
            (xs, vx), (ys, vy) = lines[1][cols], lines[0][rows]
            seam = min(vx, vy)
            if seam < (GRID_LETTERED if letters else GRID_SEAM):
                continue
            xb, yb = [x0, *(x0 + x for x in xs), x1], [y0, *(y0 + y for y in ys), y1]
            cells = [(xb[c], yb[r], xb[c + 1], yb[r + 1]) for r in range(rows) for c in range(cols)]
            lettered = (letter_support([letter_corner(sheet, c) for c in cells])
                        if letters else 0.0)
            if seam < GRID_SEAM and lettered < 0.75:
                continue
            key = (len(cells), seam + lettered)
            if best_key is None or key > best_key:
                best, best_key = (cells, seam), key
    return best


def seam_profile(sheet: Sheet, box: Box, axis: int) -> np.ndarray:
    """For each boundary across `axis` (1: between columns x-1 and x), the share of the box's
    lines (every second one) that step there abruptly and lastingly. On a resampled sheet an edge
    may be spread over two steps (a pixel between the two pictures holds some of each): the two
    steps together count as one when the steps beside them are small."""
    x0, y0, x1, y1 = box
    planes = sheet.planes
    p = planes[:, y0:y1:2, x0:x1] if axis == 1 else planes[:, y0:y1, x0:x1:2].transpose(0, 2, 1)
    p = p.astype(np.int16)  # (3, lines, n): signed, for the steps
    step = np.abs(np.diff(p, axis=2)).max(axis=0)  # (lines, n-1): step between i and i+1
    cross, beside = step[:, 2:-2], np.maximum(step[:, 1:-3], step[:, 3:-1])
    far = np.abs(p[:, :, 5:] - p[:, :, :-5]).max(axis=0)  # x+2 against x-3
    abrupt = cross >= SEAM_STEP_RATIO * beside + SEAM_STEP_MARGIN
    if sheet.resampled:  # from x-2 to x across the pixel x-1, against the steps beside the two
        two = np.abs(p[:, :, 3:-2] - p[:, :, 1:-4]).max(axis=0)
        outside = np.maximum(step[:, :-4], step[:, 3:-1])
        abrupt |= two >= SEAM_STEP_RATIO * outside + SEAM_STEP_MARGIN
    out = np.zeros(p.shape[2])
    out[3:-2] = (abrupt & (far > SEAM_FAR)).mean(axis=0)
    return out


def grid_lines(profile: np.ndarray, count: int) -> tuple[list[int], float]:
    """The strongest seam within 3% of each of the count-1 equal divisions, and the weakest one's
    contrast with the 98th percentile of the seams elsewhere (1.0 when there is no line)."""
    length = len(profile)
    reach = max(3, int(0.03 * length))
    lines = []
    for k in range(1, count):
        centre = round(k * length / count)
        lo, hi = max(4, centre - reach), min(length - 3, centre + reach + 1)
        lines.append(lo + int(np.argmax(profile[lo:hi])))
    if not lines:
        return [], 1.0
    elsewhere = np.ones(length, dtype=bool)
    elsewhere[:6] = elsewhere[-6:] = False
    for line in lines:
        elsewhere[max(0, line - 6):line + 7] = False
    background = float(np.percentile(profile[elsewhere], 98)) if elsewhere.any() else 0.0
    return lines, min(float(profile[line]) for line in lines) - background
