"""Compound figures with ground truth: the panel boxes and letters a splitter should find.

About half of PMC's figures hold several panels. `compound_figure(seed)` draws one from the demo
renderers with the variety real figures show, and returns where each panel is, so that panel
detection can be measured (`bench/panels.py`) instead of eyeballed:

- grids with gutters of 2-32 px, and abutting panels (no gutter: only the content changes), on
  white or black sheets (microscopy and radiology figures are often on black);
- rows of different heights and panels of different widths ("unequal"), a wide panel spanning
  the columns or a tall one spanning two rows ("spanning");
- panel letters upper or lower case, mostly top-left, sometimes top-right or bottom-left, in a
  white box, drawn straight on the image, or in the margin above the panel; a tenth of the
  compound figures have none;
- insets (a zoom or another image inside a panel: part of that panel, not a panel), column titles
  above the grid or a colour bar beside it (not panels either);
- single images, some with a letter on them (one panel: the figure stays whole);
- half of them JPEG round-tripped, as PMC serves most figures.

The demo corpus draws its composite graphics with the same pieces (`corpus_figure`: the planned
panels, kinds and sizes, in a grid with gutters or abutting, spanning, unequal or inset layout,
letters as above) and some single images with a letter on them (`lettered_single`), and records
their truth beside the corpus (`corpus.PANEL_TRUTH`). `assemble` draws every one of them.

Same seed, same pixels and truth: seeded draws, Pillow's drawing and Pillow's JPEG codec only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw

from biomedclip.demo.figures import Attrs, render
from biomedclip.demo.figures.drawing import font, pick
from biomedclip.demo.plan import PanelPlan, new_seed, rng_for

COMPOUND_STREAM = 3  # after plan.CORPUS_STREAM (1) and plan.BENCHMARK_STREAM (2)

ALL_KINDS = ("he_histology", "ihc", "fluorescence", "electron_microscopy", "chest_xray", "ct", "mri",
             "ultrasound", "bar_chart", "line_chart", "scatter_plot", "heatmap", "western_blot",
             "flow_cytometry", "diagram", "photograph")
IMAGE_KINDS = ("he_histology", "ihc", "fluorescence", "electron_microscopy", "chest_xray", "ct",
               "mri", "ultrasound", "photograph", "western_blot")
DARK_KINDS = ("fluorescence", "ct", "mri", "ultrasound", "electron_microscopy", "chest_xray")
# Layout families and how often each is drawn.
FAMILIES = (("grid", 0.30), ("abutting", 0.14), ("spanning", 0.12), ("unequal", 0.08),
            ("inset", 0.10), ("titled", 0.07), ("single-lettered", 0.10), ("single", 0.09))
GRIDS = ((1, 2), (2, 1), (1, 3), (2, 2), (2, 2), (2, 3), (3, 2), (3, 3), (1, 4), (2, 4))
GUTTERS = (2, 4, 8, 16, 32)  # px, on figures 520-800 px wide: up to ~5% of the side
MAX_SIDE = 800
TITLES = ("Control", "Treated", "WT", "KO", "Day 0", "Day 7", "Baseline", "Follow-up", "Vehicle")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive


@dataclass(frozen=True)
class PanelTruth:
    letter: str | None
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 normalised to [0, 1]


@dataclass(frozen=True)
class CompoundFigure:
    image: Image.Image
    panels: tuple[PanelTruth, ...]  # in reading order: rows top to bottom, left to right
    kinds: tuple[str, ...]  # the renderer of each panel, in the order of `panels`
    layout: str  # e.g. "grid-2x2-gutter8", "abutting-2x3", "spanning-top", "single-lettered"


@dataclass(frozen=True)
class LetterStyle:
    upper: bool
    corner: str  # "tl", "tr" or "bl"
    placement: str  # "box" (black on a white box), "direct" (on the image), "margin" (above it)
    size: int  # font size, px
    bold: bool


def compound_figure(seed: int) -> CompoundFigure:
    """One compound (or single) figure and its panel truth, drawn from `seed`."""
    rng = rng_for(seed, COMPOUND_STREAM, 0)
    family = weighted(rng, FAMILIES)
    dark = family in ("grid", "abutting", "spanning", "unequal", "inset") and rng.random() < 0.22
    width = int(rng.integers(520, MAX_SIDE + 1))
    if family == "titled":
        width -= 60  # room for a colour bar, and a title strip under MAX_SIDE (grid's `limit`)
    lettered = family == "single-lettered" or (family != "single" and rng.random() < 0.9)
    style = letter_style(rng, family, width) if lettered else None
    strip = style.size + 6 if style is not None and style.placement == "margin" else 0
    gutter, margin = pick(rng, GUTTERS), int(rng.integers(0, 16))
    if family in ("single", "single-lettered"):
        margin = 0  # the image is the figure
        boxes, layout = [(0, 0, width, int(width * rng.uniform(0.6, 1.0)))], family
    elif family == "spanning":
        boxes, layout = spanning(rng, width, max(gutter, 4), margin, strip)
    elif family == "unequal":
        boxes, layout = unequal(rng, width, max(gutter, 4), margin, strip), "unequal"
    else:
        rows, cols = pick(rng, GRIDS) if family != "inset" or rng.random() < 0.7 else (1, 1)
        if family == "abutting":
            gutter = margin = 0
        boxes = grid(rng, width, rows, cols, gutter, margin, strip, MAX_SIDE - 30 * (family == "titled"))
        layout = f"grid-{rows}x{cols}-gutter{gutter}" if family == "grid" else f"{family}-{rows}x{cols}"
    n = len(boxes)
    pool = DARK_KINDS if dark else IMAGE_KINDS if family in ("abutting", "inset") else ALL_KINDS
    first = pick(rng, pool)
    same = rng.random() < 0.5
    kinds = tuple(first if same else pick(rng, pool) for _ in range(n))

    title = family == "titled" and rng.random() < 0.5
    colour_bar = family == "titled" and not title
    top = int(rng.integers(18, 30)) if title else 0
    right = int(rng.integers(40, 60)) if colour_bar else 0
    images = [render(kind, new_seed(rng), x1 - x0, y1 - y0)[0]
              for kind, (x0, y0, x1, y1) in zip(kinds, boxes, strict=True)]
    sheet, boxes, letters = assemble(rng, images, boxes, margin=margin, dark=dark, style=style,
                                     insets=range(n) if family == "inset" else (), top=top, right=right)
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        sheet.save(buffer, format="JPEG", quality=int(rng.integers(70, 96)))
        sheet = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return CompoundFigure(sheet, panel_truth(letters, boxes, sheet.size), kinds, layout)


def weighted(rng: Generator, options: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*options, strict=True)
    return names[int(rng.choice(len(names), p=np.array(weights) / sum(weights)))]


def letter_style(rng: Generator, family: str, width: int) -> LetterStyle:
    corner = weighted(rng, (("tl", 0.74), ("tr", 0.13), ("bl", 0.13)))
    placements = (("box", 0.4), ("direct", 0.4), ("margin", 0.2))
    if family in ("single-lettered", "abutting") or corner == "bl":
        placements = placements[:2]
    return LetterStyle(upper=rng.random() < 0.75, corner=corner, placement=weighted(rng, placements),
                       size=int(np.clip(width * rng.uniform(0.024, 0.04), 12, 30)),
                       bold=rng.random() < 0.6)


def grid(rng: Generator, width: int, rows: int, cols: int, gutter: int, margin: int,
         strip: int, limit: int = MAX_SIDE) -> list[Box]:
    """`rows` x `cols` equal panels, `strip` px above each for margin letters, at most `limit`
    px tall."""
    cell_w = (width - 2 * margin - (cols - 1) * gutter) // cols
    cell_h = int(cell_w * rng.uniform(0.65, 1.05))
    cell_h = min(cell_h, (limit - 2 * margin - (rows - 1) * gutter) // rows - strip)
    return grid_boxes(rows, cols, cell_w, cell_h, gutter, margin, strip)


def grid_boxes(rows: int, cols: int, cell_w: int, cell_h: int, gutter: int, margin: int, strip: int) -> list[Box]:
    """`rows` x `cols` panels of `cell_w` x `cell_h`, row by row, `strip` px above each."""
    return [(margin + c * (cell_w + gutter), margin + r * (cell_h + strip + gutter) + strip,
             margin + c * (cell_w + gutter) + cell_w, margin + r * (cell_h + strip + gutter) + strip + cell_h)
            for r in range(rows) for c in range(cols)]


def spanning(rng: Generator, width: int, gutter: int, margin: int, strip: int,
             panels: int | None = None) -> tuple[list[Box], str]:
    """A wide panel over (or under) a row of 2-3, or a tall panel beside a column of two; `panels`
    (3 or 4) fixes the count, else it is drawn."""
    shapes = (("top", 0.45), ("bottom", 0.2), ("left", 0.35))
    shape = weighted(rng, shapes if panels in (None, 3) else shapes[:2])
    inner = width - 2 * margin
    if shape == "left":
        left_w = int(inner * rng.uniform(0.45, 0.62))
        right_w = inner - left_w - gutter
        cell_h = min(int(right_w * rng.uniform(0.6, 0.9)), (MAX_SIDE - 2 * margin - gutter) // 2 - strip)
        tall = 2 * cell_h + strip + gutter
        x1 = margin + left_w + gutter
        return [(margin, margin + strip, margin + left_w, margin + strip + tall),
                (x1, margin + strip, x1 + right_w, margin + strip + cell_h),
                (x1, margin + 2 * strip + cell_h + gutter, x1 + right_w, margin + strip + tall)], "spanning-left"
    k = panels - 1 if panels else 2 + int(rng.random() < 0.4)
    cell_w = (inner - (k - 1) * gutter) // k
    cell_h = int(cell_w * rng.uniform(0.65, 1.0))
    wide_h = int(inner * rng.uniform(0.3, 0.45))
    scale = min(1.0, (MAX_SIDE - 2 * margin - gutter - 2 * strip) / (cell_h + wide_h))
    cell_h, wide_h = int(cell_h * scale), int(wide_h * scale)
    heights = (wide_h, cell_h) if shape == "top" else (cell_h, wide_h)
    boxes = []
    y = margin
    for row, row_h in enumerate(heights):
        y += strip
        if (row == 0) == (shape == "top"):
            boxes.append((margin, y, margin + k * cell_w + (k - 1) * gutter, y + row_h))
        else:
            boxes += [(margin + c * (cell_w + gutter), y, margin + c * (cell_w + gutter) + cell_w, y + row_h)
                      for c in range(k)]
        y += row_h + gutter
    return boxes, f"spanning-{shape}"


def unequal(rng: Generator, width: int, gutter: int, margin: int, strip: int,
            counts: list[int] | None = None, total: int | None = None) -> list[Box]:
    """2-3 rows of different heights, each of 1-3 panels of different widths; `counts` fixes the
    panels of each row, `total` the rows' summed height (else drawn, and sized from `width`)."""
    rows = len(counts) if counts else 2 + int(rng.random() < 0.4)
    inner = width - 2 * margin
    heights = rng.uniform(0.6, 1.4, rows)
    heights = (heights / heights.sum() * min(total or inner * rows * 0.32,
                                             MAX_SIDE - 2 * margin - (rows - 1) * gutter - rows * strip))
    boxes = []
    y = margin
    for r in range(rows):
        k = counts[r] if counts else 1 + int(rng.integers(3)) if r else 2 + int(rng.integers(2))
        shares = rng.uniform(0.6, 1.4, k)
        widths = (shares / shares.sum() * (inner - (k - 1) * gutter)).astype(int)
        x, y = margin, y + strip
        for cw in widths:
            boxes.append((x, y, x + int(cw), y + int(heights[r])))
            x += int(cw) + gutter
        y += int(heights[r]) + gutter
    return boxes


