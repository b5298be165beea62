"""Renderers, encoders and the zero-shot benchmark."""

from __future__ import annotations

import csv
import hashlib
import io
import warnings
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from biomedclip.demo.benchmark import benchmark_jobs, generate_benchmark
from biomedclip.demo.compound import corpus_figure, lettered_single
from biomedclip.demo.encoding import EXTENSIONS, bomb_png, corrupt, encode, png_bytes
from biomedclip.demo.figures import CLASS_NAMES, RENDERERS, render
from biomedclip.demo.params import BenchmarkParams
from biomedclip.demo.plan import PanelPlan, Planner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", sorted(RENDERERS))
def test_each_renderer_is_deterministic_rgb_and_sized_as_asked(kind):
    img, attrs = render(kind, 7, 240, 180)
    again, attrs_again = render(kind, 7, 240, 180)
    assert img.mode == "RGB"
    assert img.size == ((180, 180) if kind == "chest_xray" else (240, 180))
    assert img.tobytes() == again.tobytes() and attrs == attrs_again
    other, _ = render(kind, 8, 240, 180)
    assert other.tobytes() != img.tobytes()
    assert np.asarray(img).std() > 5, "a blank image teaches nothing"


def test_figure_types_are_told_apart_by_colour_statistics():
    """A crude classifier on mean colour separates most types: they are visually distinct."""
    def features(kind: str, seed: int) -> np.ndarray:
        arr = np.asarray(render(kind, seed, 160, 160)[0], dtype=np.float32) / 255
        return np.concatenate([arr.mean((0, 1)), arr.std((0, 1))])

    kinds = sorted(RENDERERS)
    centroids = np.stack([np.mean([features(k, s) for s in range(8)], axis=0) for k in kinds])
    correct = 0
    for i, kind in enumerate(kinds):
        for seed in range(100, 106):
            correct += int(np.argmin(((centroids - features(kind, seed)) ** 2).sum(1)) == i)
    assert correct / (6 * len(kinds)) > 0.6


def test_corpus_composites_keep_the_planned_panels_in_reading_order_in_varied_layouts():
    layouts, sheets = set(), set()
    for seed in range(60):
        n = (2, 3, 4, 6)[seed % 4]
        kinds = ["fluorescence", "ct", "bar_chart", "he_histology"]
        panels = [PanelPlan(kinds[(seed + i) % 4 if seed % 3 else 0], 100 * seed + i, 150, 120) for i in range(n)]
        figure, attrs = corpus_figure(np.random.default_rng(seed), panels, 2 if n in (2, 4) else 3)
        again, _ = corpus_figure(np.random.default_rng(seed), panels, 2 if n in (2, 4) else 3)
        assert figure.image.tobytes() == again.image.tobytes() and figure.panels == again.panels
        assert figure.kinds == tuple(p.kind for p in panels) and len(attrs) == len(figure.panels) == n
        boxes = [p.box for p in figure.panels]
        assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in boxes)
        for (_, ay0, ax1, ay1), (bx0, by0, _, _) in pairwise(boxes):  # reading order: next row, or right
            assert by0 >= ay1 - 1e-9 or (by0 >= ay0 - 1e-9 and bx0 >= ax1 - 1e-9)
        w, h = figure.image.size
        sides = [min((x1 - x0) * w, (y1 - y0) * h) for x0, y0, x1, y1 in boxes]
        areas = [(x1 - x0) * w * (y1 - y0) * h / (150 * 120) for x0, y0, x1, y1 in boxes]
        assert min(sides) >= 40 and 0.4 < sum(areas) / n < 2.5  # panels about the size planned
        letters = {p.letter for p in figure.panels}
        assert letters in ({chr(ord("A") + i) for i in range(n)}, {chr(ord("a") + i) for i in range(n)})
        layouts.add(figure.layout.split("-")[0])
        sheets.add(figure.image.getpixel((0, 0)))
    assert layouts == {"grid", "abutting", "spanning", "unequal", "inset"}
    assert (0, 0, 0) in sheets and (255, 255, 255) in sheets


def test_a_lettered_single_image_is_one_panel_with_a_letter_on_it():
    image, _ = render("he_histology", 3, 200, 160)
    figure = lettered_single(np.random.default_rng(0), image, "he_histology")
    assert figure.image.size == image.size and len(figure.panels) == 1
    assert figure.panels[0].box == (0.0, 0.0, 1.0, 1.0) and figure.panels[0].letter in ("A", "a")
    changed = np.any(np.asarray(figure.image) != np.asarray(image), axis=2)
    ys, xs = np.nonzero(changed)
    assert 0 < changed.mean() < 0.05  # a letter, in a corner
    assert xs.max() - xs.min() < 60 and ys.max() - ys.min() < 60


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40),
    layout=st.sampled_from(["L", "RGB", "RGBA", "I;16"]), seed=st.integers(0, 2**32 - 1),
)
def test_png_encoder_round_trips_exactly(h, w, layout, seed):
    rng = np.random.default_rng(seed)
    shape = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4), "I;16": (h, w)}[layout]
    dtype = np.uint16 if layout == "I;16" else np.uint8
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    decoded = Image.open(io.BytesIO(png_bytes(pixels)))
    assert decoded.mode == layout
    assert np.array_equal(np.asarray(decoded), pixels)


