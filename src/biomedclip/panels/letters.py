"""Panel letters, as evidence of where a panel is (not which letter it is: there is no OCR here).

A corner window of a panel (30% of its short side, `WINDOW_MIN`-`WINDOW_MAX` px; for a top corner
also the margin above) holds a letter when a white box at the corner ends inside it with a glyph
in it, or the blob of ink (far from the window's median) nearest the corner is glyph-shaped:
`GLYPH_MIN_PX` tall or more, 0.2-1.5 as wide as tall, filled 0.15-0.85, with strokes (two ink runs
across a quarter of its rows or columns) or a bar (I, l), and a clean 2 px ring around it.
The sizes fit letters of 7-40 px: a journal's 8-12 pt letter on a figure decided on at
`sheet.DECISION_SIDE` px.
"""

from __future__ import annotations

import numpy as np

from biomedclip.panels.sheet import WHITE, Box, Sheet

WINDOW_SHARE, WINDOW_MIN, WINDOW_MAX = 0.3, 16, 48  # the corner window: share of the short side, px
INK = 70  # grey levels from the window's median: ink (a letter) rather than the picture's texture
GLYPH_MIN_PX = 7  # the smallest letter read: smaller ones are specks and JPEG blocks


def letter_corner(sheet: Sheet, box: Box) -> str | None:
    """The first corner of the box (tl, tr, bl, br) with a letter-like glyph at it, or None."""
    x0, y0, x1, y1 = box
    s = int(np.clip(WINDOW_SHARE * min(x1 - x0, y1 - y0), WINDOW_MIN, WINDOW_MAX))
    if min(x1 - x0, y1 - y0) < s:
        return None
    for corner in ("tl", "tr", "bl", "br"):
        xs = slice(x0, x0 + s) if corner[1] == "l" else slice(x1 - s, x1)
        top = corner[0] == "t"
        rows = slice(y0, y0 + s) if top else slice(y1 - s, y1)
        windows = [sheet.luma(rows, xs) if top else sheet.luma(rows, xs)[::-1]]
        if top and y0 >= s:  # a letter in the margin above the panel
            windows.append(sheet.luma(slice(y0 - s, y0), xs)[::-1])
        for window in windows:  # turned so that the corner is its top left
            if glyph(window if corner[1] == "l" else window[:, ::-1]):
                return corner
    return None


def glyph(window: np.ndarray, boxed: bool = False) -> bool:
    """Whether a letter-like glyph sits at the window's top-left corner: in a white box there, or
    as the blob of ink (far from the window's median) nearest to it."""
    h, w = window.shape
    if not boxed:
        box = white_box(window)
        if box is not None and glyph(window[:box[0], :box[1]], boxed=True):
            return True
    ink = np.abs(window - np.median(window)) > INK
    found = blob(ink, max(h, w) if boxed else max(6, int(0.6 * min(h, w))))
    if found is None:
        return False
    r0, r1, c0, c1 = found
    if r1 >= h or c1 >= w:
        return False
    gh, gw = r1 - r0, c1 - c0
    g = ink[r0:r1, c0:c1]
    fill = float(g.mean())
    if not boxed and fill >= 0.9 and gh >= 10 and 8 <= gw <= 2.2 * gh:  # a box: its letter inside
        return glyph(window[r0:r1, c0:c1], boxed=True)
    if not (GLYPH_MIN_PX <= gh <= 0.8 * max(h, 16) and 0.2 * gh <= gw <= 1.5 * gh
            and 0.15 <= fill <= 0.85):
        return False
    row_runs = (g[:, 1:] & ~g[:, :-1]).sum(axis=1) + g[:, 0]
    col_runs = (g[1:] & ~g[:-1]).sum(axis=0) + g[0]
    strokes = max(float((row_runs >= 2).mean()), float((col_runs >= 2).mean()))
    if strokes < 0.25 and not (gw <= 0.4 * gh and fill >= 0.85):  # a round blob, not I or l
        return False
    ring = np.zeros_like(ink)
    ring[max(0, r0 - 2):r1 + 2, max(0, c0 - 2):c1 + 2] = True
    ring[r0:r1, c0:c1] = False
    return not ink[ring].any()


def white_box(window: np.ndarray) -> tuple[int, int] | None:
    """(height, width) of a white box in the window's corner that ends inside it, or None."""
    white = window >= WHITE
    width = first_run(white[0], 1)
    height = first_run(white[:, 0], 1)
    if width is None or height is None:
        return None
    bh, bw = height[1], width[1]
    if not (12 <= bh < window.shape[0] and 10 <= bw < window.shape[1]):
        return None
    return (bh, bw) if white[:bh, :bw].mean() >= 0.55 else None


def blob(ink: np.ndarray, reach: int) -> tuple[int, int, int, int] | None:
    """Rows [r0, r1) and columns [c0, c1) of the ink nearest the top-left corner, starting
    within `reach` of it: alternate first-run projections until they settle."""
    h, w = ink.shape
    r0, r1, c0, c1 = 0, h, 0, w
    for _ in range(4):
        rows = first_run(ink[:, c0:c1].any(axis=1), reach)
        if rows is None:
            return None
        cols = first_run(ink[rows[0]:rows[1]].any(axis=0), reach)
        if cols is None:
            return None
        if (rows, cols) == ((r0, r1), (c0, c1)):
            break
        (r0, r1), (c0, c1) = rows, cols
    return r0, r1, c0, c1


def first_run(mask: np.ndarray, reach: int) -> tuple[int, int] | None:
    """[start, end) of the first True run of a 1-D mask, if it starts within `reach`."""
    start = int(mask.argmax())  # the first True (0 when there is none: checked next)
    if start >= reach or not mask[start]:
        return None
    rest = mask[start:]
    return start, len(mask) if rest.all() else start + int((~rest).argmax())


def letter_support(corners: list[str | None]) -> float:
    """Share of panels with a letter at the corner most of them have one at."""
    found = [c for c in corners if c is not None]
    return max(found.count(c) for c in set(found)) / len(corners) if found else 0.0
