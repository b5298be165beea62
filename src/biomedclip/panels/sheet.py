"""The sheet a compound figure's panels are laid out on, and the figure as arrays.

A figure is decided on at most `DECISION_SIDE` px on its long side: larger ones are area-averaged
down to 768-1,024 px (`as_planes`). At that size a journal figure's gutters survive (a 6 px gutter
of an 1,800 px figure is 3 px; in the 512 px figure the store keeps it was 1.7 px, blurred away by
the LANCZOS resize) and its letters are 12-40 px, the sizes the letter test is tuned for, while one
figure costs a few milliseconds. The sheet is white or black: the colour half the figure's frame
shows, or that fills a whole row or column; None when panels fill the figure edge to edge. A pixel
is content when it differs from the sheet colour by more than `SHEET_TOLERANCE` in any channel.
`Sheet` keeps that content mask as prefix sums, so that any box's content per row or column costs
O(side): the gutter cuts ask for it thousands of times per figure.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# The long side a figure is decided on, at most (box coordinates are normalised anyway). Larger
# figures are area-averaged down to 3/4 of it to all of it: by the integer factor that keeps at
# least 3/4 (Pillow's `reduce`, a fast box average), then, if still over, a BOX resize to it. A
# gutter of w px at the published size stays about w x DECISION_SIDE / side px wide; an integer
# factor alone lost up to half of that (a 2,100 px figure went to 700), a BOX resize alone cost 4x
# the reduce. Measured on figures of 1,200-4,000 px: BENCHMARKS.md, "at PMC's sizes".
DECISION_SIDE = 1024
# The largest channel difference from the sheet colour still counted as sheet. JPEG at quality
# 70-95 moves flat white next to an edge by up to ~20 levels; content that light (a pale
# fluorescence background) is rare, and a 24-level tolerance still sees a panel's faint frame.
SHEET_TOLERANCE = 24
# The grey level from which a pixel counts as white (a letter's box, a chart's page), JPEG included.
WHITE = 235

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
Segments = list[tuple[int, int]]


def as_planes(image: Image.Image) -> np.ndarray:
    """(3, H, W) uint8 colour planes, transparency on white, 16-bit scaled to 8, the long side at
    most DECISION_SIDE."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float greyscale: to 8 bits
        grey = np.asarray(image, dtype=np.float32)
        image = Image.fromarray((grey * (255 / max(float(grey.max()), 1.0))).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if (factor := int(max(image.size) / (0.75 * DECISION_SIDE))) > 1:
        image = image.reduce(factor)
    if max(image.size) > DECISION_SIDE:
        scale = DECISION_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.stack([np.asarray(band, dtype=np.uint8) for band in image.split()])


def near(planes: np.ndarray, colour: int) -> np.ndarray:
    """(H, W) bool: within SHEET_TOLERANCE of white (255) or black (0) in every channel."""
    if colour:
        return np.minimum(np.minimum(planes[0], planes[1]), planes[2]) >= 255 - SHEET_TOLERANCE
    return np.maximum(np.maximum(planes[0], planes[1]), planes[2]) <= SHEET_TOLERANCE


def sheet_colour(planes: np.ndarray) -> int | None:
    """255 (white) or 0 (black), if half the frame shows it or a whole row or column does."""
    frame = np.concatenate([planes[:, 0], planes[:, -1], planes[:, :, 0], planes[:, :, -1]], axis=1)
    for colour in (255, 0):
        if near(frame[:, None, :], colour).mean() >= 0.5:
            return colour
        sheet = near(planes, colour)
        if sheet.all(axis=1).any() or sheet.all(axis=0).any():
            return colour
    return None


def prefix_sums(mask: np.ndarray) -> np.ndarray:
    """(N, M+1) int32: along each row of `mask`, the count of True before each position. Rows
    are contiguous, so this is one fast pass (numpy's cumsum down columns is ~10x slower)."""
    return np.pad(np.cumsum(mask, axis=1, dtype=np.int32), ((0, 0), (1, 0)))


class Sheet:
    """One figure: its planes, sheet colour, and the content mask as prefix sums along its rows
    and (on the transposed mask) along its columns. `resampled`: the planes are a reduction of
    the figure (as_planes of a figure over DECISION_SIDE), whose edges may be two pixels wide."""

    def __init__(self, planes: np.ndarray, resampled: bool = False):
        self.planes = planes  # (3, H, W) uint8
        self.resampled = resampled
        self.h, self.w = planes.shape[1:]
        self.bg = sheet_colour(planes)
        self.dark = self.bg == 0
        fg = np.ones((self.h, self.w), dtype=bool) if self.bg is None else ~near(planes, self.bg)
        self.fg_rows = prefix_sums(fg)  # (H, W+1)
        self.fg_cols = prefix_sums(np.ascontiguousarray(fg.T))  # (W, H+1)

    def luma(self, rows: slice, cols: slice) -> np.ndarray:
        """Grey levels of a part of the figure, (rows, cols) int16: ITU-R 601 weights in integer
        arithmetic (the same on any machine). Computed per window: the letter test reads a few
        corners, the white share every second pixel, never the whole figure."""
        p = self.planes[:, rows, cols]
        luma = p[0] * np.int32(299)
        luma += p[1] * np.int32(587)
        luma += p[2] * np.int32(114)
        luma //= 1000
        return luma.astype(np.int16)

    def row_counts(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return self.fg_rows[y0:y1, x1] - self.fg_rows[y0:y1, x0]

    def col_counts(self, box: Box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return self.fg_cols[x0:x1, y1] - self.fg_cols[x0:x1, y0]

    def line(self, axis: int, box: Box, index: int) -> np.ndarray:
        """The content mask of row `index` (axis 0) or column `index` (axis 1) within the box."""
        x0, y0, x1, y1 = box
        if axis == 0:
            return np.diff(self.fg_rows[index, x0:x1 + 1]) > 0
        return np.diff(self.fg_cols[index, y0:y1 + 1]) > 0

    def white_share(self, box: Box) -> float:
        x0, y0, x1, y1 = box
        return float((self.luma(slice(y0, y1, 2), slice(x0, x1, 2)) >= WHITE).mean())


def runs(mask: np.ndarray) -> Segments:
    """[start, end) of the True runs of a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
    return list(zip(starts, ends, strict=True))
