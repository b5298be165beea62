"""Gutters: recursive X-Y cuts on the sheet between a compound figure's panels.

A row or column of a box is gutter when none of its pixels is content (`sheet.Sheet`); the content
runs between gutters are segments. Minimum size rule: a segment thinner than `MIN_PANEL_SHARE` of
the figure's side (and `MIN_PANEL_PX`) is a sliver, dropped at either end of the box (a title
strip, a colour bar, a stray label) and folded into the neighbour across the narrower gap inside
it (a row of margin letters); a strip (thinner than its own length / `STRIP_ASPECT`) lying within
`STRIP_GAP` of the side (and `STRIP_PX`) of a neighbour is folded into it (a heatmap's dendrogram).
The axis with the widest gutter is cut, then each part again; parts whose content is a sliver
either way are no panel. A panel's box is its cell, the sheet between the gutters' midlines, so
its margin letter and a chart's white space belong to it.

On a black sheet a gutter also needs a panel edge: one of the two lines either side of it is
content along `STRAIGHT` of the box (an image's edge is; the gap inside a dark micrograph is lined
with blobs, a skull's rim touches it briefly). A ragged one is cut only when the content on both
sides has a letter at a corner; as a sliver, its fragment is folded across it, not dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from biomedclip.panels.letters import letter_corner
from biomedclip.panels.scoring import Candidate
from biomedclip.panels.sheet import Box, Segments, Sheet, runs

# A segment thinner than this share of the figure's side is no panel. Titles, colour bars and
# margin letters are 1-5% of it; the thinnest real panels (a row of four) are over 20%.
MIN_PANEL_SHARE = 0.08
MIN_PANEL_PX = 24  # ... nor thinner than this, on small figures (a 24 px panel shows nothing)
# A strip: a segment thinner than its own length / STRIP_ASPECT, within max(STRIP_PX,
# STRIP_GAP x the side) of a neighbour, belongs to it (a dendrogram beside its heatmap).
STRIP_ASPECT, STRIP_GAP, STRIP_PX = 5, 0.015, 6
# A panel edge along a black sheet's gutter: content along this share of the box.
STRAIGHT = 0.4
MAX_DEPTH = 16  # cuts within cuts: deeper than any real layout (a 4 x 4 grid needs 4)


def split_gutters(sheet: Sheet, cell: Box, content: Box, out: Candidate, boxes: list[Box],
                  letters: bool, depth: int = 0) -> None:
    """Cut `cell` (whose content lies within `content`) along its widest gutters, recursively;
    append the leaves' cells to `out.cells` and their trimmed content to `boxes`."""
    trimmed = trim(sheet, content)
    if trimmed is None:
        return
    found = gutter_cut(sheet, trimmed, letters, out) if depth < MAX_DEPTH else None
    if found is None:
        out.cells.append(cell)
        boxes.append(trimmed)
        return
    axis, segments, head, tail = found
    lo, hi = (cell[1], cell[3]) if axis == 0 else (cell[0], cell[2])
    mids = [(a[1] + b[0]) // 2 for a, b in pairwise(segments)]
    bounds = [head or lo, *mids, tail or hi]
    for (a, b), (s0, s1) in zip(pairwise(bounds), segments, strict=True):
        if axis == 0:
            part, inside = (cell[0], a, cell[2], b), (trimmed[0], s0, trimmed[2], s1)
        else:
            part, inside = (a, cell[1], b, cell[3]), (s0, trimmed[1], s1, trimmed[3])
        split_gutters(sheet, part, inside, out, boxes, letters, depth + 1)


def trim(sheet: Sheet, box: Box) -> Box | None:
    """The box shrunk to its content; None if it has none."""
    rows = sheet.row_counts(box).nonzero()[0]
    cols = sheet.col_counts(box).nonzero()[0]
    if len(rows) == 0 or len(cols) == 0:
        return None
    x0, y0, _, _ = box
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1


def gutter_cut(sheet: Sheet, box: Box, letters: bool,
               out: Candidate) -> tuple[int, Segments, int, int] | None:
    """The box's segments along the axis with the widest gutter (one segment: only slivers were
    dropped; None: neither), and where the share of the first and last begins and ends when
    slivers were dropped there (0: the cell's edge). On a black sheet a gutter with no panel edge
    beside it is cut only when the content on both sides has a letter at a corner (counted in
    `out.weak`, or in `out.uncut` when not)."""
    x0, y0, x1, y1 = box
    best, widest, weak, uncut = None, -1, 0, 0
    for axis, counts, origin, side, across in ((0, sheet.row_counts(box), y0, sheet.h, x1 - x0),
                                               (1, sheet.col_counts(box), x0, sheet.w, y1 - y0)):
        segments = [(origin + a, origin + b) for a, b in runs(counts > 0)]
        edge = ((lambda end, start, axis=axis: straight(sheet, axis, box, end, start))
                if sheet.dark else None)
        segments, head, tail = merge_slivers(
            segments, max(MIN_PANEL_PX, int(MIN_PANEL_SHARE * side)), across // STRIP_ASPECT,
            max(STRIP_PX, int(STRIP_GAP * side)), edge)
        axis_weak = axis_uncut = 0
        if len(segments) >= 2 and edge is not None:
            def lettered(segment: tuple[int, int], axis: int = axis) -> bool:
                part = trim(sheet, (x0, segment[0], x1, segment[1]) if axis == 0
                            else (segment[0], y0, segment[1], y1))
                return part is not None and letter_corner(sheet, part) is not None

            kept = [segments[0]]
            for segment in segments[1:]:
                if edge(kept[-1][1], segment[0]):
                    kept.append(segment)
                elif letters and lettered(kept[-1]) and lettered(segment):
                    kept.append(segment)
                    axis_weak += 1
                else:
                    kept[-1] = (kept[-1][0], segment[1])
                    axis_uncut += 1
            segments = kept
        if len(segments) < 2:
            uncut = max(uncut, axis_uncut)
            if best is None and (head or tail):  # no cut, but a title or colour bar to leave out
                best = (axis, segments, head, tail)
            continue
        gap = max(b[0] - a[1] for a, b in pairwise(segments))
        if gap > widest:
            best, widest, weak, uncut = (axis, segments, head, tail), gap, axis_weak, axis_uncut
    out.weak += weak
    out.uncut += uncut
    return best


def merge_slivers(segments: Segments, thin: int, strip: int, near: int,
                  edge: Callable[[int, int], bool] | None = None) -> tuple[Segments, int, int]:
    """Drop thin segments at either end and fold inner ones into the neighbour across the
    narrower gap, or across the one gap of the two that no panel edge lines (`edge(end, start)`:
    a fragment of a dark panel belongs to it, not to the straight-edged panel beside it; at an
    end, one that no edge parts from its neighbour is folded into it, not dropped); fold
    strips (shorter than `strip`) into a neighbour at most `near` away. Returns the segments and
    the midlines of the gaps where ends were dropped (0: none)."""
    segs = list(segments)
    head = tail = 0
    while len(segs) > 1:
        gaps = [b[0] - a[1] for a, b in pairwise(segs)]
        thin_ones = [i for i, (a, b) in enumerate(segs) if b - a < thin]
        if thin_ones:
            i = min(thin_ones, key=lambda j: segs[j][1] - segs[j][0])
            if i == 0 and (edge is None or edge(segs[0][1], segs[1][0])):
                dropped = segs.pop(0)
                head = (dropped[1] + segs[0][0]) // 2
                continue
            if i == len(segs) - 1 and (edge is None or edge(segs[-2][1], segs[-1][0])):
                dropped = segs.pop()
                tail = (dropped[0] + segs[-1][1]) // 2
                continue
        else:
            strips = [i for i, (a, b) in enumerate(segs) if b - a < strip and min(
                gaps[i - 1] if i else near + 1, gaps[i] if i < len(gaps) else near + 1) <= near]
            if not strips:
                break
            i = strips[0]
        left = gaps[i - 1] if i else None
        right = gaps[i] if i < len(gaps) else None
        if edge is not None and left is not None and right is not None:
            left_edge = edge(segs[i - 1][1], segs[i][0])
            right_edge = edge(segs[i][1], segs[i + 1][0])
            if left_edge != right_edge:
                left, right = (None, right) if left_edge else (left, None)
        j = i - 1 if right is None or (left is not None and left <= right) else i + 1
        lo, hi = min(i, j), max(i, j)
        segs[lo:hi + 1] = [(segs[lo][0], segs[hi][1])]
    return segs, head, tail


def straight(sheet: Sheet, axis: int, box: Box, end: int, start: int) -> bool:
    """Whether a panel edge lines the gutter [end, start): one of the two lines either side of it
    is content along at least STRAIGHT of the box (an image panel's edge is content all along;
    the gap inside a dark micrograph is lined with blobs, a skull's rim touches it briefly)."""
    lo, hi = (box[1], box[3]) if axis == 0 else (box[0], box[2])
    return any(float(sheet.line(axis, box, i).mean()) >= STRAIGHT
               for i in (end - 1, end - 2, start, start + 1) if lo <= i < hi)
