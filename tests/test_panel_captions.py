"""Compound captions split into shared text and per-panel sub-captions (`panels.captions`): on the
real PMC, PLOS, BMC and Nature-style captions in ../shared/fixtures, on every marker form by hand,
and on the JATS reader's labelled caption lists ("(B, C) ...")."""

from __future__ import annotations

import re
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from biomedclip.ingest.jats import count_panels, parse_article
from biomedclip.panels.captions import SplitCaption, split_caption

from .conftest import SHARED_FIXTURES

pytestmark = pytest.mark.unit

PMC = SHARED_FIXTURES / "pmc"

# Every figure of the real fixtures that splits, with its panel keys; every other one is "none".
SPLITS = {
    "1471-2180-11-174.nxml": {"F2": "AB", "F3": "ABCD", "F4": "AB"},
    "PMC10200000.xml": {"Fig1": "ABC", "Fig2": "ABCDEF", "Fig3": "ABCDEFGH", "Fig4": "ABCDEFGH",
                        "Fig5": "ABCDEF"},
    "PMC10821037.xml": {"vaccines-12-00072-f003": "ABCDEF", "vaccines-12-00072-f004": "ABCDE"},
    "PMC6000000.xml": {"Fig1": "AB", "Fig2": "ABCDEFGH", "Fig4": "AB", "Fig5": "AB"},
    "PMC9500000.xml": {"fig1": "ABCDEFGH", "fig2": "ABCDEF", "fig3": "ABCDEFGH", "fig4": "ABCDEFGH"},
    "ehp-116-1694.nxml": {"f1-ehp-116-1694": "AB", "f2-ehp-116-1694": "AB", "f3-ehp-116-1694": "ABC"},
    "journal.pbio.1001473.xml": {"pbio-1001473-g004": ("left", "right", "middle"),
                                 "pbio-1001473-g005": "AB", "pbio-1001473-g007": "ABC"},
    "journal.pcbi.1004082.xml": {"pcbi.1004082.g001": "ABCD", "pcbi.1004082.g002": "ABC",
                                 "pcbi.1004082.g003": "ABCDEF", "pcbi.1004082.g004": "ABCD",
                                 "pcbi.1004082.g005": "ABCDEF", "pcbi.1004082.g006": "ABC",
                                 "pcbi.1004082.g007": "ABCDE", "pcbi.1004082.g008": "AB"},
    "journal.pone.0052690.xml": {"pone-0052690-g001": "ABCD", "pone-0052690-g002": "AB"},
    "pone.0046493.nxml": {"pone-0046493-g001": "AB", "pone-0046493-g002": "AB",
                          "pone-0046493-g003": "ABCD"},
}


@cache
def _real_captions() -> dict[tuple[str, str], str]:
    return {(path.name, fig.fig_id): fig.caption
            for path in sorted(PMC.iterdir()) if path.suffix in (".xml", ".nxml")
            for fig in parse_article(path.read_bytes()).figures}


@pytest.fixture(scope="module")
def real_captions() -> dict[tuple[str, str], str]:
    if not PMC.is_dir():
        pytest.skip(f"{PMC} is absent (the real PMC articles live beside the project, in "
                    "../shared/fixtures, in this workplace only)")
    return _real_captions()


def split_of(real_captions, name: str, fig_id: str) -> SplitCaption:
    return split_caption(real_captions[name, fig_id])


# --- real captions ---------------------------------------------------------------------------

def test_every_real_figure_splits_into_the_panels_its_caption_names(real_captions):
    assert len(real_captions) == 59
    wrong = {}
    for (name, fig_id), caption in real_captions.items():
        expected = tuple(SPLITS.get(name, {}).get(fig_id, ()))
        split = split_caption(caption)
        if tuple(split.panels) != expected:
            wrong[name, fig_id] = (tuple(split.panels), expected)
        if not expected:  # single-panel captions, and those with letters that are no panels
            assert split.style == "none" and split.shared == caption and split.panels == {}
    assert not wrong


