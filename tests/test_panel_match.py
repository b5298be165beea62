"""A compound figure into panel pairs (`panels.match.split_figure`): each panel found in the image
gets its own letter's sub-caption with the shared text, in reading order; any doubt keeps the
figure whole with the reason. And `biomedclip inspect --panels`, which shows it for one figure."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from biomedclip.cli import app
from biomedclip.demo.compound import compound_figure
from biomedclip.demo.figures import render
from biomedclip.panels.match import split_figure

pytestmark = pytest.mark.unit

TITLE, STATS = "Effects of the treatment in mice.", "Data are presented as mean ± SD."


def caption_for(kinds: tuple[str, ...]) -> str:
    letters = [chr(ord("A") + i) for i in range(len(kinds))]
    panels = " ".join(f"({letter}) Panel {letter} shows the {kind.replace('_', ' ')} of group {letter}."
                      for letter, kind in zip(letters, kinds, strict=True))
    return f"{TITLE} {panels} {STATS}"


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_split_figures_pair_each_panel_with_its_own_letters_text():
    split_any = 0
    for seed in range(24):
        figure = compound_figure(seed)
        split = split_figure(figure.image, caption_for(figure.kinds))
        if split.kept_whole:
            assert not split.panels and split.kept_whole
            continue
        split_any += 1
        assert len(split.panels) == len(figure.panels), seed
        for pair, truth, kind in zip(split.panels, figure.panels, figure.kinds, strict=True):
            assert iou(pair.box, truth.box) >= 0.5, (seed, pair.letter)
            assert f"Panel {pair.letter} shows the {kind.replace('_', ' ')} of group {pair.letter}." in pair.text
            assert pair.text.startswith(TITLE) and STATS in pair.text  # the shared parts, for every panel
            others = {chr(ord("A") + i) for i in range(len(figure.panels))} - {pair.letter}
            assert not any(f"of group {o}." in pair.text for o in others)  # no other panel's words
    assert split_any >= 12  # most compound figures split


@pytest.fixture(scope="module")
def grid():
    """A 2 x 2 compound figure with gutters."""
    return next(f for f in map(compound_figure, range(40)) if f.layout.startswith("grid-2x2"))


def test_a_count_disagreement_keeps_the_figure_whole_naming_both_counts(grid):
    figure = grid
    split = split_figure(figure.image, caption_for(figure.kinds[:3]))
    assert split.panels == () and "the caption names 3 (A, B, C)" in split.kept_whole


def test_captions_without_letters_keep_the_figure_whole(grid):
    figure = grid
    assert split_figure(figure.image, "A plain caption about four images.").kept_whole == \
        "the caption names no panels"
    positional = split_figure(figure.image, "Two views. Left: the control. Right: the treated mouse.")
    assert positional.panels == () and "by position" in positional.kept_whole


def test_below_the_confidence_threshold_the_figure_stays_whole(grid):
    splits = ((f, split_figure(f.image, caption_for(f.kinds))) for f in map(compound_figure, range(24)))
    figure, split = next((f, s) for f, s in splits if s.panels and s.confidence < 1)  # split, not certain
    stricter = split_figure(figure.image, caption_for(figure.kinds), min_confidence=split.confidence + 0.01)
    assert stricter.panels == () and f"layout confidence {split.confidence:.2f} <" in stricter.kept_whole
    with pytest.raises(ValueError, match="min_confidence"):
        split_figure(grid.image, "x", min_confidence=1.5)


ARTICLE = """<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink">
<front><article-meta><article-id pub-id-type="pmcid">PMC7</article-id></article-meta></front>
<body><fig id="f1"><label>Figure 1</label><caption><title>Two stains of one tumour.</title>
<p>(A) H&amp;E section of the tumour margin. (B) Ki-67 immunohistochemistry of the same margin.
Scale bars, 100 µm.</p></caption><graphic xlink:href="fig1.tif"/></fig></body></article>"""


def test_inspect_panels_shows_the_split_of_one_real_figure_file(tmp_path):
    left, right = (render(kind, seed, 240, 200)[0] for kind, seed in (("he_histology", 1), ("ihc", 2)))
    sheet = Image.new("RGB", (240 * 2 + 24, 200), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (264, 0))
    sheet.save(tmp_path / "fig1.png")
    (tmp_path / "article.xml").write_text(ARTICLE, encoding="utf-8")
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "article.xml"), "--panels", str(tmp_path / "fig1.png"),
                                      "--panels-out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "H&E section of the tumour margin." in text and "Ki-67 immunohistochemistry" in text
    assert "Scale bars, 100 µm." in text.split("shared:")[1]  # shared, not panel B's
    assert "kept whole" not in text
    assert (tmp_path / "out" / "fig1.panels.png").is_file()

    sheet.save(tmp_path / "fig9.png")
    wrong = CliRunner().invoke(app, ["inspect", str(tmp_path / "article.xml"), "--panels", str(tmp_path / "fig9.png")])
    assert (wrong.exit_code == 1
            and "no figure of the article has a graphic named 'fig9'" in " ".join(wrong.output.split()))
