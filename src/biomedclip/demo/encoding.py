"""Image files as PMC serves them: JPEG, PNG, TIFF, GIF, and the broken ones.

PNGs are written by a small encoder here (libdeflate through the locked `deflate` wheel), not
by Pillow, whose PNG bytes depend on whatever zlib the operating system ships: the demo corpus
must be byte-identical on any machine with the locked dependencies, so that `dvc status`
agrees with the committed `data.dvc` after a fresh clone regenerates it.
"""

from __future__ import annotations

import io
import struct
import zlib

import deflate
import numpy as np
from numpy.random import Generator
from PIL import Image

# encoding name → file extension
EXTENSIONS = {
    "jpeg": ".jpg", "png": ".png", "cmyk_jpeg": ".jpg", "greyscale": ".jpg", "palette_png": ".png",
    "png16": ".png", "rgba_png": ".png", "tiff": ".tif", "gif": ".gif",
}


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(
        ">I", zlib.crc32(tag + payload) & 0xFFFFFFFF
    )


def png_bytes(pixels: np.ndarray, *, palette: bytes | None = None) -> bytes:
    """Encode (h, w) or (h, w, c) uint8/uint16 pixels as PNG.

    colour type: 0 grey (8 or 16 bit), 2 RGB, 6 RGBA, 3 palette (`palette` = RGB triplets).
    Rows use the Sub filter (type 1) except palette images (type 0: indices are not ordinal).
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    h, w, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    colour_type = 3 if palette is not None else {1: 0, 3: 2, 4: 6}[channels]
    raw = pixels.astype(">u2") if depth == 16 else pixels.astype(np.uint8)
    rows = raw.reshape(h, w * channels).view(np.uint8).reshape(h, -1)
    if palette is None:
        bpp = channels * depth // 8
        filtered = rows.copy()
        filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # uint8 wrap-around, as PNG specifies
        data = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1)
    else:
        data = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)
    header = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    out = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header)]
    if palette is not None:
        out.append(_chunk(b"PLTE", palette))
    out.append(_chunk(b"IDAT", deflate.zlib_compress(data.tobytes(), 9)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG whose declared size is huge but whose file is tiny (a decompression bomb)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        _chunk(b"IHDR", header),
        _chunk(b"IDAT", deflate.zlib_compress(row * height, 9)),
        _chunk(b"IEND", b""),
    ])


def huge_jpeg(img: Image.Image, width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims `width` x `height`: huge to any reader that
    trusts the header, as decompression bombs do."""
    data = bytearray(_pillow(img.convert("RGB"), "JPEG", quality=80))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _pillow(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def encode(img: Image.Image, encoding: str, rng: Generator) -> bytes:
    """Encode an RGB image in one of `EXTENSIONS`' encodings."""
    quality = int(80 + rng.integers(16))
    if encoding == "jpeg":
        return _pillow(img, "JPEG", quality=quality)
    if encoding == "cmyk_jpeg":  # Pillow writes the Adobe APP14 marker, as print workflows do
        return _pillow(img.convert("CMYK"), "JPEG", quality=quality)
    if encoding == "greyscale":
        return _pillow(img.convert("L"), "JPEG", quality=quality)
    if encoding == "png":
        return png_bytes(np.asarray(img))
    if encoding == "palette_png":
        indexed = img.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette = bytes(indexed.getpalette()[: 3 * 64])
        return png_bytes(np.asarray(indexed), palette=palette.ljust(3 * 64, b"\x00"))
    if encoding == "png16":
        grey = np.asarray(img.convert("L"), dtype=np.int32) * 257
        fine = grey + rng.integers(-128, 128, grey.shape)  # use the 16-bit range, as scanners do
        return png_bytes(np.clip(fine, 0, 65535).astype(np.uint16))
    if encoding == "rgba_png":
        rgb = np.asarray(img)
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        border = max(2, min(rgb.shape[:2]) // 12)
        alpha[:border, :] = alpha[-border:, :] = alpha[:, :border] = alpha[:, -border:] = 0
        return png_bytes(np.dstack([rgb, alpha]))
    if encoding == "tiff":
        return _pillow(img, "TIFF", compression="tiff_lzw")
    if encoding == "gif":
        frame = img.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        if rng.random() < 0.5:  # multi-frame: a second, darker frame, as animated figures have
            dark = Image.eval(img, lambda v: v * 3 // 4).quantize(
                colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            return _pillow(frame, "GIF", save_all=True, append_images=[dark], duration=500, loop=0)
        return _pillow(frame, "GIF")
    raise ValueError(f"unknown image encoding {encoding!r}")


def corrupt(data: bytes, rng: Generator) -> tuple[bytes, str]:
    """Damage an encoded image the ways real archives are damaged; returns (bytes, how)."""
    roll = rng.random()
    if roll < 0.6:
        keep = int(len(data) * (0.3 + 0.4 * rng.random()))
        return data[:keep], "truncated"
    if roll < 0.8:
        return b"", "zero-byte"
    return data[:16] + rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(), "garbage"
