"""Compound figures into panels: the boxes `find_panels` finds on figures built with known truth,
on generated ones (`compound_figure`), and on figures tiled from real chest X-rays."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from biomedclip.demo.compound import compound_figure, tiled_figure
from biomedclip.demo.figures import render
from biomedclip.demo.figures.drawing import font
from biomedclip.panels.layout import find_panels

from .conftest import SHARED_FIXTURES

pytestmark = pytest.mark.unit
XRAYS = SHARED_FIXTURES / "images" / "nih_cxr14"
Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def figure(rows: list[list[Image.Image]], gutter: int, *, background=(255, 255, 255), margin: int = 10,
           letters: str | None = None) -> tuple[Image.Image, list[Box]]:
    """Rows of panels (each row as tall as its first panel) on a sheet; the truth boxes in reading
    order. `letters` ("box" or "direct") draws A, B, ... at each panel's top left."""
    width = max(sum(p.width for p in row) + gutter * (len(row) - 1) for row in rows) + 2 * margin
    height = sum(row[0].height for row in rows) + gutter * (len(rows) - 1) + 2 * margin
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    boxes: list[Box] = []
    y = margin
    for row in rows:
        x = margin
        for panel in row:
            sheet.paste(panel, (x, y))
            if letters:
                letter = chr(ord("A") + len(boxes))
                if letters == "box":
                    draw.rectangle([x, y, x + 22, y + 24], fill=(255, 255, 255))
                    draw.text((x + 4, y + 2), letter, fill=(0, 0, 0), font=font(20), stroke_width=1,
                              stroke_fill=(0, 0, 0))
                else:
                    draw.text((x + 6, y + 4), letter, fill=(255, 255, 255), font=font(20), stroke_width=1,
                              stroke_fill=(255, 255, 255))
            boxes.append((x / width, y / height, (x + panel.width) / width, (y + panel.height) / height))
            x += panel.width + gutter
        y += row[0].height + gutter
    return sheet, boxes


def panel(kind: str, seed: int, width: int = 220, height: int = 170) -> Image.Image:
    image, _ = render(kind, seed, width, height)
    return image.resize((width, height)) if image.size != (width, height) else image


def assert_found(image: Image.Image, truth: list[Box], min_iou: float = 0.8) -> None:
    layout = find_panels(image)
    found = [p.box for p in layout.panels]
    assert len(found) == len(truth), (layout.reason, found)
    for i, (t, f) in enumerate(zip(truth, found, strict=True)):
        assert iou(t, f) >= min_iou, (i, t, f, layout.reason)


def test_a_grid_with_white_gutters_gives_four_boxes_in_reading_order():
    image, truth = figure([[panel("he_histology", 1), panel("bar_chart", 2)],
                           [panel("fluorescence", 3), panel("line_chart", 4)]], gutter=12)
    layout = find_panels(image)
    assert layout.method == "gutters" and layout.reason.startswith("gutters") and layout.confidence >= 0.8
    assert_found(image, truth)


def test_abutting_panels_with_different_content_are_found_by_their_seams():
    image, truth = figure([[panel("he_histology", 5), panel("fluorescence", 6)],
                           [panel("chest_xray", 7), panel("ihc", 8)]], gutter=0, margin=0)
    layout = find_panels(image)
    assert layout.method == "grid"
    assert_found(image, truth)


def test_abutting_lettered_panels_of_one_kind_are_found():
    image, truth = figure([[panel("electron_microscopy", s) for s in (10, 11, 12)]], gutter=0, margin=0,
                          letters="box")
    assert_found(image, truth)
    assert [p.letter_corner for p in find_panels(image).panels] == ["tl"] * 3


def test_a_wide_panel_spanning_two_columns_gives_three_panels():
    image, truth = figure([[panel("ihc", 13, 452, 160)],
                           [panel("bar_chart", 14), panel("electron_microscopy", 15)]], gutter=12)
    assert_found(image, truth)


def test_an_inset_is_part_of_its_panel_not_a_panel():
    main = panel("he_histology", 16, 400, 300)
    zoom = main.crop((40, 40, 110, 95)).resize((140, 110))
    ImageDraw.Draw(main).rectangle([252, 182, 395, 295], fill=(255, 255, 255))
    main.paste(zoom, (254, 184))
    alone = find_panels(main)
    assert len(alone.panels) == 1 and alone.panels[0].box == (0.0, 0.0, 1.0, 1.0)
    image, truth = figure([[main, panel("fluorescence", 17, 400, 300)]], gutter=10)
    assert_found(image, truth)


