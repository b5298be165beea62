"""Microscopy: H&E histology, immunohistochemistry, fluorescence, electron microscopy."""

from __future__ import annotations

import math

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw, ImageFilter

from biomedclip.demo.figures.drawing import (
    Attrs,
    pick,
    scale_bar,
    scatter_blobs,
    smooth_field,
    tint,
    to_image,
)


def haematoxylin(rng: Generator) -> tuple[int, int, int]:
    return int(70 + 40 * rng.random()), int(30 + 30 * rng.random()), int(110 + 50 * rng.random())


MAGNIFICATIONS = {100: 0.010, 200: 0.016, 400: 0.026}  # nucleus radius as a fraction of the side


def he_histology(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    tissue = pick(rng, ["liver", "kidney", "lung", "colon", "breast", "skin", "lymph node", "brain"])
    finding = pick(rng, ["normal architecture", "inflammatory infiltrate", "necrosis", "fibrosis",
                         "tumor nests"])
    magnification = pick(rng, list(MAGNIFICATIONS))
    side = min(w, h)
    eosin = smooth_field(rng, w, h, 6 + int(rng.integers(6)))
    arr = tint(eosin, (247, 205, 222), (214, 120, 165))
    arr += (rng.random((h, w, 1)) - 0.5) * 18
    img = to_image(arr)
    draw = ImageDraw.Draw(img)
    if finding == "fibrosis":
        for _ in range(8):
            y0 = rng.random() * h
            draw.line([(0, y0), (w, y0 + (rng.random() - 0.5) * h)], fill=(232, 110, 150),
                      width=max(2, side // 30))
    radius = MAGNIFICATIONS[magnification] * side
    count = int(0.5 * w * h / (radius * radius * 28))
    scatter_blobs(draw, rng, w, h, count, radius, haematoxylin)
    if finding == "inflammatory infiltrate":
        cx, cy = rng.random() * w, rng.random() * h
        for _ in range(count):
            x = cx + (rng.random() - 0.5) * w * 0.5
            y = cy + (rng.random() - 0.5) * h * 0.5
            r = radius * 0.5
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(55, 25, 95))
    elif finding == "necrosis":
        cx, cy, r = rng.random() * w, rng.random() * h, side * 0.25
        draw.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=(240, 170, 200))
    elif finding == "tumor nests":
        for _ in range(3):
            cx, cy = rng.random() * w, rng.random() * h
            for _ in range(30):
                x = cx + (rng.random() - 0.5) * side * 0.3
                y = cy + (rng.random() - 0.5) * side * 0.3
                r = radius * 1.5
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(90, 40, 140))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    scale_bar(ImageDraw.Draw(img), w, h, (0, 0, 0))
    return img, {"tissue": tissue, "finding": finding, "magnification": magnification}


IHC_MARKERS = {  # marker → where DAB (brown) sits
    "Ki-67": "nuclear", "p53": "nuclear", "ER": "nuclear",
    "HER2": "membranous", "PD-L1": "membranous", "E-cadherin": "membranous",
    "CD68": "cytoplasmic", "CD31": "vascular",
}


def ihc(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    marker = pick(rng, list(IHC_MARKERS))
    pattern = IHC_MARKERS[marker]
    level = pick(rng, ["low", "moderate", "high"])
    positive = {"low": 0.1, "moderate": 0.4, "high": 0.8}[level]
    magnification = pick(rng, list(MAGNIFICATIONS))
    tissue = pick(rng, ["breast carcinoma", "colorectal adenocarcinoma", "lung adenocarcinoma",
                        "tonsil", "placenta", "glioma"])
    side = min(w, h)
    base = smooth_field(rng, w, h, 8)
    arr = tint(base, (240, 238, 245), (205, 200, 222))
    img = to_image(arr + (rng.random((h, w, 1)) - 0.5) * 10)
    draw = ImageDraw.Draw(img)
    radius = MAGNIFICATIONS[magnification] * side
    count = int(0.45 * w * h / (radius * radius * 28))
    brown = (130, 80, 35)
    for _ in range(count):
        x, y = rng.random() * w, rng.random() * h
        r = radius * (0.8 + 0.4 * rng.random())
        is_pos = rng.random() < positive
        if pattern == "nuclear":
            fill = brown if is_pos else (95, 105, 165)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif pattern == "membranous":
            draw.ellipse([x - 2.2 * r, y - 2 * r, x + 2.2 * r, y + 2 * r],
                         outline=brown if is_pos else None, width=max(1, int(r / 2)))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(95, 105, 165))
        elif pattern == "cytoplasmic":
            if is_pos:
                draw.ellipse([x - 2 * r, y - 1.6 * r, x + 2 * r, y + 1.6 * r], fill=(160, 105, 55))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(95, 105, 165))
        else:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(95, 105, 165))
    if pattern == "vascular":
        for _ in range(int(3 + 10 * positive)):
            x0, y0 = rng.random() * w, rng.random() * h
            pts = [(x0, y0)]
            for _ in range(5):
                x0 += (rng.random() - 0.5) * side * 0.3
                y0 += (rng.random() - 0.5) * side * 0.3
                pts.append((x0, y0))
            draw.line(pts, fill=brown, width=max(2, int(radius)))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    scale_bar(ImageDraw.Draw(img), w, h, (0, 0, 0))
    attrs = {"marker": marker, "pattern": pattern, "level": level, "tissue": tissue,
             "magnification": magnification}
    return img, attrs


