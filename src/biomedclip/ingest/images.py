"""Images as training wants them: verified, RGB, bounded in size, re-encoded, content-addressed.

`normalise_image` decodes whatever PMC serves (JPEG, CMYK JPEG, PNG in any mode including
16-bit and palette with transparency, TIFF, multi-frame GIF), refuses what is unreadable, too
large (checked from the header, before decoding: decompression bombs) or too small, flattens
alpha onto white, resizes the long side down to `max_side`, and re-encodes as JPEG. The same
input bytes always give the same output bytes, so exact duplicates stay exact.

It decodes no more than it needs (`image.reduced_decode`). PMC's figures are commonly 1,000 to
3,000 px on the long side, and the output is 512. So a JPEG at least twice the target is decoded
at a smaller DCT scale (`Image.draft`: 1/2, 1/4 or 1/8, the smallest one that stays at or above
the target). Any other format is decoded whole, then `reduce`d by the integer factor that keeps it
at or above the target, before the LANCZOS resize. The checks see the sizes in the header: a
decompression bomb, or a side below `min_side`, is refused whatever the decode would have made
of it. The output is as deterministic as before. Its pixels differ slightly from a full decode
only for images of at least twice the target; images smaller than that decode exactly as they
always did.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.ingest.params import ImageParams
from biomedclip.ingest.rejects import Reason, Rejected

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".gif", ".bmp", ".webp")
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a reject, not a grey half-image


class ImageRejected(Rejected):
    """An image that cannot become a training image; `reason` is the reject code."""


@dataclass(frozen=True)
class NormalisedImage:
    jpeg: bytes
    width: int
    height: int
    phash: int  # 64-bit DCT perceptual hash, as a signed int64
    pixels: Image.Image | None = field(default=None, compare=False, repr=False)  # what was encoded

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = arr.max() if img.mode == "I" else 65535.0
        scaled = (arr * (255.0 / max(peak, 1.0))).round().clip(0, 255)
        img = Image.fromarray(scaled.astype(np.uint8))
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")  # CMYK (Adobe-inverted handled by Pillow), L, 1, P, YCbCr, LAB


def phash(img: Image.Image) -> int:
    """DCT perceptual hash: 32x32 grey, 2-D DCT-II, the 8x8 low frequencies against their median."""
    grey = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    n = np.arange(32)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)  # (k, n)
    low = (basis @ grey @ basis.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    value = int(sum(1 << i for i, bit in enumerate(bits) if bit))
    return value - (1 << 64) if value >= 1 << 63 else value


class Decoded(NamedTuple):
    rgb: Image.Image  # at its own size, or reduced towards the target long side
    format: str  # as found: "JPEG", "PNG", "TIFF", "GIF", ...
    mode: str  # as found: "RGB", "L", "CMYK", "P", "I;16", "RGBA", ...
    width: int  # as found, whatever the decode's scale
    height: int


def normalise_image(data: bytes, params: ImageParams) -> NormalisedImage:
    """Decode, check, convert and re-encode one image; raises `ImageRejected`."""
    decoded = decode_image(data, params)
    return encode_image(decoded.rgb, params, found=(decoded.width, decoded.height))


def _reduced_size(width: int, height: int, long_side: int) -> tuple[int, int] | None:
    """The smallest size (aspect kept) whose long side is `long_side`, when the image is at
    least twice that (a smaller one is decoded whole), else None."""
    longest = max(width, height)
    if longest < 2 * long_side:
        return None
    return -(-width * long_side // longest), -(-height * long_side // longest)


def decode_image(data: bytes, params: ImageParams, *, long_side: int | None = None) -> Decoded:
    """The image as RGB after the checks, with its format, mode and size as found; raises
    `ImageRejected`. With `params.reduced_decode`, the pixels are decoded, or reduced, to no less
    than `long_side` (default `params.max_side`) on the long side; otherwise at full size."""
    target = long_side or params.max_side
    if not data:
        raise ImageRejected(Reason.IMAGE_UNREADABLE, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF and the like: the pixels still decode
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > params.max_pixels:
                raise ImageRejected(Reason.IMAGE_TOO_LARGE,
                                    f"{width}x{height} = {width * height:,} pixels > "
                                    f"{params.max_pixels:,}")
            img.seek(0)  # multi-frame GIF/TIFF: the first frame
            reduced = _reduced_size(width, height, target) if params.reduced_decode else None
            if reduced and img.format == "JPEG":
                img.draft(None, reduced)  # a DCT scale, chosen by the decoder, ≥ `reduced`
            img.load()
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(Reason.IMAGE_TOO_LARGE, f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageRejected(Reason.IMAGE_UNREADABLE,
                            "not an image format Pillow can read") from None
    except Exception as exc:  # Pillow raises many types for bad data: all mean unreadable
        # Messages must be reproducible (they end up in rejects.parquet): no object addresses.
        detail = re.sub(r" at 0x[0-9a-f]+", "", f"{type(exc).__name__}: {exc}")
        raise ImageRejected(Reason.IMAGE_UNREADABLE, detail) from None
    if min(width, height) < params.min_side:
        raise ImageRejected(Reason.IMAGE_TOO_SMALL, f"{width}x{height} < {params.min_side} px")
    found, rgb = img.mode, _to_rgb(img)
    if reduced and (factor := max(rgb.width, rgb.height) // target) > 1:
        rgb = rgb.reduce(factor)  # box-averaging by an integer factor; the resize does the rest
    return Decoded(rgb, img.format or "", found, width, height)


def encode_image(rgb: Image.Image, params: ImageParams, *,
                 found: tuple[int, int] | None = None) -> NormalisedImage:
    """An RGB image as training wants it: the long side down to `max_side`, JPEG, its pHash.
    The same pixels always give the same bytes (a figure, or a panel cropped from one). `found`,
    the size as found when `rgb` is a reduced decode of it, sets the output size, so that a reduced
    decode and a full one give the same width and height."""
    width, height = found or rgb.size
    scale = params.max_side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=params.jpeg_quality)
    return NormalisedImage(buf.getvalue(), rgb.width, rgb.height, phash(rgb), rgb)


def image_key(sha256: str) -> str:
    """Where an image lives in the content-addressed store: `ab/abcdef....jpg`."""
    return f"{sha256[:2]}/{sha256}.jpg"


class ImageStore:
    """A folder of JPEGs named by the SHA-256 of their bytes; writes are atomic and idempotent.

    With a `writer` (a thread pool), `put` hands the write to it and returns at once: each write
    waits for the disk (fsync: milliseconds), and a thread that decodes images should not. `flush`
    waits for every write handed over so far (raising the first error): call it before recording
    what references the images. Without one, `put` writes before it returns."""

    def __init__(self, root: Path, writer: Executor | None = None) -> None:
        self.root = root
        self.writer = writer
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def put(self, image: NormalisedImage) -> str:
        key = image_key(image.sha256)
        path = self.root / key
        if not path.exists():
            if self.writer is None:
                atomic_write_bytes(path, image.jpeg)
            else:
                written = self.writer.submit(atomic_write_bytes, path, image.jpeg)
                with self._lock:
                    self._pending.append(written)
        return key

    def flush(self) -> None:
        """Wait until every image put so far is on disk; raises the first write's error."""
        with self._lock:
            pending, self._pending = self._pending, []
        wait(pending)
        for written in pending:
            written.result()