def test_bmc_parenthesised_letters_keep_the_trailing_statistics_shared(real_captions):
    split = split_of(real_captions, "1471-2180-11-174.nxml", "F3")
    assert split.style == "paren"
    assert split.shared == ("Factors influencing λ lysis time stochasticity. All data are from Tables 1 "
                            "and 2. Symbols: open circles, MLT; close circles, SD; closed triangles, CV.")
    assert split.panels["A"] == ("Effect of allelic variation in holin proteins on mean lysis times "
                                 "(MLTs) and standard deviations (SDs).")
    assert split.panels["D"] == ("Effect of lysogen growth rate on MLT, SD, and CV. The fitted solid line "
                                 "shows the relationship between the growth rate and SD.")
    assert split.text_for("D").startswith("Factors influencing λ lysis time stochasticity. All data")


def test_an_unclosed_parenthesis_does_not_swallow_the_next_panel(real_captions):
    # (B)'s "(multiple comparisons p = 0.036. ..." never closes; (C) still starts a panel.
    split = split_of(real_captions, "PMC10821037.xml", "vaccines-12-00072-f003")
    assert split.panels["B"].endswith("BNT162b2 vs. ChAdOx1-S p = 0.014.")
    assert split.panels["C"].startswith("In patients hospitalized in an early stage (viral phase)")
    assert "Post-hoc analysis: BNT162b2 vs. unvaccinated p = 0.002" in split.panels["F"]
    assert split.panels["F"].endswith("(multiple comparisons p = 0.386).")
    assert split.shared.endswith("The log-rank test was applied to compare curves in multiple "
                                 "comparisons or post-hoc analysis.")


def test_markers_after_their_sentence_give_it_to_the_panels_they_name(real_captions):
    split = split_of(real_captions, "PMC10821037.xml", "vaccines-12-00072-f004")
    assert split.style == "paren"
    assert split.shared == ("Evolution of some clinical parameters during the first 6 days of "
                            "hospitalization for patients based on the type of vaccine received. "
                            "Average values and 95% confidence intervals are presented.")
    assert split.panels["A"] == ("It is observed that the National Early Warning Score 2 (NEWS-2) is "
                                 "lower in the vaccinated groups compared to the non-vaccinated group.")
    assert "(in (A,B))" in split.panels["B"]  # a reference, left as written
    assert split.panels["C"] == split.panels["D"]  # "The lymphocyte count (C) ... ratio (D) ..."
    assert split.panels["C"].startswith("The lymphocyte count is higher in vaccinated individuals")
    assert split.panels["E"].startswith("Ferritin levels are lower")

    ehp = split_of(real_captions, "ehp-116-1694.nxml", "f3-ehp-116-1694")
    assert ehp.shared == "Transcript levels are normalized to 18S. *p < 0.05 compared to control."
    assert ehp.panels["A"] == ehp.panels["B"] == ("Dietary PBDE-47 exposure elevated mRNA levels for "
                                                  "TRα in females, and reduced mRNA levels for TRβ in "
                                                  "both sexes.")
    assert ehp.panels["C"].startswith("PBDE-47 exposure also reduced gene transcripts for BTEB")


def test_nature_letters_ranges_and_narrowing(real_captions):
    split = split_of(real_captions, "PMC6000000.xml", "Fig2")  # "a, b ...", "c–h ...", "e, f ..."
    assert split.style == "lead"
    assert split.shared == ("Histopathology of the lungs from H5N6/GZ14-infected mice. Scale bars = "
                            "100 μm (a, c, e, g) and 25 μm (b, d, f, h)")
    assert split.panels["A"] == split.panels["B"] == "Eight-week-old female BALB/c mice without infection."
    for key in "CDEFGH":
        assert split.panels[key].startswith("Eight-week-old female BALB/c mice infected with 10 MLD50")
    for key in "CD":  # "... around the bronchi (c, d)." is C's and D's only
        assert "At 1 dpi, inflammatory cells (arrows) could be observed around the bronchi." in split.panels[key]
    for key in "EFGH":
        assert "At 1 dpi" not in split.panels[key]
    assert "At 3f dpi" in split.panels["E"] and "At 3f dpi" not in split.panels["G"]
    assert split.panels["H"].endswith("The alveoli were completely filled with edema and hemorrhages (asterisks).")