def draw_inset(rng: Generator, sheet: Image.Image, box: Box, letter_corner: str) -> None:
    """A bordered zoom (or another image) in a corner of the panel away from its letter."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    iw, ih = int(w * rng.uniform(0.28, 0.42)), int(h * rng.uniform(0.28, 0.42))
    if rng.random() < 0.6:  # a zoom on a region of the panel itself
        cx, cy = x0 + int(rng.integers(0, w - iw // 2)), y0 + int(rng.integers(0, h - ih // 2))
        inset = sheet.crop((cx, cy, cx + iw // 2, cy + ih // 2)).resize((iw, ih), Image.Resampling.BICUBIC)
    else:
        inset, _ = render(pick(rng, IMAGE_KINDS), new_seed(rng), iw, ih)
        inset = inset.resize((iw, ih))
    corner = pick(rng, [c for c in ("tr", "br", "bl") if c != letter_corner])
    pad = int(rng.integers(3, 10))
    ix = x1 - iw - pad if corner[1] == "r" else x0 + pad
    iy = y1 - ih - pad if corner[0] == "b" else y0 + pad
    border = pick(rng, [(255, 255, 255), (255, 220, 0), (0, 0, 0)])
    ImageDraw.Draw(sheet).rectangle([ix - 2, iy - 2, ix + iw + 1, iy + ih + 1], fill=border)
    sheet.paste(inset, (ix, iy))


def draw_titles(rng: Generator, draw: ImageDraw.ImageDraw, boxes: list[Box], top: int, dark: bool) -> None:
    """Column titles in a strip above the top row of panels."""
    first = min(b[1] for b in boxes)
    size = max(10, top - 8)
    for x0, y0, x1, _ in boxes:
        if y0 == first:
            text = pick(rng, TITLES)
            tw = draw.textlength(text, font=font(size))
            draw.text(((x0 + x1 - tw) / 2, 3), text, fill=(255, 255, 255) if dark else (0, 0, 0),
                      font=font(size))


def draw_colour_bar(rng: Generator, sheet: Image.Image, draw: ImageDraw.ImageDraw, x: int, y0: int,
                    y1: int) -> None:
    """A vertical colour ramp with two tick labels, beside the panels."""
    bar_w = int(rng.integers(10, 18))
    x = x + 6
    height = int((y1 - y0) * rng.uniform(0.5, 0.9))
    top = y0 + ((y1 - y0) - height) // 2
    ramp = np.linspace(1.0, 0.0, height)[:, None, None]
    colours = (ramp * np.array([214, 39, 40]) + (1 - ramp) * np.array([31, 119, 180]))
    bar = np.broadcast_to(colours, (height, bar_w, 3)).astype(np.uint8)
    sheet.paste(Image.fromarray(np.ascontiguousarray(bar)), (x, top))
    for label, y in (("1.0", top), ("0", top + height - 10)):
        draw.text((x + bar_w + 3, y), label, fill=(0, 0, 0), font=font(10))


def draw_letter(draw: ImageDraw.ImageDraw, sheet: Image.Image, box: Box, letter: str, style: LetterStyle,
                dark: bool) -> None:
    x0, y0, x1, y1 = box
    f = font(style.size)
    stroke = 1 if style.bold else 0
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=f, stroke_width=stroke)
    tw, th = right - left, bottom - top
    if style.placement == "margin":  # in the strip above the panel
        tx = x0 if style.corner != "tr" else x1 - tw
        ty = y0 - th - 4
        colour = (255, 255, 255) if dark else (0, 0, 0)
        draw.text((tx - left, ty - top), letter, fill=colour, font=f, stroke_width=stroke, stroke_fill=colour)
        return
    pad = 3 if style.placement == "box" else max(4, style.size // 3)
    tx = x0 + pad if style.corner != "tr" else x1 - pad - tw
    ty = y0 + pad if style.corner != "bl" else y1 - pad - th
    if style.placement == "box":
        draw.rectangle([tx - 3, ty - 3, tx + tw + 2, ty + th + 2], fill=(255, 255, 255))
        colour = (0, 0, 0)
    else:  # white on dark images, black on light ones
        patch = np.asarray(sheet.crop((tx, ty, tx + tw, ty + th)).convert("L"))
        colour = (255, 255, 255) if patch.mean() < 128 else (0, 0, 0)
    draw.text((tx - left, ty - top), letter, fill=colour, font=f, stroke_width=stroke, stroke_fill=colour)


def assemble(rng: Generator, images: list[Image.Image], boxes: list[Box], *, margin: int, dark: bool,
             style: LetterStyle | None, insets: Sequence[int] = (), top: int = 0,
             right: int = 0) -> tuple[Image.Image, list[Box], list[str | None]]:
    """The figure: `images` pasted into `boxes` (resized to fit) on a white or black sheet, an
    inset in one or two of the panels `insets` names, column titles in a `top` px strip, a colour
    bar in a `right` px one, and a letter on each panel in `style` (none without one). Returns the
    sheet, the boxes where they ended up, and each panel's letter as drawn."""
    w, h = max(b[2] for b in boxes) + margin, max(b[3] for b in boxes) + margin
    sheet = Image.new("RGB", (w + right, h + top), (0, 0, 0) if dark else (255, 255, 255))
    boxes = [(x0, y0 + top, x1, y1 + top) for x0, y0, x1, y1 in boxes]
    for img, (x0, y0, x1, y1) in zip(images, boxes, strict=True):
        if img.size != (x1 - x0, y1 - y0):  # the chest X-ray renderer draws squares
            img = img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
        sheet.paste(img, (x0, y0))
    if insets:
        count = 1 + int(len(insets) > 2 and rng.random() < 0.4)
        for i in sorted(insets[int(j)] for j in rng.permutation(len(insets))[:count]):
            draw_inset(rng, sheet, boxes[i], style.corner if style else "tl")
    draw = ImageDraw.Draw(sheet)
    if top:
        draw_titles(rng, draw, boxes, top, dark)
    if right:
        draw_colour_bar(rng, sheet, draw, w, top, h + top)
    letters: list[str | None] = [None] * len(boxes)
    if style is not None:
        for i, box in enumerate(boxes):
            letters[i] = chr((ord("A") if style.upper else ord("a")) + i)
            draw_letter(draw, sheet, box, letters[i], style, dark)
    return sheet, boxes, letters


