"""The demo corpus's panel truth (`demo-truth/panels.jsonl`): where each panel of every composite
(and lettered single) graphic is, and what its caption says of it, agreeing with the pixels, the
caption and the panel splitter's reading of the caption."""

from __future__ import annotations

import io
import json
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedclip.demo.corpus import PANEL_TRUTH, generate_corpus
from biomedclip.demo.params import NoiseRates
from biomedclip.ingest.sources import list_articles
from biomedclip.panels.captions import split_caption
from biomedclip.storage import LocalStore

from .conftest import small_params

pytestmark = pytest.mark.unit

# Half the figures composite, the other kinds of mess at their usual rates.
NOISE = NoiseRates().model_copy(update={"composite": 0.5})
ROW_KEYS = {"pmcid", "version", "fig_id", "href", "media_file", "condition", "caption", "layout", "shared",
            "panels"}
# Of the corpus's composite captions, the share whose panel letters `split_caption` reads exactly as
# the truth has them: 1.0 measured (309 / 309 composites of a 200-article corpus at composite 0.5,
# 385 / 385 of the default 600-article corpus); a margin for the splitter's known limits.
SPLIT_CAPTION_AGREEMENT = 0.95


def params(out: Path):
    return small_params(out, articles=30).model_copy(update={"noise": NOISE})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = params(tmp_path_factory.mktemp("panel-truth") / "raw")
    report = generate_corpus(p, workers=1)
    rows = [json.loads(line) for line in (p.out / PANEL_TRUTH).read_text(encoding="utf-8").splitlines()]
    return p, report, rows


def image_of(root: Path, row: dict) -> Image.Image | None:
    """The graphic as published, in RGB, or None when it does not decode as a plain image."""
    if row["condition"] != "ok" or row["media_file"] is None:
        return None
    with Image.open(io.BytesIO((root / f"{row['pmcid']}.{row['version']}" / row["media_file"]).read_bytes())) as img:
        return img.convert("RGB") if img.mode in ("RGB", "L", "P", "CMYK") else None


def overlap(a: list[float], b: list[float]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def test_the_sidecar_lists_every_composite_graphic_with_sound_boxes_in_reading_order(corpus):
    _, report, rows = corpus
    composites = {(a["pmcid"], g["href"]): g for a in report.truth for g in a["graphics"] if g["panels"] > 1}
    listed = {(r["pmcid"], r["href"]): r for r in rows}
    assert len(composites) > 25 and set(composites) <= set(listed)
    for row in rows:
        assert set(row) == ROW_KEYS
        truth = next(g for a in report.truth if a["pmcid"] == row["pmcid"] for g in a["graphics"]
                     if g["href"] == row["href"])
        assert (row["fig_id"], row["media_file"], row["condition"], row["caption"]) == (
            truth["fig_id"], truth["media_file"], truth["condition"], truth["caption"])
        panels = row["panels"]
        assert len(panels) == truth["panels"]
        assert [q["letter"] for q in panels] == [chr(ord("A") + i) for i in range(len(panels))]
        boxes = [q["box"] for q in panels]
        assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in boxes)
        assert all(overlap(a, b) < 1e-9 for i, a in enumerate(boxes) for b in boxes[i + 1:])
        for a, b in pairwise(boxes):  # reading order: the next row, or to the right in this one
            assert b[1] >= a[3] - 1e-6 or (b[1] >= a[1] - 1e-6 and b[0] >= a[2] - 1e-6), (row["layout"], a, b)
    families = {r["layout"].split("-")[0] for r in rows}
    assert {"grid", "spanning", "unequal", "inset", "single"} <= families