def test_a_single_image_with_a_letter_is_kept_whole():
    image, _ = figure([[panel("electron_microscopy", 18, 500, 380)]], gutter=0, margin=0, letters="box")
    layout = find_panels(image)
    assert [p.box for p in layout.panels] == [(0.0, 0.0, 1.0, 1.0)]
    assert layout.panels[0].letter_corner == "tl" and layout.method == "none" and layout.reason == "one panel"


def test_a_microscopy_grid_on_a_black_sheet_is_found():
    kinds = ("fluorescence", "electron_microscopy", "fluorescence", "fluorescence", "ct", "electron_microscopy")
    panels = [panel(kind, 20 + i, 200, 160) for i, kind in enumerate(kinds)]
    image, truth = figure([panels[:3], panels[3:]], gutter=8, background=(0, 0, 0), letters="direct")
    assert_found(image, truth)


def test_titles_and_colour_bars_make_no_sliver_panels():
    image, truth = figure([[panel("he_histology", 30), panel("ihc", 31)],
                           [panel("fluorescence", 32), panel("electron_microscopy", 33)]], gutter=10)
    w, h = image.size
    framed = Image.new("RGB", (w + 50, h + 26), (255, 255, 255))
    framed.paste(image, (0, 26))
    draw = ImageDraw.Draw(framed)
    draw.text((60, 4), "Control", fill=(0, 0, 0), font=font(16))
    draw.text((300, 4), "Treated", fill=(0, 0, 0), font=font(16))
    ramp = np.linspace(255, 0, 300).astype(np.uint8)[:, None, None].repeat(12, axis=1).repeat(3, axis=2)
    framed.paste(Image.fromarray(ramp), (w + 8, 60))
    draw.text((w + 24, 60), "1.0", fill=(0, 0, 0), font=font(10))
    layout = find_panels(framed)
    assert len(layout.panels) == 4, layout.reason
    for box in (p.box for p in layout.panels):
        assert box[2] - box[0] > 0.3 and box[3] - box[1] > 0.3  # panels, not a strip of title or bar
    shift = [(x0 * w / (w + 50), (y0 * h + 26) / (h + 26), x1 * w / (w + 50), (y1 * h + 26) / (h + 26))
             for x0, y0, x1, y1 in truth]
    assert all(iou(t, p.box) >= 0.7 for t, p in zip(shift, layout.panels, strict=True))


@pytest.mark.parametrize("name", ["noise", "bar chart", "blank", "tiny"])
def test_ambiguous_or_plain_inputs_stay_whole_with_a_reason(name):
    rng = np.random.default_rng(0)
    image = {
        "noise": Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
        "bar chart": panel("bar_chart", 40, 500, 360),
        "blank": Image.new("RGB", (300, 200), (255, 255, 255)),
        "tiny": Image.new("L", (30, 20), 128),
    }[name]
    layout = find_panels(image)
    assert [p.box for p in layout.panels] == [(0.0, 0.0, 1.0, 1.0)]
    assert layout.method == "none" and layout.reason.startswith("one panel")


def test_a_caption_count_that_disagrees_lowers_confidence_and_never_forces_a_split():
    image, _ = figure([[panel("he_histology", 50), panel("ihc", 51)]], gutter=12)
    agree, silent, disagree = (find_panels(image, expected=n) for n in (2, None, 5))
    assert agree.confidence > silent.confidence > disagree.confidence
    assert len(agree.panels) == len(silent.panels) == 2
    single = panel("fluorescence", 52, 500, 360)
    assert len(find_panels(single, expected=4).panels) == 1
    assert find_panels(single, expected=4).confidence < find_panels(single).confidence
    with pytest.raises(ValueError, match="at least 1"):
        find_panels(single, expected=0)


