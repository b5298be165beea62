"""Radiology: chest X-ray, CT, MRI, ultrasound (patient right drawn on the image's left)."""

from __future__ import annotations

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw, ImageFilter

from biomedclip.demo.figures.drawing import (
    Attrs,
    font,
    pick,
    posed,
    smooth_field,
    to_image,
)

CXR_FINDINGS = ["normal", "right lower lobe consolidation", "left pleural effusion",
                "cardiomegaly", "right pneumothorax", "bilateral interstitial opacities"]


def chest_xray(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    side = min(w, h)
    w = h = side  # radiographs are square-ish
    finding = pick(rng, CXR_FINDINGS)
    view = pick(rng, ["posteroanterior", "anteroposterior"])
    arr = 30 + 40 * smooth_field(rng, w, h, 4)
    img = to_image(arr)
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.08, h * 0.05, w * 0.92, h * 1.3], fill=(150, 150, 150))  # thorax
    lung_colour = (55, 55, 55)
    lungs = {"right": [w * 0.16, h * 0.14, w * 0.47, h * 0.85],  # patient right = image left
             "left": [w * 0.53, h * 0.14, w * 0.84, h * 0.85]}
    for name, box in lungs.items():
        if finding == "right pneumothorax" and name == "right":
            draw.ellipse(box, fill=(25, 25, 25))
            x0, y0, x1, y1 = box
            draw.ellipse([x0 + (x1 - x0) * 0.3, y0 + (y1 - y0) * 0.2, x1, y1], fill=lung_colour,
                         outline=(200, 200, 200))
        else:
            draw.ellipse(box, fill=lung_colour)
    for k in range(9):  # ribs
        y = h * (0.17 + k * 0.075)
        for x0, x1 in ((w * 0.12, w * 0.5), (w * 0.5, w * 0.88)):
            draw.arc([x0, y - h * 0.05, x1, y + h * 0.07], 200, 340, fill=(120, 120, 120),
                     width=max(2, side // 90))
    heart = 0.22 if finding == "cardiomegaly" else 0.13
    draw.ellipse([w * (0.5 - heart * 0.7), h * 0.42, w * (0.5 + heart * 1.3), h * 0.82],
                 fill=(185, 185, 185))
    draw.rectangle([w * 0.46, h * 0.05, w * 0.54, h * 0.5], fill=(170, 170, 170))  # mediastinum
    if finding == "right lower lobe consolidation":
        draw.ellipse([w * 0.2, h * 0.55, w * 0.42, h * 0.8], fill=(175, 175, 175))
    elif finding == "left pleural effusion":
        draw.chord([w * 0.5, h * 0.55, w * 0.9, h * 1.05], 180, 360, fill=(200, 200, 200))
        draw.rectangle([w * 0.5, h * 0.8, w * 0.9, h * 0.9], fill=(200, 200, 200))
    elif finding == "bilateral interstitial opacities":
        for _ in range(120):
            box = pick(rng, list(lungs.values()))
            x = box[0] + rng.random() * (box[2] - box[0])
            y = box[1] + rng.random() * (box[3] - box[1])
            r = side * 0.012
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(130, 130, 130))
    img = posed(rng, img, (40, 40, 40)).filter(ImageFilter.GaussianBlur(side / 160))
    arr = np.asarray(img, dtype=np.float32) + (rng.random((h, w, 1)) - 0.5) * 16
    img = to_image(arr)
    ImageDraw.Draw(img).text((w * 0.04, h * 0.03), "R", fill=(235, 235, 235),
                              font=font(max(10, side // 14)))
    return img, {"finding": finding, "view": view}


def ct(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    region = pick(rng, ["chest", "abdomen", "head"])
    contrast = pick(rng, ["contrast-enhanced", "non-contrast"])
    finding = pick(rng, ["normal", "mass", "nodule", "hypodense lesion", "hemorrhage"])
    if region == "head" and finding in ("nodule",):
        finding = "hemorrhage"
    side_word = pick(rng, ["right", "left"])
    side = min(w, h)
    img = Image.new("RGB", (w, h), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2, h / 2
    rx, ry = w * 0.42, h * (0.42 if region == "head" else 0.33)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(235, 235, 235))  # bone / skin rim
    inner = (0.93, 0.9)
    body = (95, 95, 95) if region != "chest" else (90, 90, 90)
    draw.ellipse([cx - rx * inner[0], cy - ry * inner[1], cx + rx * inner[0], cy + ry * inner[1]],
                 fill=body)
    if region == "chest":
        for sx in (-1, 1):
            draw.ellipse([cx + sx * rx * 0.15 - rx * 0.35, cy - ry * 0.7,
                          cx + sx * rx * 0.15 + rx * 0.35, cy + ry * 0.7], fill=(15, 15, 15))
        draw.ellipse([cx - rx * 0.12, cy - ry * 0.2, cx + rx * 0.12, cy + ry * 0.2], fill=(150,) * 3)
    elif region == "abdomen":
        draw.ellipse([cx - rx * 0.75, cy - ry * 0.6, cx - rx * 0.05, cy + ry * 0.4], fill=(125,) * 3)
        draw.ellipse([cx - rx * 0.08, cy + ry * 0.25, cx + rx * 0.08, cy + ry * 0.55], fill=(240,) * 3)
        for sx in (-1, 1):
            draw.ellipse([cx + sx * rx * 0.45 - rx * 0.1, cy + ry * 0.05,
                          cx + sx * rx * 0.45 + rx * 0.1, cy + ry * 0.35], fill=(140,) * 3)
    else:
        draw.ellipse([cx - rx * 0.12, cy - ry * 0.25, cx + rx * 0.12, cy + ry * 0.25], fill=(40,) * 3)
    if finding != "normal":
        fx = cx + (-1 if side_word == "right" else 1) * rx * 0.45  # patient right on image left
        fy = cy + (rng.random() - 0.5) * ry * 0.6
        r = side * {"mass": 0.09, "nodule": 0.03, "hypodense lesion": 0.06, "hemorrhage": 0.07}[finding]
        shade = {"mass": 150, "nodule": 160, "hypodense lesion": 45, "hemorrhage": 200}[finding]
        draw.ellipse([fx - r, fy - r, fx + r, fy + r], fill=(shade,) * 3)
    img = posed(rng, img, (0, 0, 0)).filter(ImageFilter.GaussianBlur(side / 250))
    arr = np.asarray(img, dtype=np.float32) + (rng.random((h, w, 1)) - 0.5) * 20
    return to_image(arr), {"region": region, "contrast": contrast, "finding": finding,
                           "side": side_word}


MRI_TISSUE = {  # sequence → grey levels of (CSF, grey matter, white matter, lesion)
    "T1-weighted": (30, 110, 165, 70),
    "T2-weighted": (235, 140, 95, 220),
    "FLAIR": (25, 130, 100, 240),
}


def mri(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    sequence = pick(rng, list(MRI_TISSUE))
    finding = pick(rng, ["normal", "lesion", "tumor with surrounding edema", "infarct"])
    side_word = pick(rng, ["right", "left"])
    csf, grey, white, lesion = MRI_TISSUE[sequence]
    side = min(w, h)
    img = Image.new("RGB", (w, h), (5, 5, 5))
    draw = ImageDraw.Draw(img)
    cx, cy = w / 2, h / 2
    rx, ry = w * 0.36, h * 0.44
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(200,) * 3 if sequence == "T1-weighted"
                 else (90,) * 3)
    draw.ellipse([cx - rx * 0.93, cy - ry * 0.94, cx + rx * 0.93, cy + ry * 0.94], fill=(csf,) * 3)
    draw.ellipse([cx - rx * 0.88, cy - ry * 0.9, cx + rx * 0.88, cy + ry * 0.9], fill=(grey,) * 3)
    draw.ellipse([cx - rx * 0.68, cy - ry * 0.72, cx + rx * 0.68, cy + ry * 0.72], fill=(white,) * 3)
    for sx in (-1, 1):  # lateral ventricles
        draw.ellipse([cx + sx * rx * 0.12 - rx * 0.1, cy - ry * 0.35, cx + sx * rx * 0.12 + rx * 0.1,
                      cy + ry * 0.15], fill=(csf,) * 3)
    draw.line([(cx, cy - ry * 0.9), (cx, cy + ry * 0.9)], fill=(csf,) * 3, width=max(1, side // 120))
    if finding != "normal":
        fx = cx + (-1 if side_word == "right" else 1) * rx * 0.45
        fy = cy + (rng.random() - 0.5) * ry * 0.6
        r = side * (0.06 + 0.05 * rng.random())
        if finding == "tumor with surrounding edema":
            edema = (lesion + white) // 2
            draw.ellipse([fx - 1.7 * r, fy - 1.5 * r, fx + 1.7 * r, fy + 1.5 * r], fill=(edema,) * 3)
        draw.ellipse([fx - r, fy - r, fx + r, fy + r], fill=(lesion,) * 3)
    img = posed(rng, img, (5, 5, 5)).filter(ImageFilter.GaussianBlur(side / 200))
    texture = (smooth_field(rng, w, h, 24) - 0.5) * 30
    arr = np.asarray(img, dtype=np.float32) + texture[..., None] + (rng.random((h, w, 1)) - 0.5) * 12
    return to_image(arr), {"sequence": sequence, "finding": finding, "side": side_word}


def ultrasound(rng: Generator, w: int, h: int) -> tuple[Image.Image, Attrs]:
    organ = pick(rng, ["liver", "thyroid", "kidney", "breast", "carotid artery"])
    finding = pick(rng, ["normal", "hypoechoic nodule", "anechoic cyst", "hyperechoic lesion"])
    doppler = rng.random() < 0.3
    side = min(w, h)
    fan = Image.new("L", (w, h), 0)
    ImageDraw.Draw(fan).pieslice([-w * 0.35, -h * 0.9, w * 1.35, h * 0.98], 55, 125, fill=255)
    mask = np.asarray(fan, dtype=np.float32) / 255.0
    tissue = 60 + 80 * smooth_field(rng, w, h, 6)
    speckle = rng.random((h, w)).astype(np.float32)
    arr = mask * tissue * (0.4 + 1.2 * speckle * speckle)
    img = to_image(arr)
    draw = ImageDraw.Draw(img)
    cx, cy = w * (0.35 + 0.3 * rng.random()), h * (0.45 + 0.3 * rng.random())
    r = side * (0.06 + 0.06 * rng.random())
    if finding != "normal":
        shade = {"hypoechoic nodule": 35, "anechoic cyst": 3, "hyperechoic lesion": 215}[finding]
        draw.ellipse([cx - r * 1.3, cy - r, cx + r * 1.3, cy + r], fill=(shade,) * 3)
    if doppler:
        draw.ellipse([cx - r, cy - r * 0.5, cx, cy + r * 0.5], fill=(220, 30, 30))
        draw.ellipse([cx, cy - r * 0.5, cx + r, cy + r * 0.5], fill=(30, 60, 220))
    for k in range(1, 6):  # depth markers
        y = h * k / 6
        draw.ellipse([w - 9, y - 2, w - 5, y + 2], fill=(220, 220, 220))
    img = img.filter(ImageFilter.GaussianBlur(0.7))
    return img, {"organ": organ, "finding": finding, "doppler": doppler}


# --- charts ----------------------------------------------------------------------------------