def test_palette_png_round_trips():
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 16, (20, 30), dtype=np.uint8)
    palette = bytes(rng.integers(0, 256, 48, dtype=np.uint8))
    decoded = Image.open(io.BytesIO(png_bytes(indices, palette=palette)))
    assert decoded.mode == "P" and np.array_equal(np.asarray(decoded), indices)
    assert bytes(decoded.getpalette()[:48]) == palette


@pytest.mark.parametrize("encoding", sorted(EXTENSIONS))
def test_every_encoding_decodes_to_the_promised_format(encoding):
    img, _ = render("he_histology", 1, 120, 90)
    data = encode(img, encoding, np.random.default_rng(0))
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    expected_format = {".jpg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".gif": "GIF"}
    assert decoded.format == expected_format[EXTENSIONS[encoding]]
    assert decoded.size == (120, 90)
    expected_mode = {"cmyk_jpeg": "CMYK", "greyscale": "L", "palette_png": "P", "png16": "I;16",
                     "rgba_png": "RGBA", "gif": "P"}.get(encoding, "RGB")
    assert decoded.mode == expected_mode


def test_bomb_png_declares_a_huge_size_in_a_tiny_file():
    data = bomb_png(20_000, 15_000)
    assert len(data) < 100_000
    with warnings.catch_warnings(), pytest.raises(Image.DecompressionBombError):
        warnings.simplefilter("ignore")
        Image.open(io.BytesIO(data))


def test_corrupted_images_do_not_decode():
    img, _ = render("ct", 3, 200, 200)
    data = encode(img, "jpeg", np.random.default_rng(0))
    for seed in range(12):
        damaged, how = corrupt(data, np.random.default_rng(seed))
        assert how in {"truncated", "zero-byte", "garbage"}
        with pytest.raises(Exception):  # noqa: B017 - any decoder error is the point
            Image.open(io.BytesIO(damaged)).load()


def thumbnail(img: Image.Image) -> np.ndarray:
    """32x32 grey pixels: near copies differ by little more than JPEG noise."""
    return np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32).ravel()


def test_benchmark_has_one_class_per_figure_type_none_in_the_corpus(tmp_path, noisy_corpus):
    params = BenchmarkParams(out=tmp_path, per_class=3)
    report = generate_benchmark(params)
    root = tmp_path / params.name
    with open(root / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label"]
    assert report.images == len(rows) == 3 * len(CLASS_NAMES)
    assert sorted({r["label"] for r in rows}) == sorted(CLASS_NAMES.values())
    hashes = set()
    for row in rows:
        data = (root / row["path"]).read_bytes()
        Image.open(io.BytesIO(data)).load()
        hashes.add(hashlib.sha256(data).hexdigest())
    corpus_params, _ = noisy_corpus
    planner = Planner(corpus_params)
    corpus_seeds = {panel.seed for i in range(corpus_params.articles)
                    for fig in planner.article(i).figures for g in fig.graphics for panel in g.panels}
    assert not corpus_seeds & {seed for _, _, seed, _, _ in benchmark_jobs(params)}
    corpus = []
    for path in corpus_params.out.glob("PMC*/*.jpg"):
        try:
            corpus.append(thumbnail(Image.open(path)))
        except Exception:
            continue  # the corpus's deliberately broken files
    corpus_array = np.stack(corpus)
    for row in rows:  # textured images (micrographs, scans) are never near copies of the corpus
        bench = thumbnail(Image.open(root / row["path"]))
        if bench.std() > 40:
            assert np.abs(corpus_array - bench).mean(axis=1).min() > 3, row["path"]
    again = tmp_path / "again"
    generate_benchmark(params.model_copy(update={"out": again}))
    for row in rows:
        assert (again / params.name / row["path"]).read_bytes() == (root / row["path"]).read_bytes()


def test_the_pmc_size_profile_draws_figures_at_pmc_sizes_and_leaves_the_default_alone():
    """`demo.image_side: pmc`: figures' long sides log-normal around 1,200 px within 300-4,000
    (as planned, composites as their panels tiled), while the default keeps its uniform 160-560."""
    from biomedclip.demo.params import DemoParams

    def long_sides(params: DemoParams) -> np.ndarray:
        planner = Planner(params)
        return np.array([max(sum(p.width for p in g.panels[:g.columns]), g.panels[0].height)
                         for i in range(150) for fig in planner.article(i).figures for g in fig.graphics])

    pmc = long_sides(DemoParams(image_side="pmc"))
    assert 900 < np.median(pmc) < 1500 and pmc.min() >= 300 * 3 // 4 and pmc.max() <= 4000
    assert (pmc > 336).mean() > 0.75  # the paper: over 75% of PMC-15M's images above 336 px
    assert np.percentile(pmc, 90) > 2000
    default = DemoParams()
    assert default.image_side.median is None
    assert long_sides(default).max() <= 2 * 560