def test_nature_inline_bold_letters_fill_the_gaps_between_leading_ones(real_captions):
    # "a IR camera image ... Light-induced b temperature changes and c ionic current changes ..."
    split = split_of(real_captions, "PMC10200000.xml", "Fig3")
    assert split.shared == "The photothermal effect of the LM and HM."
    assert split.panels["A"] == "IR camera image of the LM under light irradiation."
    assert split.panels["B"] == split.panels["C"] == ("Light-induced temperature changes and ionic current "
                                                      "changes of the LM under alternating illumination.")
    assert split.panels["E"] == split.panels["F"] and "of the HM" in split.panels["E"]
    assert split.panels["H"].startswith("Comparison of the enhanced current (I)")

    fig4 = split_of(real_captions, "PMC10200000.xml", "Fig4")  # "Comparison of b the current density"
    assert fig4.panels["B"] == ("Comparison of the current density and voltage of the HM under various "
                                "concentration gradients with and without light irradiation.")
    assert "Inset: equivalent circuit" in fig4.panels["D"]  # an inset of panel d stays d's


def test_panel_groups_references_and_closing_methods(real_captions):
    fig3 = split_of(real_captions, "PMC9500000.xml", "fig3")
    assert fig3.panels["D"] == fig3.panels["E"] == ("Phenotypic rescue and adverse effect for the 14 "
                                                    "individual 96-well plates.")
    assert fig3.panels["H"] == "Example images for the quantification of the dose response in (G)."
    assert fig3.shared == "Screen for compounds that rescue the HD phenotype. All micropattern diameters, 700 μm."

    fig4 = split_of(real_captions, "PMC9500000.xml", "fig4")
    assert fig4.panels["G"] == fig4.panels["H"]
    assert fig4.panels["G"].endswith("1 μM (blue) and 5 μM (red).")
    assert fig4.shared.endswith("Scale bar, 50 μm.") and "Mann-Whitney" in fig4.shared
    assert fig4.panels["F"].endswith("as quantified in (E) (n = 435).")

    fig2 = split_of(real_captions, "PMC9500000.xml", "fig2")
    assert fig2.panels["F"].startswith("Example phalloidin stains for the drugs and concentrations shown in (E).")
    assert fig2.shared.endswith("Micropattern diameter, 700 μm.")


def test_notes_on_several_panels_are_shared(real_captions):
    g005 = split_of(real_captions, "journal.pcbi.1004082.xml", "pcbi.1004082.g005")
    assert g005.panels["F"] == "Predicted deviation as a function of K and σd."
    assert "In panels C-F, the white square" in g005.shared and "In panels D-F" in g005.shared
    g004 = split_of(real_captions, "journal.pcbi.1004082.xml", "pcbi.1004082.g004")
    assert g004.panels["D"] == ("Sample JPSTHs (noise correlations) for pairs of model neurons. Inset: "
                                "corresponding cross-correlograms, obtained by projection along the diagonal.")
    assert "the curves in panels B-D were computed" in g004.shared
    # "—shown in panel (E)": E and F are named, never described on their own.
    g001 = split_of(real_captions, "journal.pcbi.1004082.xml", "pcbi.1004082.g001")
    assert "shown in panel (E)" in g001.panels["D"] and "shown in panel (F)" in g001.panels["D"]
    assert g001.panels["A"].startswith("Experimental setup. Top: A set of stimulus values")