FLUOROPHORES = {
    "green": ["GFP", "Alexa Fluor 488", "FITC-phalloidin", "α-tubulin (Alexa Fluor 488)"],
    "red": ["MitoTracker Red", "Alexa Fluor 594", "TRITC-phalloidin", "mCherry"],
    "magenta": ["Cy5", "Alexa Fluor 647"],
}
CHANNEL_RGB = {"blue": (0.25, 0.35, 1.0), "green": (0.2, 1.0, 0.25), "red": (1.0, 0.15, 0.1),
               "magenta": (1.0, 0.1, 0.9)}


def fluorescence(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    colours = ["green"] if rng.random() < 0.5 else ["green", pick(rng, ["red", "magenta"])]
    if rng.random() < 0.3:
        colours = [pick(rng, ["red", "magenta"])]
    markers = [pick(rng, FLUOROPHORES[c]) for c in colours]
    cell = pick(rng, ["HeLa cells", "primary neurons", "fibroblasts", "HEK293T cells",
                      "cardiomyocytes", "organoid sections"])
    structure = pick(rng, ["cytoplasmic", "filamentous", "punctate"])
    side = min(w, h)
    acc = np.zeros((h, w, 3), dtype=np.float32)
    n_cells = int(6 + rng.integers(18))
    centres = [(rng.random() * w, rng.random() * h) for _ in range(n_cells)]
    r_cell = side * (0.05 + 0.05 * rng.random())
    for colour in colours:
        layer = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(layer)
        for cx, cy in centres:
            if structure == "cytoplasmic":
                d.ellipse([cx - 2 * r_cell, cy - 1.6 * r_cell, cx + 2 * r_cell, cy + 1.6 * r_cell],
                          fill=int(120 + 120 * rng.random()))
            elif structure == "filamentous":
                for _ in range(6):
                    a = rng.random() * math.pi
                    dx, dy = math.cos(a) * 2.5 * r_cell, math.sin(a) * 2.5 * r_cell
                    d.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=int(150 + 100 * rng.random()),
                           width=2)
            else:
                for _ in range(12):
                    x = cx + (rng.random() - 0.5) * 4 * r_cell
                    y = cy + (rng.random() - 0.5) * 4 * r_cell
                    d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=255)
        layer = layer.filter(ImageFilter.GaussianBlur(1.2))
        acc += np.asarray(layer, dtype=np.float32)[..., None] * np.array(CHANNEL_RGB[colour])
    nuclei = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(nuclei)
    for cx, cy in centres:
        r = r_cell * 0.8
        d.ellipse([cx - r, cy - r * 0.8, cx + r, cy + r * 0.8], fill=int(160 + 90 * rng.random()))
    nuclei = nuclei.filter(ImageFilter.GaussianBlur(1.5))
    acc += np.asarray(nuclei, dtype=np.float32)[..., None] * np.array(CHANNEL_RGB["blue"])
    acc += rng.random((h, w, 1)).astype(np.float32) * 12
    img = to_image(acc)
    scale_bar(ImageDraw.Draw(img), w, h, (255, 255, 255))
    return img, {"colours": colours, "markers": markers, "cell": cell, "structure": structure}


def electron_microscopy(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    mode = pick(rng, ["TEM", "SEM"])
    side = min(w, h)
    if mode == "SEM":
        subject = pick(rng, ["bacterial biofilm", "red blood cells", "tissue scaffold surface",
                             "virus-infected cells"])
        field = smooth_field(rng, w, h, 10 + int(rng.integers(10)))
        arr = 40 + 150 * field
        img = to_image(arr + rng.random((h, w)) * 25)
        draw = ImageDraw.Draw(img)
        for _ in range(int(15 + rng.integers(30))):
            x, y = rng.random() * w, rng.random() * h
            r = side * (0.02 + 0.05 * rng.random())
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(200, 200, 200), outline=(245, 245, 245),
                         width=2)
            draw.ellipse([x - r * 0.5, y - r * 0.5, x + r * 0.3, y + r * 0.3], fill=(230, 230, 230))
    else:
        subject = pick(rng, ["mitochondria", "synaptic vesicles", "autophagosomes",
                             "endoplasmic reticulum"])
        arr = 150 + 60 * smooth_field(rng, w, h, 8)
        img = to_image(arr + (rng.random((h, w)) - 0.5) * 40)
        draw = ImageDraw.Draw(img)
        for _ in range(int(4 + rng.integers(8))):
            x, y = rng.random() * w, rng.random() * h
            rx, ry = side * (0.05 + 0.06 * rng.random()), side * (0.03 + 0.03 * rng.random())
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=(95, 95, 95), outline=(35, 35, 35),
                         width=2)
            for k in range(1, 5):
                xx = x - rx + 2 * rx * k / 5
                draw.line([(xx, y - ry * 0.7), (xx, y + ry * 0.7)], fill=(50, 50, 50), width=1)
        for _ in range(3):
            y0 = rng.random() * h
            draw.arc([-w * 0.2, y0 - h, w * 1.2, y0 + h * 0.2], 10, 170, fill=(30, 30, 30), width=3)
    img = img.filter(ImageFilter.GaussianBlur(0.5))
    scale_bar(ImageDraw.Draw(img), w, h, (255, 255, 255) if mode == "TEM" else (0, 0, 0))
    scale = pick(rng, ["200 nm", "500 nm", "1 μm", "2 μm", "10 μm"])
    return img, {"mode": mode, "subject": subject, "scale": scale}


# --- radiology -------------------------------------------------------------------------------
