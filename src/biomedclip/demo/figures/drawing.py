"""Drawing helpers shared by the figure renderers: seeded fields, blobs, colours, text."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.random import Generator
from PIL import Image, ImageDraw, ImageFont

Attrs = dict[str, Any]

NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (31, 119, 180),
    "orange": (255, 127, 14),
    "green": (44, 160, 44),
    "red": (214, 39, 40),
    "purple": (148, 103, 189),
    "grey": (127, 127, 127),
    "black": (20, 20, 20),
    "teal": (23, 190, 207),
}


@functools.lru_cache(maxsize=32)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def pick(rng: Generator, options: list[Any] | tuple[Any, ...]) -> Any:
    return options[int(rng.integers(len(options)))]


def smooth_field(rng: Generator, w: int, h: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] of shape (h, w): coarse uniform noise, bicubic-upsampled."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    up = Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(up, dtype=np.float32), 0.0, 1.0)


def to_image(arr: np.ndarray) -> Image.Image:
    """float array (h, w) or (h, w, 3) in 0..255 → RGB image."""
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img.convert("RGB")


def posed(rng: Generator, img: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """The same anatomy as patients lie differently: a random rotation (within 8 degrees), scale
    (0.8-1.1) and shift (within 10%), the uncovered border filled with `fill`. Without it, every
    radiograph of a kind shares one layout, and their perceptual hashes collide."""
    w, h = img.size
    angle = np.deg2rad(rng.uniform(-8, 8))
    scale = rng.uniform(0.8, 1.1)
    dx, dy = rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    cx, cy = w / 2, h / 2  # output pixel (x, y) samples input (a x + b y + c, d x + e y + f)
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * (cx + dx) - b * (cy + dy)
    f = cy - d * (cx + dx) - e * (cy + dy)
    return img.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                         resample=Image.Resampling.BICUBIC, fillcolor=fill)


def tint(field: np.ndarray, low: tuple[int, ...], high: tuple[int, ...]) -> np.ndarray:
    """Map a (h, w) field in [0, 1] onto a colour ramp → (h, w, 3)."""
    lo = np.array(low, dtype=np.float32)
    hi = np.array(high, dtype=np.float32)
    return lo + field[..., None] * (hi - lo)


def scale_bar(draw: ImageDraw.ImageDraw, w: int, h: int, colour: tuple[int, int, int]) -> None:
    length = max(12, w // 6)
    y = h - max(8, h // 14)
    x1 = w - max(8, w // 16)
    draw.rectangle([x1 - length, y, x1, y + max(2, h // 90)], fill=colour)


def scatter_blobs(
    draw: ImageDraw.ImageDraw,
    rng: Generator,
    w: int,
    h: int,
    count: int,
    radius: float,
    colour: Callable[[Generator], tuple[int, int, int]],
    *,
    outline: tuple[int, int, int] | None = None,
    width: int = 1,
) -> list[tuple[float, float, float]]:
    """Draw `count` jittered ellipses; returns their (x, y, r)."""
    blobs = []
    for _ in range(count):
        x, y = rng.random() * w, rng.random() * h
        r = radius * (0.7 + 0.6 * rng.random())
        ry = r * (0.6 + 0.5 * rng.random())
        draw.ellipse([x - r, y - ry, x + r, y + ry], fill=colour(rng), outline=outline, width=width)
        blobs.append((x, y, r))
    return blobs


# --- microscopy -------------------------------------------------------------------------------
