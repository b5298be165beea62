"""Laboratory and other figures: western blot, flow cytometry, diagrams, clinical photographs."""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw, ImageFilter

from biomedclip.demo.figures.charts import axes
from biomedclip.demo.figures.drawing import (
    Attrs,
    font,
    pick,
    smooth_field,
    tint,
    to_image,
)


def western_blot(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    lanes = int(2 + rng.integers(9))
    targets = [pick(rng, ["p-AKT", "AKT", "p-ERK1/2", "cleaved caspase-3", "LC3B", "p62",
                          "NF-κB p65", "Bcl-2", "Bax", "HIF-1α"]) for _ in range(int(1 + rng.integers(3)))]
    control = pick(rng, ["β-actin", "GAPDH", "α-tubulin"])
    trend = pick(rng, ["increasing", "decreasing", "unchanged"])
    rows = [*targets, control]
    img = Image.new("RGB", (w, h), (235, 235, 232))
    arr = np.asarray(img, dtype=np.float32).copy()
    layer = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(layer)
    # Blots are cropped by hand: the label column, margins and strip heights differ every time.
    left, right = w * rng.uniform(0.2, 0.4), w * rng.uniform(0.85, 0.98)
    top, height = h * rng.uniform(0.03, 0.2), h * rng.uniform(0.55, 0.8)
    lane_w = (right - left) / lanes
    row_h = height / len(rows)
    for ri, row in enumerate(rows):
        y = top + (ri + 0.5) * row_h
        for li in range(lanes):
            if row == control or trend == "unchanged":
                level = 0.75 + 0.15 * rng.random()
            else:
                frac = li / max(1, lanes - 1)
                level = 0.15 + 0.8 * (frac if trend == "increasing" else 1 - frac)
            x = left + li * lane_w
            draw.ellipse([x + lane_w * 0.12, y - row_h * 0.14, x + lane_w * 0.88, y + row_h * 0.14],
                         fill=int(255 * level))
    layer = layer.filter(ImageFilter.GaussianBlur(2))
    arr -= np.asarray(layer, dtype=np.float32)[..., None] * 0.85
    arr += (rng.random((h, w, 1)) - 0.5) * 10
    img = to_image(arr)
    text = ImageDraw.Draw(img)
    for ri, row in enumerate(rows):
        y = top + (ri + 0.5) * row_h
        text.text((w * 0.02, y - 6), row, fill=(0, 0, 0), font=font(max(9, min(14, int(row_h / 3)))))
    return img, {"lanes": lanes, "targets": targets, "control": control, "trend": trend}


FLOW_PANELS = [("CD4", "CD8"), ("Annexin V", "PI"), ("CD3", "CD19"), ("CD11b", "Ly6G"),
               ("CD45", "CD34")]


def flow_cytometry(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    x_marker, y_marker = pick(rng, FLOW_PANELS)
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = axes(draw, w, h)
    density = np.zeros((h, w), dtype=np.float32)
    clusters = int(2 + rng.integers(3))
    total = 0
    for _ in range(clusters):
        cx = x0 + (x1 - x0) * (0.15 + 0.7 * rng.random())
        cy = y0 + (y1 - y0) * (0.15 + 0.7 * rng.random())
        spread = (x1 - x0) * (0.04 + 0.06 * rng.random())
        n = int(400 + rng.integers(1200))
        total += n
        u = rng.random((n, 4)).sum(axis=1) - 2.0  # Irwin-Hall: bell-shaped, arithmetic only
        v = rng.random((n, 4)).sum(axis=1) - 2.0
        xs = np.clip((cx + u * spread).astype(int), int(x0) + 1, int(x1) - 1)
        ys = np.clip((cy + v * spread).astype(int), int(y0) + 1, int(y1) - 1)
        np.add.at(density, (ys, xs), 1.0)
    d = np.clip(density / max(1.0, float(density.max()) * 0.4), 0, 1)
    ramp = np.where(d[..., None] < 0.5,
                    np.array([30, 60, 220]) + (np.array([40, 200, 60]) - [30, 60, 220]) * d[..., None] * 2,
                    np.array([40, 200, 60]) + (np.array([230, 40, 30]) - [40, 200, 60])
                    * (d[..., None] - 0.5) * 2)
    arr = np.asarray(img, dtype=np.float32).copy()
    hit = density > 0
    arr[hit] = ramp[hit]
    img = to_image(arr)
    draw = ImageDraw.Draw(img)
    qx = x0 + (x1 - x0) * (0.35 + 0.3 * rng.random())
    qy = y0 + (y1 - y0) * (0.35 + 0.3 * rng.random())
    draw.line([(qx, y0), (qx, y1)], fill=(0, 0, 0), width=1)
    draw.line([(x0, qy), (x1, qy)], fill=(0, 0, 0), width=1)
    shares = rng.random(4) + 0.2
    quadrant = [round(float(v), 1) for v in shares / shares.sum() * 100]
    f = font(max(9, h // 28))
    draw.text((x0 + 4, y0 + 2), f"{quadrant[0]}", fill=(0, 0, 0), font=f)
    draw.text((x1 - 30, y0 + 2), f"{quadrant[1]}", fill=(0, 0, 0), font=f)
    return img, {"x_marker": x_marker, "y_marker": y_marker, "events": total,
                 "quadrant": quadrant, "clusters": clusters}


def diagram(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    style = pick(rng, ["CONSORT flow diagram", "signaling pathway schematic", "study workflow",
                       "experimental timeline"])
    vertical = style in ("CONSORT flow diagram", "signaling pathway schematic")
    boxes = int(3 + rng.integers(5))
    fill = pick(rng, [(220, 235, 250), (255, 240, 210), (225, 245, 225), (245, 225, 240)])
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    centres = []
    for k in range(boxes):
        t = (k + 0.5) / boxes
        cx, cy = (w * (0.5 + 0.18 * (rng.random() - 0.5)), h * t) if vertical else (w * t, h * 0.5)
        bw = (w * 0.5) if vertical else (w * 0.7 / boxes)
        bh = (h * 0.6 / boxes) if vertical else (h * 0.3)
        draw.rounded_rectangle([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], radius=6,
                               fill=fill, outline=(40, 40, 40), width=2)
        for line in range(2):
            ly = cy - bh / 4 + line * bh / 3
            draw.line([(cx - bw * 0.35, ly), (cx + bw * (0.1 + 0.25 * rng.random()), ly)],
                      fill=(90, 90, 90), width=2)
        centres.append((cx, cy, bw, bh))
    for (ax, ay, aw, ah), (bx, by, _, bh) in itertools.pairwise(centres):
        if vertical:
            start, end = (ax, ay + ah / 2), (bx, by - bh / 2)
            head = [(end[0] - 5, end[1] - 8), (end[0] + 5, end[1] - 8), end]
        else:
            start, end = (ax + aw / 2, ay), (bx - aw / 2, by)
            head = [(end[0] - 8, end[1] - 5), (end[0] - 8, end[1] + 5), end]
        draw.line([start, end], fill=(40, 40, 40), width=2)
        draw.polygon(head, fill=(40, 40, 40))
    return img, {"style": style, "boxes": boxes, "vertical": vertical}


def photograph(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    subject = pick(rng, ["pigmented skin lesion", "chronic wound", "intraoperative view",
                         "erythematous rash"])
    ruler = rng.random() < 0.6
    field = smooth_field(rng, w, h, 3)
    if subject == "intraoperative view":
        arr = tint(field, (120, 20, 25), (230, 120, 110))
    else:
        tone = pick(rng, [((170, 120, 95), (235, 190, 160)), ((110, 70, 50), (180, 130, 100)),
                          ((200, 160, 140), (250, 220, 200))])
        arr = tint(field, *tone)
    img = to_image(arr + (rng.random((h, w, 1)) - 0.5) * 14)
    draw = ImageDraw.Draw(img)
    cx, cy = w * (0.35 + 0.3 * rng.random()), h * (0.35 + 0.3 * rng.random())
    r = min(w, h) * (0.1 + 0.12 * rng.random())
    pts = []
    for k in range(14):
        a = 2 * math.pi * k / 14
        rr = r * (0.7 + 0.5 * rng.random())
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    colour = {"pigmented skin lesion": (70, 40, 30), "chronic wound": (150, 30, 35),
              "intraoperative view": (240, 220, 190), "erythematous rash": (210, 70, 70)}[subject]
    if subject == "erythematous rash":
        for _ in range(40):
            x, y = rng.random() * w, rng.random() * h
            rr = r * 0.2 * (0.5 + rng.random())
            draw.ellipse([x - rr, y - rr, x + rr, y + rr], fill=colour)
    else:
        draw.polygon(pts, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    if ruler:
        draw = ImageDraw.Draw(img)
        draw.rectangle([0, h * 0.88, w, h], fill=(250, 250, 240))
        for k in range(0, w, max(4, w // 40)):
            draw.line([(k, h * 0.88), (k, h * (0.92 if (k // max(4, w // 40)) % 5 else 0.95))],
                      fill=(0, 0, 0))
    return img, {"subject": subject, "ruler": ruler}


# --- graphics that are not figures (tables and equations drawn as images) ------------------


def table_image(rng: Generator, w: int, h: int) -> Image.Image:
    """A table typeset as an image: header row, rule lines, dashes for cell text."""
    rows, cols = int(4 + rng.integers(8)), int(3 + rng.integers(4))
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    row_h, col_w = h / (rows + 1), w / cols
    draw.rectangle([0, 0, w, row_h], fill=(225, 225, 225))
    for r in range(rows + 2):
        draw.line([(0, r * row_h), (w, r * row_h)], fill=(0, 0, 0), width=1 + (r in (0, 1)))
    for r in range(rows + 1):
        for c in range(cols):
            x = c * col_w + 4
            draw.line([(x, (r + 0.5) * row_h), (x + col_w * (0.3 + 0.5 * rng.random()), (r + 0.5) * row_h)],
                      fill=(40, 40, 40), width=2)
    return img


def formula_image(rng: Generator, w: int, h: int) -> Image.Image:
    """An equation typeset as an image: glyph-like strokes on a line, a fraction bar."""
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    x = 4.0
    while x < w - 10:
        glyph = float(4 + rng.integers(8))
        y = h / 2 + (rng.random() - 0.5) * h * 0.3
        draw.line([(x, y - glyph), (x + glyph * 0.6, y + glyph)], fill=(0, 0, 0), width=2)
        x += glyph + 3
    draw.line([(w * 0.4, h * 0.5), (w * 0.8, h * 0.5)], fill=(0, 0, 0), width=1)
    return img
