"""Charts: bar, line (incl. Kaplan–Meier), scatter, heatmap."""

from __future__ import annotations

import math

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw

from biomedclip.demo.figures.drawing import (
    NAMED_COLOURS,
    Attrs,
    font,
    pick,
    smooth_field,
)


def axes(draw: ImageDraw.ImageDraw, w: int, h: int) -> tuple[float, float, float, float]:
    """Draw an L-shaped axis frame with ticks; returns the plot box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = w * 0.14, h * 0.08, w * 0.96, h * 0.86
    draw.line([(x0, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0), width=2)
    for k in range(5):
        y = y1 - (y1 - y0) * k / 4
        draw.line([(x0 - 5, y), (x0, y)], fill=(0, 0, 0), width=1)
    return x0, y0, x1, y1


def chart_colours(rng: Generator, n: int) -> list[str]:
    names = list(NAMED_COLOURS)
    order = rng.permutation(len(names))
    return [names[int(i)] for i in order[:n]]


def bar_chart(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    groups = int(2 + rng.integers(5))
    series = int(1 + rng.integers(3))
    colours = chart_colours(rng, series)
    measure = pick(rng, ["relative mRNA expression", "cell viability (%)", "tumor volume (mm³)",
                         "serum IL-6 (pg/mL)", "number of colonies", "fold change"])
    error = pick(rng, ["SD", "SEM"])
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = axes(draw, w, h)
    slot = (x1 - x0) / groups
    bar_w = slot * 0.7 / series
    heights = rng.random((groups, series)) * 0.75 + 0.1
    for g in range(groups):
        for s in range(series):
            left = x0 + g * slot + slot * 0.15 + s * bar_w
            top = y1 - heights[g, s] * (y1 - y0)
            draw.rectangle([left, top, left + bar_w * 0.92, y1 - 1], fill=NAMED_COLOURS[colours[s]],
                           outline=(0, 0, 0))
            err = (y1 - y0) * 0.06 * rng.random()
            mid = left + bar_w * 0.46
            draw.line([(mid, top - err), (mid, top + err)], fill=(0, 0, 0), width=1)
            draw.line([(mid - 3, top - err), (mid + 3, top - err)], fill=(0, 0, 0), width=1)
    significant = rng.random() < 0.6
    if significant:
        g = int(rng.integers(groups))
        draw.text((x0 + g * slot + slot * 0.4, y0), "**", fill=(0, 0, 0), font=font(max(10, h // 20)))
    return img, {"groups": groups, "series": series, "colours": colours, "measure": measure,
                 "error": error, "significant": significant}


def line_chart(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    survival = rng.random() < 0.3
    series = int(1 + rng.integers(4 if not survival else 2) + (1 if survival else 0))
    colours = chart_colours(rng, series)
    unit = pick(rng, ["days", "weeks", "hours", "months"])
    measure = "overall survival" if survival else pick(
        rng, ["body weight (g)", "tumor volume (mm³)", "plasma concentration (ng/mL)",
              "clinical score", "blood glucose (mmol/L)"])
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = axes(draw, w, h)
    points = int(6 + rng.integers(8))
    for s in range(series):
        colour = NAMED_COLOURS[colours[s]]
        if survival:
            level, pts = 1.0, []
            for k in range(points + 1):
                x = x0 + (x1 - x0) * k / points
                pts.append((x, y1 - level * (y1 - y0) * 0.95))
                level *= 1.0 - 0.12 * rng.random() * (1 + s)
                pts.append((x, y1 - level * (y1 - y0) * 0.95))
            draw.line(pts, fill=colour, width=2)
        else:
            slope = (rng.random() - 0.3) * 0.8
            pts = [(x0 + (x1 - x0) * k / (points - 1),
                    y1 - (y1 - y0) * min(0.95, max(0.03, 0.3 + slope * k / points
                                                   + 0.08 * (rng.random() - 0.5))))
                   for k in range(points)]
            draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
    return img, {"series": series, "colours": colours, "unit": unit, "measure": measure,
                 "survival": survival}


def scatter_plot(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    groups = int(1 + rng.integers(3))
    colours = chart_colours(rng, groups)
    r = round(float(rng.random() * 1.6 - 0.8), 2)
    fit = rng.random() < 0.6
    pair = pick(rng, [("age (years)", "systolic blood pressure (mmHg)"),
                      ("BMI (kg/m²)", "HbA1c (%)"), ("gene A expression", "gene B expression"),
                      ("predicted value", "measured value"), ("dose (mg/kg)", "response")])
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = axes(draw, w, h)
    n = int(30 + rng.integers(90))
    for i in range(n):
        u = rng.random()
        v = r * (u - 0.5) + math.sqrt(max(0.0, 1 - r * r)) * (rng.random() - 0.5) * 0.8 + 0.5
        x, y = x0 + u * (x1 - x0) * 0.95, y1 - min(max(v, 0.02), 0.98) * (y1 - y0)
        c = NAMED_COLOURS[colours[i % groups]]
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
    if fit:
        draw.line([(x0, y1 - (0.5 - r / 2) * (y1 - y0)), (x1, y1 - (0.5 + r / 2) * (y1 - y0))],
                  fill=(0, 0, 0), width=2)
    return img, {"groups": groups, "colours": colours, "r": r, "fit": fit, "x": pair[0],
                 "y": pair[1], "n": n}


def heatmap(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    rows, cols = int(10 + rng.integers(40)), int(4 + rng.integers(20))
    scheme = pick(rng, ["red-blue", "yellow-purple", "red-green"])
    low, mid, high = {"red-blue": ((40, 80, 200), (255, 255, 255), (210, 40, 40)),
                      "yellow-purple": ((70, 20, 110), (200, 100, 120), (250, 230, 60)),
                      "red-green": ((30, 170, 60), (20, 20, 20), (220, 30, 30))}[scheme]
    values = smooth_field(rng, cols, rows, 4) * 0.6 + rng.random((rows, cols)) * 0.4
    lo, mi, hi = (np.array(c, dtype=np.float32) for c in (low, mid, high))
    t = values[..., None]
    cells = np.where(t < 0.5, lo + (mi - lo) * (t * 2), mi + (hi - mi) * ((t - 0.5) * 2))
    left, top = rng.uniform(0.1, 0.3), rng.uniform(0.1, 0.25)  # labels and dendrograms vary in size
    grid = Image.fromarray(cells.astype(np.uint8)).resize(
        (int(w * (0.92 - left)), int(h * (0.96 - top))), Image.Resampling.NEAREST)
    img = Image.new("RGB", (w, h), (255, 255, 255))
    img.paste(grid, (int(w * left), int(h * top)))
    draw = ImageDraw.Draw(img)
    dendro = rng.random() < 0.7
    if dendro:
        for k in range(min(cols, 12)):
            x = w * left + (k + 0.5) * w * (0.92 - left) / min(cols, 12)
            branch = h * top * (0.2 + 0.6 * rng.random())
            draw.line([(x, h * top - 2), (x, branch)], fill=(0, 0, 0), width=1)
            draw.line([(x, branch), (x + w * 0.06, branch)], fill=(0, 0, 0), width=1)
    bar = Image.fromarray(np.linspace(hi, lo, 64).astype(np.uint8)[:, None, :].repeat(8, axis=1))
    img.paste(bar.resize((max(4, w // 40), int(h * 0.4))), (int(w * 0.94), int(h * 0.2)))
    return img, {"rows": rows, "cols": cols, "scheme": scheme, "dendrogram": dendro}


# --- laboratory and other --------------------------------------------------------------------