def test_plos_lead_letters_inline_and_leading(real_captions):
    g003 = split_of(real_captions, "pone.0046493.nxml", "pone-0046493-g003")
    assert g003.style == "lead"
    assert g003.panels["A"] == g003.panels["B"] == g003.panels["C"] == (
        "Global mass modifications of LipH; LipN and LipY after 30 min incubation with MmPPOX at a "
        "molar excess of 20 (xI = 20).")
    assert g003.panels["D"].startswith("PMF spectra of LipN before (top) and after (bottom)")
    assert g003.panels["D"].endswith("identical vertical scales were chosen for the right parts.")
    g002 = split_of(real_captions, "pone.0046493.nxml", "pone-0046493-g002")
    assert g002.panels["A"].startswith("SDS-PAGE profile of the 9 Lip-HSL proteins")
    assert g002.panels["B"].startswith("Residual activities of LipC")


def test_letters_inside_a_sentence_give_it_whole_to_both_panels(real_captions):
    # "Two topologically alternative scenarios can be proposed: (a) a “DNA inside ...” model or (b) ..."
    split = split_of(real_captions, "journal.pone.0052690.xml", "pone-0052690-g002")
    assert split.panels["A"] == split.panels["B"] == (
        "Two topologically alternative scenarios can be proposed: a “DNA inside, protein outside” model "
        "or a “DNA outside, protein inside” model.")
    assert split.shared.startswith("Hypothetical three-dimensional organizations of the partition assembly. "
                                   "The DNA is shown as black line")


def test_positional_markers_in_a_real_caption(real_captions):
    split = split_of(real_captions, "journal.pbio.1001473.xml", "pbio-1001473-g004")
    assert split.style == "positional"
    assert split.panels["left"].startswith("The green histogram corresponds to SNP heterozygosity")
    assert split.panels["right"].startswith("The red histogram corresponds")
    assert split.panels["middle"].startswith("The orange histogram corresponds")
    assert split.shared == ("Nanochromosomal SNP heterozygosity. The smallest bin is 0–0.005 (0%–0.5%) "
                            "heterozygosity.")


MARKER_WORDS = {"and", "to", "left", "right", "top", "bottom", "upper", "lower", "middle", "center",
                "centre", "inset", "insets", "panel", "panels", "row", "rows", "column", "columns",
                "image", "images", "graph", "graphs", "plot", "plots", "part", "parts"}


def assert_nothing_dropped(caption: str, split: SplitCaption) -> None:
    """Every word of the caption is in the shared text or a sub-caption, markers aside."""
    kept = set(re.findall(r"\w+", " ".join([split.shared, *split.panels.values()])))
    lost = {w for w in re.findall(r"\w+", caption)
            if w not in kept and len(w) > 1 and w.lower() not in MARKER_WORDS}
    assert not lost, (caption, split)


def test_no_word_of_a_real_caption_is_dropped(real_captions):
    for caption in real_captions.values():
        assert_nothing_dropped(caption, split_caption(caption))


# --- every marker form, by hand --------------------------------------------------------------

