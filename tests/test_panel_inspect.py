"""`biomedclip inspect ARTICLE --panels FIGURE` (`biomedclip.panels.inspect`): the figure file is
matched to its graphic as the ingest matches media (PLOS's dotted names included), decoded as the
ingest decodes it, and decided by the ingest's own `decide`. That it agrees with the ingest on every
figure of a corpus is checked in tests/test_panels_pipeline.py."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from biomedclip.cli import app
from biomedclip.demo.figures import render
from biomedclip.ingest.jats import parse_article
from biomedclip.ingest.params import IngestParams, PanelParams
from biomedclip.panels.inspect import FigureNotFound, inspect_panels

pytestmark = pytest.mark.unit

# PLOS's way: hrefs with dots and no extension, one bare, one as a DOI URI.
ARTICLE = """<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink">
<front><article-meta><article-id pub-id-type="pmcid">PMC100012</article-id></article-meta></front>
<body>
<fig id="pone.0100012.g001"><label>Figure 1</label><caption><title>Study design.</title>
<p>Flow of the patients through the study.</p></caption>
<graphic xlink:href="info:doi/10.1371/journal.pone.0100012.g001"/></fig>
<fig id="pone.0100012.g002"><label>Figure 2</label><caption><title>Two stains of one tumour resected
from the left lower lobe.</title>
<p>(A) H&amp;E section of the tumour margin. (B) Ki-67 immunohistochemistry of the same margin.
Scale bars, 100 &#181;m.</p></caption><graphic xlink:href="pone.0100012.g002"/></fig>
</body></article>"""


def two_panels(path, gutter: int = 24) -> None:
    left, right = (render(kind, seed, 240, 200)[0] for kind, seed in (("he_histology", 1), ("ihc", 2)))
    sheet = Image.new("RGB", (480 + gutter, 200), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (240 + gutter, 0))
    sheet.save(path)


@pytest.fixture
def article(tmp_path):
    (tmp_path / "article.xml").write_text(ARTICLE, encoding="utf-8")
    two_panels(tmp_path / "pone.0100012.g002.jpg")
    two_panels(tmp_path / "pone.0100012.g001.png")
    return tmp_path


def test_a_plos_figure_file_is_found_by_the_stem_of_its_dotted_graphic(article):
    result = CliRunner().invoke(app, ["inspect", str(article / "article.xml"), "--panels",
                                      str(article / "pone.0100012.g002.jpg"), "--panels-out", str(article / "out")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "split into 2 panel pairs" in text and "H&E section of the tumour margin." in text
    assert "Scale bars, 100 µm." in text.split("shared:")[1]
    drawn = article / "out" / "pone.0100012.g002.panels.png"
    with Image.open(drawn) as image:
        assert image.size == (504, 200)
    # The DOI form of PLOS's hrefs, as the ingest's media match reads it.
    found = inspect_panels(parse_article((article / "article.xml").read_bytes()), article / "pone.0100012.g001.png",
                           IngestParams())
    assert found.figure.fig_id == "pone.0100012.g001" and found.graphic.startswith("info:doi/")
    assert found.decision.status == "no_panel_markers" and found.decision.split.layout is None
    assert "not looked at" in found.markdown()


def test_the_result_is_the_ingests_decision_with_its_texts(article):
    parsed = parse_article((article / "article.xml").read_bytes())
    found = inspect_panels(parsed, article / "pone.0100012.g002.jpg", IngestParams(panels=PanelParams(max_words=16)))
    assert found.split and found.found == (504, 200)
    assert [p.letter for p in found.decision.split.panels] == ["A", "B"]
    page = found.markdown()
    assert "| 1 | A | 0.00, 0.00," in page and "Ki-67 immunohistochemistry of the same margin." in page
    assert "… Ki-67 immunohistochemistry" in page  # the text as the ingest cuts it: max_words 16
    strict = inspect_panels(parsed, article / "pone.0100012.g002.jpg",
                            IngestParams(panels=PanelParams(min_confidence=1.0)))
    assert (not strict.split and strict.decision.status == "low_confidence"
            and "kept whole (`low_confidence`): layout confidence" in strict.markdown())


def test_a_file_no_graphic_names_or_the_ingest_rejects_is_an_error_naming_it(article):
    parsed = parse_article((article / "article.xml").read_bytes())
    (article / "fig9.png").write_bytes((article / "pone.0100012.g001.png").read_bytes())
    with pytest.raises(FigureNotFound, match=r"fig9.png: no figure of the article has a graphic named 'fig9' "
                                             r"\(graphics: info:doi/10.1371/journal.pone.0100012.g001, pone"):
        inspect_panels(parsed, article / "fig9.png", IngestParams())
    (article / "pone.0100012.g002.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"pone.0100012.g002.jpg: the ingest rejects it \(image_unreadable"):
        inspect_panels(parsed, article / "pone.0100012.g002.jpg", IngestParams())
    result = CliRunner().invoke(app, ["inspect", str(article / "article.xml"), "--panels", str(article / "fig9.png")])
    assert (result.exit_code == 1
            and "no figure of the article has a graphic named 'fig9'" in " ".join(result.output.split()))