def panel_truth(letters: list[str | None], boxes: list[Box], size: tuple[int, int]) -> tuple[PanelTruth, ...]:
    sw, sh = size
    return tuple(PanelTruth(letter, (x0 / sw, y0 / sh, x1 / sw, y1 / sh))
                 for letter, (x0, y0, x1, y1) in zip(letters, boxes, strict=True))


def tiled_figure(images: list[Image.Image], seed: int) -> CompoundFigure:
    """Real images (radiographs, say) tiled as a compound figure: a grid with white gutters or
    abutting, a letter in a corner of each tile. `images` are reused in turn if too few."""
    rng = rng_for(seed, COMPOUND_STREAM, 1)
    rows, cols = pick(rng, ((1, 2), (2, 1), (2, 2), (1, 3), (2, 3), (3, 2)))
    gutter = pick(rng, (0, 4, 8, 16))
    margin = int(rng.integers(0, 12)) if gutter else 0
    tile = int(rng.integers(150, min(300, (MAX_SIDE - 2 * margin) // max(rows, cols)) + 1))
    order = rng.permutation(len(images))
    style = letter_style(rng, "abutting", tile * cols)
    boxes = grid(rng, tile * cols + (cols - 1) * gutter + 2 * margin, rows, cols, gutter, margin, 0)
    tiles = [images[int(order[i % len(images)])].convert("RGB") for i in range(len(boxes))]
    sheet, boxes, letters = assemble(rng, tiles, boxes, margin=margin, dark=False, style=style)
    layout = f"xray-{rows}x{cols}-gutter{gutter}" if gutter else f"xray-abutting-{rows}x{cols}"
    return CompoundFigure(sheet, panel_truth(letters, boxes, sheet.size), ("chest_xray",) * len(boxes), layout)


# --- the demo corpus's composite graphics ---------------------------------------------------------

# Layout families of the corpus's composite graphics, and how often each is drawn.
CORPUS_FAMILIES = (("grid", 0.34), ("abutting", 0.18), ("spanning", 0.18), ("unequal", 0.14), ("inset", 0.16))
SINGLE_LETTERED = 0.08  # single-graphic figures of one panel with a letter drawn on it
MIN_PANEL = 40  # px: a layout with a narrower panel (than this or the planned side) is redrawn as a grid


def corpus_figure(rng: Generator, panels: Sequence[PanelPlan], columns: int) -> tuple[CompoundFigure, list[Attrs]]:
    """A composite graphic of the demo corpus: the planned panels (kinds, seeds, sizes: all one
    size), in reading order, in a layout drawn from `rng` with the variety of `compound_figure`;
    with each panel's attributes, for its caption."""
    n, w, h = len(panels), panels[0].width, panels[0].height
    kinds = tuple(p.kind for p in panels)
    pictures = [i for i, kind in enumerate(kinds) if kind in IMAGE_KINDS]
    family = weighted(rng, CORPUS_FAMILIES)
    if ((family == "abutting" and len(pictures) < n) or (family == "spanning" and n not in (3, 4))
            or (family == "inset" and not pictures)):
        family = "grid"  # charts do not abut (white on white); spanning needs 3 or 4 panels
    dark = all(kind in DARK_KINDS for kind in kinds) and rng.random() < 0.5
    shapes = [(r, n // r) for r in range(1, n + 1) if n % r == 0 and max(r, n // r) <= 4]
    rows, cols = (-(-n // columns), columns) if rng.random() < 0.7 else pick(rng, shapes)
    gutter = 0 if family == "abutting" else min(pick(rng, GUTTERS), max(2, min(w, h) // 6))
    margin = 0 if family == "abutting" else int(rng.integers(0, 12))
    style = letter_style(rng, family, cols * w)
    strip = style.size + 6 if style.placement == "margin" else 0
    top = int(rng.integers(14, 22)) if family == "grid" and rng.random() < 0.1 else 0
    boxes = grid_boxes(rows, cols, w, h, gutter, margin, strip)
    layout = f"{family}-{rows}x{cols}" + (f"-gutter{gutter}" if family != "abutting" else "")
    if family == "spanning":
        k = n - 1
        spanned, layout = spanning(rng, k * w + (k - 1) * max(gutter, 4) + 2 * margin, max(gutter, 4),
                                   margin, strip, panels=n)
    elif family == "unequal":
        counts = [1] * int(rng.integers(max(1, -(-n // 3)), min(3, n) + 1))
        for _ in range(n - len(counts)):
            counts[pick(rng, [r for r, c in enumerate(counts) if c < 3])] += 1
        k = max(counts)
        spanned, layout = unequal(rng, k * w + (k - 1) * max(gutter, 4) + 2 * margin, max(gutter, 4), margin,
                                  strip, counts, len(counts) * h), "unequal-" + "-".join(map(str, counts))
    if family in ("spanning", "unequal"):
        if min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in spanned) >= min(MIN_PANEL, w, h):
            boxes = spanned
        else:
            layout = f"grid-{rows}x{cols}-gutter{gutter}"
    drawn = [render(p.kind, p.seed, x1 - x0, y1 - y0) for p, (x0, y0, x1, y1) in zip(panels, boxes, strict=True)]
    sheet, boxes, letters = assemble(rng, [img for img, _ in drawn], boxes, margin=margin, dark=dark, style=style,
                                     insets=pictures if family == "inset" else (), top=top)
    return CompoundFigure(sheet, panel_truth(letters, boxes, sheet.size), kinds, layout), [a for _, a in drawn]


def lettered_single(rng: Generator, image: Image.Image, kind: str) -> CompoundFigure:
    """One image with a panel letter on it: one panel, which a splitter must keep whole."""
    style = letter_style(rng, "single-lettered", image.width)
    sheet, boxes, letters = assemble(rng, [image], [(0, 0, *image.size)], margin=0, dark=False, style=style)
    return CompoundFigure(sheet, panel_truth(letters, boxes, sheet.size), (kind,), "single-lettered")