@pytest.mark.parametrize(
    ("caption", "style", "shared", "panels"),
    [
        pytest.param("Tumour growth in mice. (A) Tumour volume over time. (B) Body weight. Data are "
                     "mean ± SD; n = 5 mice per group.", "paren",
                     "Tumour growth in mice. Data are mean ± SD; n = 5 mice per group.",
                     {"A": "Tumour volume over time.", "B": "Body weight."}, id="paren"),
        pytest.param("Title. (A–C) Confocal images of cells. (D) Quantification. Scale bars, 10 μm.",
                     "paren", "Title. Scale bars, 10 μm.",
                     {"A": "Confocal images of cells.", "B": "Confocal images of cells.",
                      "C": "Confocal images of cells.", "D": "Quantification."}, id="en-dash-range"),
        pytest.param("Title. (a-c) Confocal images. (d) Quantification of (a). *P < 0.05.", "paren",
                     "Title. *P < 0.05.", {"A": "Confocal images.", "B": "Confocal images.",
                                           "C": "Confocal images.", "D": "Quantification of (a)."},
                     id="hyphen-range-lower-case"),
        pytest.param("Title. (A—B) Images. (C to D) Plots.", "paren", "Title.",
                     {"A": "Images.", "B": "Images.", "C": "Plots.", "D": "Plots."}, id="em-dash-and-to"),
        pytest.param("Title. (A and B) Images. (C, D) Plots. (E,F) Maps. (G, H, and I) Blots.", "paren",
                     "Title.", {"A": "Images.", "B": "Images.", "C": "Plots.", "D": "Plots.",
                                "E": "Maps.", "F": "Maps.", "G": "Blots.", "H": "Blots.", "I": "Blots."},
                     id="and-and-commas"),
        pytest.param("Title. (A) WT mice as shown in (C). (B) KO mice (see C). (C) Both, compared with "
                     "(A); see also (B), vs (A) and as in (B).", "paren", "Title.",
                     {"A": "WT mice as shown in (C).", "B": "KO mice (see C).",
                      "C": "Both, compared with (A); see also (B), vs (A) and as in (B)."},
                     id="references-are-not-markers"),
        pytest.param("Title. (A) Images. (B) Quantification of (A) in panel (B) and Fig. 2 (C).", "paren",
                     "Title.", {"A": "Images.", "B": "Quantification of (A) in panel (B) and Fig. 2 (C)."},
                     id="back-references"),
        pytest.param("Setup. (A) Schematic; (B) Plot of the current.", "paren", "Setup.",
                     {"A": "Schematic", "B": "Plot of the current."}, id="paren-after-semicolon"),
        pytest.param("Overview. a Schematic of the device; b Plot of the current. c Photograph of the "
                     "chip.", "lead", "Overview.",
                     {"A": "Schematic of the device", "B": "Plot of the current.",
                      "C": "Photograph of the chip."}, id="nature-bare-lower-case"),
        pytest.param("Lungs. a, b Uninfected mice. c–e Infected mice. Note the cells (c, d).", "lead",
                     "Lungs.", {"A": "Uninfected mice.", "B": "Uninfected mice.",
                                "C": "Infected mice. Note the cells.", "D": "Infected mice. Note the cells.",
                                "E": "Infected mice."}, id="nature-groups-and-narrowing"),
        pytest.param("Overview. A, Schematic of the device. B, Plot of the current.", "lead", "Overview.",
                     {"A": "Schematic of the device.", "B": "Plot of the current."}, id="A-comma"),
        pytest.param("Overview. A. Schematic of the device. B. Plot of the current.", "lead", "Overview.",
                     {"A": "Schematic of the device.", "B": "Plot of the current."}, id="A-period"),
        pytest.param("Overview. a) Schematic of the device. b) Plot of the current.", "lead", "Overview.",
                     {"A": "Schematic of the device.", "B": "Plot of the current."}, id="a-paren"),
        pytest.param("Overview. A: Schematic. B: Plot.", "lead", "Overview.",
                     {"A": "Schematic.", "B": "Plot."}, id="A-colon"),
        pytest.param("Structures of A, Aspirin and B, Ibuprofen.", "lead", "",
                     {"A": "Structures of Aspirin and Ibuprofen.", "B": "Structures of Aspirin and Ibuprofen."},
                     id="plos-inline"),
        pytest.param("Exposure lowered T4 in females (A) but not T3 in males (B). *p < 0.05.", "paren",
                     "*p < 0.05.", {"A": "Exposure lowered T4 in females but not T3 in males.",
                                    "B": "Exposure lowered T4 in females but not T3 in males."},
                     id="trailing-markers"),
        pytest.param("Brain sections. Left: wild-type mouse. Right: knockout mouse. Scale bar, 1 mm.",
                     "positional", "Brain sections. Scale bar, 1 mm.",
                     {"left": "wild-type mouse.", "right": "knockout mouse."}, id="left-right"),
        pytest.param("Brain sections. Top panel shows wild-type mice. Bottom panel shows knockout mice.",
                     "positional", "Brain sections.",
                     {"top": "shows wild-type mice.", "bottom": "shows knockout mice."}, id="top-panel"),
        pytest.param("Brain sections. Upper: wild-type. Lower: knockout. Inset: the hippocampus.",
                     "positional", "Brain sections.",
                     {"top": "wild-type.", "bottom": "knockout.", "inset": "the hippocampus."},
                     id="upper-lower-inset"),
        pytest.param("Sections of wild-type (left) and knockout (right) mice. Scale bar, 1 mm.",
                     "positional", "Scale bar, 1 mm.",
                     {"left": "Sections of wild-type and knockout mice.",
                      "right": "Sections of wild-type and knockout mice."}, id="paren-left-right"),
        pytest.param("Title. (A) Mice. (B) Rats. Note the fur. All experiments were repeated three "
                     "times. Error bars, SEM.", "paren",
                     "Title. All experiments were repeated three times. Error bars, SEM.",
                     {"A": "Mice.", "B": "Rats. Note the fur."}, id="closing-boilerplate"),
        pytest.param("Title. (A) Images. (B) Plot of temperature (T) against time.", "paren", "Title.",
                     {"A": "Images.", "B": "Plot of temperature (T) against time."}, id="symbol-not-marker"),
    ],
)
def test_marker_forms(caption, style, shared, panels):
    split = split_caption(caption)
    assert (split.style, split.shared, split.panels) == (style, shared, panels)
    assert_nothing_dropped(caption, split)


