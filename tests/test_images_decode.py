"""The image path decodes no more than it needs (`image.reduced_decode`): a JPEG at least twice
the target long side is decoded at a DCT scale, any other format reduced by an integer factor;
the checks and the recorded size still see the image as found, the output size is the one a full
decode gives, and the bytes are deterministic. Images under twice the target decode as they always
did. Images made here with Pillow (photo-like noise, so the JPEG has real DCT content)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from biomedclip.ingest.images import ImageRejected, decode_image, encode_image, normalise_image
from biomedclip.ingest.panels import decode_side
from biomedclip.ingest.params import ImageParams, IngestParams, PanelParams

pytestmark = pytest.mark.unit

FULL = ImageParams(reduced_decode=False)
REDUCED = ImageParams(reduced_decode=True)


def picture(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB", seed: int = 0) -> bytes:
    """A smooth gradient with noise on top, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    pixels = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def psnr(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return 10 * np.log10(255.0**2 / max(float(np.mean(diff**2)), 1e-12))


@pytest.mark.parametrize(("size", "decoded_long"), [
    ((2400, 1800), 600), ((4100, 1000), 513), ((1100, 700), 550), ((1000, 700), 1000)])
def test_a_large_jpeg_decodes_at_a_dct_scale_no_smaller_than_the_target(size, decoded_long):
    decoded = decode_image(picture(*size), REDUCED)
    assert (decoded.width, decoded.height) == size  # as found, for the report and the checks
    assert max(decoded.rgb.size) == decoded_long  # 1/4, 1/8, 1/2; whole under 2x
    assert decoded.format == "JPEG" and decoded.mode == "RGB"


@pytest.mark.parametrize("size", [(2400, 1800), (1801, 2399), (3000, 997)])
def test_reduced_and_full_decodes_give_the_same_output_size_and_nearly_the_same_pixels(size):
    data = picture(*size)
    full, reduced = normalise_image(data, FULL), normalise_image(data, REDUCED)
    assert (reduced.width, reduced.height) == (full.width, full.height)
    assert max(reduced.width, reduced.height) == 512
    assert psnr(reduced.pixels, full.pixels) > 30
    assert normalise_image(data, REDUCED).jpeg == reduced.jpeg  # deterministic


def test_an_image_under_twice_the_target_decodes_exactly_as_before():
    for data in (picture(1000, 700), picture(1023, 400, "PNG")):
        assert normalise_image(data, REDUCED).jpeg == normalise_image(data, FULL).jpeg


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("PNG", "L"), ("TIFF", "RGB"), ("PNG", "RGBA")])
def test_other_formats_are_reduced_by_an_integer_factor_before_the_resize(fmt, mode):
    data = picture(2100, 1500, fmt, mode)
    decoded = decode_image(data, REDUCED)
    assert (decoded.width, decoded.height) == (2100, 1500) and decoded.mode == mode
    assert decoded.rgb.size == (525, 375)  # reduce(4): 2100 // 512
    full, reduced = normalise_image(data, FULL), normalise_image(data, REDUCED)
    assert (reduced.width, reduced.height) == (full.width, full.height) == (512, 366)
    assert psnr(reduced.pixels, full.pixels) > 30


def test_the_checks_see_the_size_as_found_not_the_decoded_one():
    thin = picture(2400, 40)  # 40 px ≥ min_side 32 as found, 10 px after a 1/4 DCT decode
    decoded = decode_image(thin, REDUCED)
    assert (decoded.width, decoded.height) == (2400, 40) and decoded.rgb.size == (600, 10)
    with pytest.raises(ImageRejected) as too_small:
        decode_image(picture(2400, 30), REDUCED)
    assert too_small.value.reason.value == "image_too_small" and "2400x30" in str(too_small.value)
    with pytest.raises(ImageRejected) as bomb:
        decode_image(picture(3000, 2000), ImageParams(max_pixels=5_000_000))
    assert bomb.value.reason.value == "image_too_large" and "3000x2000" in str(bomb.value)


def test_with_panels_on_figures_decode_at_twice_the_target_so_crops_keep_their_detail():
    params = IngestParams(panels=PanelParams(enabled=True))
    assert decode_side(params) == 2 * params.image.max_side
    assert decode_side(IngestParams()) == params.image.max_side
    decoded = decode_image(picture(4000, 3000), params.image, long_side=decode_side(params))
    assert decoded.rgb.size == (2000, 1500)  # 1/2: 1/4 would be 1000 < 1024
    half = encode_image(decoded.rgb.crop((0, 0, 1000, 1500)), params.image)  # a panel of half the figure
    assert (half.width, half.height) == (341, 512)  # at full max_side, not the 256 of a 1,024 px decode


def test_a_store_with_a_writer_returns_at_once_and_flush_waits_for_the_disk(tmp_path):
    """The ingest's extracting threads hand their writes to the store's writer; a batch is recorded
    only after `flush`, and a write that failed fails the flush, naming the file."""
    from concurrent.futures import ThreadPoolExecutor

    from biomedclip.ingest.images import ImageStore

    gate = threading.Event()
    images = [normalise_image(picture(300, 200, seed=seed), REDUCED) for seed in range(3)]
    with ThreadPoolExecutor(max_workers=1) as writer:
        writer.submit(gate.wait)  # the disk is busy: nothing is written until the gate opens
        store = ImageStore(tmp_path / "images", writer)
        keys = [store.put(image) for image in images]
        assert not any((tmp_path / "images" / key).exists() for key in keys)
        gate.set()
        store.flush()
        assert [(tmp_path / "images" / key).read_bytes() for key in keys] == [i.jpeg for i in images]
        (tmp_path / "blocked").write_bytes(b"a file where the store's folder should be")
        broken = ImageStore(tmp_path / "blocked", writer)
        broken.put(images[0])
        with pytest.raises(OSError, match="blocked"):
            broken.flush()