def test_weakly_supported_splits_stay_whole_when_the_caption_disagrees():
    """Two abutting MRI scans: black surrounds, no seam between them; only their letters say
    where one ends. A caption naming three panels tips that over: the figure stays whole."""
    image, truth = figure([[panel("mri", 60, 300, 240), panel("mri", 61, 300, 240)]], gutter=0, margin=0,
                          letters="box")
    assert_found(image, truth)
    assert "letters" in find_panels(image).reason
    disagree = find_panels(image, expected=3)
    assert len(disagree.panels) == 1 and disagree.reason.startswith("ambiguous: ")


def test_compound_figure_is_deterministic_and_its_truth_is_sound():
    first, again, other = compound_figure(7), compound_figure(7), compound_figure(8)
    assert first.image.tobytes() == again.image.tobytes() and first.panels == again.panels
    assert first.kinds == again.kinds and first.layout == again.layout
    assert other.image.tobytes() != first.image.tobytes()
    families = set()
    for seed in range(40):
        fig = compound_figure(seed)
        families.add(fig.layout if fig.layout.startswith("single") else fig.layout.split("-")[0])
        assert max(fig.image.size) <= 800 and len(fig.kinds) == len(fig.panels)
        boxes = [p.box for p in fig.panels]
        assert all(0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 for x0, y0, x1, y1 in boxes)
        assert all(iou(a, b) == 0 for i, a in enumerate(boxes) for b in boxes[i + 1:])
        letters = [p.letter for p in fig.panels]
        assert (letters == [None] * len(boxes)
                or [s.upper() for s in letters] == [chr(65 + i) for i in range(len(boxes))])
    assert {"grid", "abutting", "spanning", "inset", "single", "single-lettered"} <= families


def test_generated_figures_are_split_well_enough():
    """Minimum functionality on 40 generated figures (bench/panels.py measures 400)."""
    tp = found = truth = 0
    for seed in range(100, 140):
        fig = compound_figure(seed)
        boxes = [p.box for p in find_panels(fig.image).panels]
        pairs = sorted(((iou(t.box, f), i, j) for i, t in enumerate(fig.panels) for j, f in enumerate(boxes)),
                       reverse=True)
        used_t, used_f = set(), set()
        for score, i, j in pairs:
            if score >= 0.5 and i not in used_t and j not in used_f:
                used_t.add(i)
                used_f.add(j)
        tp, found, truth = tp + len(used_t), found + len(boxes), truth + len(fig.panels)
    precision, recall = tp / found, tp / truth
    assert 2 * precision * recall / (precision + recall) >= 0.9, (precision, recall)


@pytest.mark.skipif(not XRAYS.is_dir(), reason=f"no real chest X-rays at {XRAYS} (shared fixtures absent)")
def test_real_chest_xrays_tiled_with_gutters_or_abutting_are_split():
    xrays = []
    for path in sorted(XRAYS.glob("*.png"))[:6]:
        with Image.open(path) as image:
            xrays.append(image.convert("RGB").resize((240, 240)))
    gutters, truth = figure([xrays[:3], xrays[3:6]], gutter=8, letters="direct")
    assert_found(gutters, truth)
    abutting, truth = figure([xrays[:3]], gutter=0, margin=0, letters="box")
    assert_found(abutting, truth)
    single = find_panels(xrays[0])
    assert len(single.panels) == 1
    tiled = tiled_figure(xrays, seed=3)
    assert len(find_panels(tiled.image).panels) == len(tiled.panels)


def test_min_confidence_is_the_layouts_own_threshold():
    """`ingest.panels.min_confidence` reaches the layout: under 0.5 a split the layout doubts comes
    through (then kept whole for its count, not its confidence); at 0.5 it is declined, with the
    confidence it was declined at."""
    from biomedclip.panels.match import split_figure

    image, truth = figure([[panel("mri", 60, 300, 240), panel("mri", 61, 300, 240)]], gutter=0, margin=0,
                          letters="box")
    doubted = find_panels(image, expected=3)  # letters say 2 panels, the caption 3
    assert len(doubted.panels) == 1 and doubted.declined is not None and doubted.declined < 0.5
    through = find_panels(image, expected=3, min_confidence=doubted.declined - 0.05)
    assert through.declined is None and through.confidence == doubted.declined
    assert [iou(t, p.box) >= 0.8 for t, p in zip(truth, through.panels, strict=True)] == [True, True]
    caption = "Three scans. (A) Axial T1. (B) Axial T2. (C) Coronal FLAIR of the same patient."
    refused = split_figure(image, caption)
    assert refused.code == "low_confidence" and f"layout confidence {doubted.declined:.2f} < 0.50" in refused.kept_whole
    lowered = split_figure(image, caption, min_confidence=0.3)
    assert lowered.code == "count_mismatch" and "the image shows 2 panels, the caption names 3" in lowered.kept_whole
    assert len(split_figure(image, "Two scans. (A) Axial T1. (B) Axial T2.", min_confidence=0.0).panels) == 2
    with pytest.raises(ValueError, match="min_confidence"):
        find_panels(image, min_confidence=-0.1)