@pytest.mark.parametrize(
    "caption",
    [
        pytest.param("CT scans (CT) of B cells (B cells) with IL-6 (IL-6) (n = 5) (P < 0.05).", id="abbreviations"),
        pytest.param("Title. (A) One. (C) Three. (F) Six.", id="gap-of-two"),
        pytest.param("Title. (B) One. (C) Two.", id="no-A"),
        pytest.param("Title. (A) One. (B) Two. (A) Again.", id="out-of-order"),
        pytest.param("Title. (A) The only panel named.", id="one-letter"),
        pytest.param("Velocity (V) and temperature (T) over time.", id="symbols"),
        pytest.param("Cells treated with (S)-ketamine and (R)-ketamine; bi(t) and ψ(s) are shown.", id="notation"),
        pytest.param("As shown in (A) and compared with (B), see (C).", id="references-only"),
        pytest.param("Steps (i) fixation and (ii) staining of the cells.", id="roman"),
        pytest.param("Vitamin A, Vitamin D and Vitamin B, Levels in serum.", id="not-plos-inline"),
        pytest.param("A previous model (open arrows) and A Novel Method.", id="article-A"),
        pytest.param("Setup, e.g. a DNA strand. b Thing.", id="after-abbreviation"),
        pytest.param("Left ventricle: enlarged. Right ventricle: normal.", id="anatomy-not-position"),
        pytest.param("Overview. Inset: a magnified view.", id="inset-alone"),
        pytest.param("Figure 2(A) and Fig. 3 (B) were compared.", id="other-figures"),
        pytest.param("", id="empty"),
    ],
)
def test_what_is_not_a_split(caption):
    split = split_caption(caption)
    assert split == SplitCaption(" ".join(caption.split()), {}, "none")
    assert split.text_for("A") == split.shared