def test_the_captions_markers_name_the_truths_letters_in_order(corpus):
    _, _, rows = corpus
    captioned = [r for r in rows if r["caption"] and len(r["panels"]) > 1]
    agree = 0
    for row in captioned:
        split = split_caption(row["caption"])
        agree += [k for k in split.panels if len(k) == 1] == [q["letter"] for q in row["panels"]]
        caption = " ".join(row["caption"].split())
        assert row["shared"].split(". ")[0] in caption
        for q in row["panels"]:
            assert q["subcaption"] and q["subcaption"] in caption
    assert agree / len(captioned) >= SPLIT_CAPTION_AGREEMENT, f"{agree} / {len(captioned)}"
    for row in rows:
        if len(row["panels"]) == 1:  # a lettered single image: the whole caption is shared
            assert row["panels"][0]["subcaption"] == "" and row["shared"] == (row["caption"] or "")


RANGE = re.compile(r"\(([A-L])(?:–|-| and |, ?)([A-L])\)|\b([a-l])(?:–|, )([a-l]) ")


def test_range_markers_give_every_letter_of_the_range_the_same_subcaption(corpus):
    _, _, rows = corpus
    ranges = 0
    for row in rows:
        if not row["caption"] or len(row["panels"]) < 2:
            continue
        by_letter = {q["letter"]: q["subcaption"] for q in row["panels"]}
        for match in RANGE.finditer(row["caption"]):
            first, last = (g.upper() for g in match.groups() if g)
            if first not in by_letter or last not in by_letter:
                continue
            letters = [chr(c) for c in range(ord(first), ord(last) + 1)]
            texts = {by_letter[letter] for letter in letters}
            assert len(texts) == 1, (row["caption"], letters)
            assert row["caption"][match.end():].lstrip().startswith(texts.pop()[:30])
            ranges += 1
    assert ranges >= 3


def test_truth_boxes_match_the_pixels_gutters_are_background(corpus):
    p, _, rows = corpus
    checked = 0
    for row in rows:
        gutter = re.fullmatch(r"grid-\dx\d-gutter(\d+)", row["layout"])
        image = image_of(p.out, row) if gutter and int(gutter.group(1)) >= 4 else None
        if image is None:
            continue
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
        h, w = pixels.shape
        boxes = [[round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)] for x0, y0, x1, y1 in
                 (q["box"] for q in row["panels"])]
        for (ax0, ay0, ax1, ay1), (bx0, by0, _, _) in pairwise(boxes):
            if by0 != ay0:
                continue  # the next row
            strip = pixels[ay0 + 2:ay1 - 2, ax1 + 1:bx0 - 1]  # between two panels, JPEG ringing aside
            assert strip.size and (strip.mean() > 235 or strip.mean() < 20) and strip.std() < 12, row["layout"]
            inside = pixels[ay0:ay1, ax0:ax1]
            assert abs(inside.mean() - strip.mean()) > 3 or inside.std() > 12  # a panel is not background
            checked += 1
    assert checked >= 5


def test_a_lettered_single_image_is_recorded_as_one_whole_panel(corpus):
    _, _, rows = corpus
    singles = [r for r in rows if len(r["panels"]) == 1]
    assert singles
    for row in singles:
        assert row["layout"] == "single-lettered"
        assert row["panels"][0]["box"] == [0.0, 0.0, 1.0, 1.0] and row["panels"][0]["letter"] == "A"
        assert split_caption(row["caption"] or "").style == "none"  # nothing in the caption to split on


def test_the_sidecar_is_byte_identical_for_the_same_params_sorted_and_outside_every_listing(corpus, tmp_path):
    p, _, rows = corpus
    again = params(tmp_path / "raw")
    generate_corpus(again, workers=1)
    assert (again.out / PANEL_TRUTH).read_bytes() == (p.out / PANEL_TRUTH).read_bytes()
    order = [(int(r["pmcid"][3:])) for r in rows]
    assert order == sorted(order)
    listed = {ref.key for versions in list_articles(LocalStore(p.out), "opendata", "prefix") for ref in versions}
    assert listed and all(key.startswith("PMC") for key in listed)
    inventoried = {ref.key for versions in list_articles(LocalStore(p.out), "opendata", "inventory")
                   for ref in versions}
    assert inventoried == listed