# --- at the sizes journals publish (1,200-4,000 px): decided as the ingest decides ---------------

def published(image: Image.Image, caption: str):
    """The figure as a JPEG, through the ingest's decode and decision, with panels on."""
    import io

    from biomedclip.ingest.images import decode_image
    from biomedclip.ingest.panels import decide, decode_side
    from biomedclip.ingest.params import IngestParams, PanelParams

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    params = IngestParams(panels=PanelParams(enabled=True))
    return decide(decode_image(buffer.getvalue(), params.image, long_side=decode_side(params)), caption, params)


def assert_split(decision, truth: list[Box]) -> None:
    assert decision.status == "split", decision.detail
    found = [p.box for p in decision.split.panels]
    assert len(found) == len(truth) and all(iou(t, f) >= 0.8 for t, f in zip(truth, found, strict=True)), found


def lettered(image: Image.Image, truth: list[Box], size: int) -> Image.Image:
    """Black letters A, B, ... in white boxes near each panel's top-left corner."""
    draw = ImageDraw.Draw(image)
    for i, (x0, y0, _, _) in enumerate(truth):
        x, y = round(x0 * image.width) + 12, round(y0 * image.height) + 12
        draw.rectangle([x, y, x + size + 4, y + size + 8], fill=(255, 255, 255))
        draw.text((x + 4, y + 2), chr(ord("A") + i), fill=(0, 0, 0), font=font(size), stroke_width=1,
                  stroke_fill=(0, 0, 0))
    return image


def test_a_journal_size_figure_with_narrow_gutters_is_split_on_its_decode():
    """1,944 x 2,340 px, 4 px gutters: 1 px in the 512 px figure the store keeps, where the split
    was decided before (count_mismatch); 2 px in the figure as decoded for panels, reduced to 1,024."""
    kinds = ("he_histology", "ihc", "fluorescence", "electron_microscopy", "he_histology", "ihc")
    tiles = [panel(kind, 40 + i, 350, 280).resize((970, 776), Image.Resampling.LANCZOS) for i, kind in enumerate(kinds)]
    image, truth = figure([tiles[:2], tiles[2:4], tiles[4:]], gutter=4, margin=0)
    caption = "Sections of the margin. " + " ".join(f"({chr(ord('A') + i)}) Stain {i + 1}." for i in range(6))
    assert_split(published(lettered(image, truth, 40), caption), truth)


@pytest.mark.skipif(not XRAYS.is_dir(), reason=f"no real chest X-rays at {XRAYS} (shared fixtures absent)")
def test_abutting_radiographs_of_a_figure_reduced_for_the_decision_are_found_by_their_seams():
    """Three real radiographs abutting, 3,000 x 1,000 px: reduced to 1,024 px for the decision, the
    edge between two of them is spread over two pixels, and still a seam."""
    xrays = []
    for path in sorted(XRAYS.glob("*.png"))[:3]:
        with Image.open(path) as image:
            xrays.append(image.convert("RGB").resize((1000, 1000)))
    image, truth = figure([xrays], gutter=0, margin=0)
    caption = "Radiographs at admission. (A) Patient 1. (B) Patient 2. (C) Patient 3."
    assert_split(published(lettered(image, truth, 40), caption), truth)


def test_figures_over_the_decision_side_are_area_averaged_to_it_not_reduced_by_an_integer():
    from biomedclip.panels.sheet import DECISION_SIDE, as_planes

    assert as_planes(Image.new("RGB", (2100, 700), (255, 255, 255))).shape == (3, 341, DECISION_SIDE)
    assert as_planes(Image.new("RGB", (900, 700), (255, 255, 255))).shape == (3, 700, 900)