def test_text_for_is_shared_then_the_panels_own():
    split = split_caption("Mouse hearts. (A) Whole heart. (B) Section. Scale bar, 1 mm.")
    assert split.text_for("A") == "Mouse hearts. Scale bar, 1 mm. Whole heart."
    assert split.text_for("b") == split.text_for("B") == "Mouse hearts. Scale bar, 1 mm. Section."
    assert split.text_for("C") == "Mouse hearts. Scale bar, 1 mm."  # not named: the shared text
    positional = split_caption("Left: control. Right: treated.")
    assert positional.shared == "" and positional.text_for("Left") == "control."


MARKERISH = ["(A)", "(B)", "(C)", "(a)", "(b)", "(A–C)", "(A and B)", "(A,B)", "a", "b", "c", "A,", "B,",
             "A.", "a)", "Left:", "Right:", "(left)", "Inset:", "Top", "panel", ".", ";", ":", "(see",
             "B)", "in", "as", "shown", "mice", "Mice", "cells", "Scale", "bar,", "Data", "are", "mean",
             "±", "SD.", "*P", "<", "0.05.", "(n", "=", "5)", "(CT)", "vs.", "e.g.", "(i)", "(ii)", "The",
             "Schematic", "(", ")", "Fig.", "2(A)"]


@given(st.lists(st.sampled_from(MARKERISH), max_size=40).map(" ".join))
def test_any_marker_soup_splits_without_losing_words(caption):
    split = split_caption(caption)
    assert split.style in ("paren", "lead", "positional", "none")
    assert split == split_caption(caption)  # deterministic
    assert (split.style == "none") == (not split.panels)
    if split.style == "none":
        assert split.shared == caption
    else:
        assert len(split.panels) >= 2
    assert_nothing_dropped(caption, split)


# --- the JATS reader keeps a caption list's labels -------------------------------------------

FIGURE = """<article xmlns:xlink="http://www.w3.org/1999/xlink"><body><fig id="f1"><label>Figure 1</label>
<caption><title>Cardiac hypertrophy in mice</title><p>Hearts at 8 weeks.</p>
<list list-type="simple">
  <list-item><label>A</label><p>Whole hearts of <italic>Mybpc3</italic> mice.</p></list-item>
  <list-item><label> B, C </label><p>Sections stained with H&amp;E.</p></list-item>
  <list-item><label>(D)</label><p>Heart weight (<italic>n</italic> = 6).</p></list-item>
</list>
<list list-type="bullet"><list-item><label>•</label><p>Bullets stay unlabelled.</p></list-item>
<list-item><p>So do items without a label.</p></list-item></list>
</caption><graphic xlink:href="f1.jpg"/></fig></body></article>"""


def test_labelled_caption_list_items_keep_their_panel_letters():
    fig = parse_article(FIGURE.encode()).figures[0]
    assert fig.caption == ("Cardiac hypertrophy in mice. Hearts at 8 weeks. (A) Whole hearts of Mybpc3 "
                           "mice. (B, C) Sections stained with H&E. (D) Heart weight (n = 6). Bullets "
                           "stay unlabelled. So do items without a label.")
    assert fig.panels == count_panels(fig.caption) == 4
    split = split_caption(fig.caption)
    assert split.style == "paren"
    assert split.panels == {"A": "Whole hearts of Mybpc3 mice.", "B": "Sections stained with H&E.",
                            "C": "Sections stained with H&E.",
                            "D": "Heart weight (n = 6). Bullets stay unlabelled. So do items without a label."}
    assert split.shared == "Cardiac hypertrophy in mice. Hearts at 8 weeks."


def test_unlabelled_caption_lists_read_as_before():
    xml = FIGURE.replace("<label>A</label>", "").replace("<label> B, C </label>", "").replace(
        "<label>(D)</label>", "")
    fig = parse_article(xml.encode()).figures[0]
    assert fig.caption == ("Cardiac hypertrophy in mice. Hearts at 8 weeks. Whole hearts of Mybpc3 mice. "
                           "Sections stained with H&E. Heart weight (n = 6). Bullets stay unlabelled. "
                           "So do items without a label.")
    assert split_caption(fig.caption).style == "none"
