"""Words for the demo corpus: captions written the way PMC captions are.

A caption is a title sentence that names the figure type and its content, then details that
match what the renderer drew (stain, magnification, finding, colours, counts), panel
descriptions for composite figures, and the methods/statistics boilerplate real captions carry.
Inline markup (italics, sub/superscripts, citations, MathML, inline graphics) is kept as typed
segments so the JATS writer can emit real elements and the plain-text form stays exact.

Panel markers are what `biomedclip.panels.captions.split_caption` reads: "(A)" per panel, or for a
run of same-kind panels described once "(A–C)", "(A-C)", "(A and B)", "(A, B)"; the bare style
is Nature's lower-case letter ("a", "a–c", "a, b"). A composite's caption also records what it
says of each panel alone and of all of them (`Caption.subcaptions`, `Caption.shared`): the panel
truth the corpus writes beside itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from numpy.random import Generator

from biomedclip.demo.figures import Attrs, pick


@dataclass(frozen=True)
class Markup:
    """An inline element inside caption text.

    kind: "italic" | "bold" | "sup" | "sub" | "xref" | "math" | "inline_graphic"
    text: the readable text (empty for inline graphics, which carry no words)
    ref: the `rid` of a citation, the href stem of an inline graphic
    math: MathML tokens as (element, text) pairs, e.g. (("mi", "p"), ("mo", "<"), ("mn", "0.05"))
    """

    kind: str
    text: str = ""
    ref: str = ""
    math: tuple[tuple[str, str], ...] = ()


Segment = str | Markup


@dataclass
class Caption:
    title: list[Segment]  # may be empty: many captions are paragraphs only
    paragraphs: list[list[Segment]] = field(default_factory=list)
    # Of a composite figure: what the caption says of each panel alone (plain, without its
    # marker; a range "(A–C) text" gives A, B and C that text), and of all panels (title,
    # methods, statistics). Empty for one panel.
    subcaptions: list[str] = field(default_factory=list)
    shared: str = ""

    def plain(self) -> str:
        """The caption as an ingest should read it: title + paragraphs, markup as text."""
        parts = [segments_text(self.title)] + [segments_text(p) for p in self.paragraphs]
        return " ".join(" ".join(p.split()) for p in parts if p.strip())


def segments_text(segments: list[Segment]) -> str:
    out = []
    for seg in segments:
        if isinstance(seg, str):
            out.append(seg)
        elif seg.kind == "math":
            out.append(" ".join(text.replace("|", "") for _, text in seg.math))
        else:
            out.append(seg.text)
    return "".join(out)


def sentence(rng: Generator, *options: str, **values: Any) -> str:
    return pick(rng, options).format(**values)


def upper_first(text: str) -> str:
    """Capitalise the first letter only ("serum IL-6" → "Serum IL-6", not "Serum il-6")."""
    return text[:1].upper() + text[1:]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --- per-type wording --------------------------------------------------------------------------

def _he(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    stain = pick(rng, ["H&E", "hematoxylin and eosin (H&E)", "haematoxylin–eosin"])
    title = sentence(rng, "{stain} staining of {tissue} sections showing {finding}",
                     "Histopathological features of {tissue} tissue: {finding} ({stain} stain)",
                     "Representative {stain}-stained {tissue} sections with {finding}",
                     stain=stain, tissue=a["tissue"], finding=a["finding"])
    details = [f"Original magnification ×{a['magnification']}.",
               sentence(rng, "Nuclei appear purple and the cytoplasm and extracellular matrix pink.",
                        "Sections were 4 μm thick and formalin-fixed, paraffin-embedded.",
                        "Images were acquired on a bright-field slide scanner.")]
    return title, details


def _ihc(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    title = sentence(rng, "Immunohistochemical staining of {marker} in {tissue}",
                     "{marker} immunohistochemistry (IHC) showing {level} {pattern} expression in {tissue}",
                     "Representative IHC images of {marker} expression in {tissue}",
                     marker=a["marker"], tissue=a["tissue"], level=a["level"], pattern=a["pattern"])
    details = [f"{a['marker']} shows {a['level']} {a['pattern']} positivity (brown, DAB) with "
               f"hematoxylin counterstain (blue).",
               f"Original magnification ×{a['magnification']}."]
    return title, details


def _fluorescence(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    labels = listing([f"{m} ({c})" for m, c in zip(a["markers"], a["colours"], strict=True)])
    title = sentence(rng, "Immunofluorescence staining of {cell} showing {structure} {labels}",
                     "Confocal fluorescence microscopy of {cell}",
                     "Representative immunofluorescence images of {cell} stained for {labels}",
                     cell=a["cell"], structure=a["structure"], labels=labels)
    details = [f"Nuclei were counterstained with DAPI (blue); {labels} shows a {a['structure']} "
               f"pattern.",
               sentence(rng, "Merged channels are shown.", "Images are maximum-intensity projections.",
                        "Fluorescence images were acquired with identical exposure settings.")]
    return title, details


def _em(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    long_name = {"TEM": "transmission electron microscopy (TEM)",
                 "SEM": "scanning electron microscopy (SEM)"}[a["mode"]]
    title = sentence(rng, "{long} images of {subject}", "Ultrastructure of {subject} by {long}",
                     "Representative {mode} micrographs showing {subject}",
                     long=long_name, subject=a["subject"], mode=a["mode"])
    return title, [f"Electron micrograph; scale bar, {a['scale']}."]


def _cxr(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    finding = a["finding"]
    title = sentence(rng, "{view} chest X-ray showing {finding}",
                     "Chest radiograph ({view} view) demonstrating {finding}",
                     "Frontal chest radiograph of the patient with {finding}",
                     view=upper_first(a["view"]), finding="no acute abnormality" if finding == "normal"
                     else finding)
    details = [sentence(rng, "The radiograph was obtained at admission.",
                        "Chest X-ray on hospital day 3.", "Follow-up radiograph after treatment.")]
    if finding != "normal":
        details.append(f"The {finding} is visible on the chest radiograph.")
    return title, details


def _ct(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    finding = a["finding"]
    what = "no abnormality" if finding == "normal" else f"a {finding} on the {a['side']} side"
    title = sentence(rng, "Axial {contrast} CT scan of the {region} showing {what}",
                     "Computed tomography (CT) of the {region} ({contrast}) demonstrating {what}",
                     "{contrast_cap} {region} CT image with {what}",
                     contrast=a["contrast"], contrast_cap=upper_first(a["contrast"]),
                     region=a["region"], what=what)
    return title, [sentence(rng, "Axial CT slice.", "CT, axial plane.",
                            "The CT image is shown in a soft-tissue window.")]


def _mri(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    finding = a["finding"]
    what = "no abnormal signal" if finding == "normal" else f"a {finding} in the {a['side']} hemisphere"
    title = sentence(rng, "Axial {seq} MRI of the brain showing {what}",
                     "Brain magnetic resonance imaging (MRI), {seq} sequence, demonstrating {what}",
                     "{seq} MR image with {what}", seq=a["sequence"], what=what)
    signal = {"T1-weighted": "hypointense", "T2-weighted": "hyperintense", "FLAIR": "hyperintense"}
    details = [] if finding == "normal" else [
        f"The lesion is {signal[a['sequence']]} on the {a['sequence']} MRI."]
    return title, details


def _us(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    mode = "color Doppler ultrasound" if a["doppler"] else "B-mode ultrasound"
    what = "normal echotexture" if a["finding"] == "normal" else f"{article(a['finding'])} {a['finding']}"
    title = sentence(rng, "{mode} image of the {organ} showing {what}",
                     "Ultrasonography of the {organ} ({mode}) revealing {what}",
                     mode=upper_first(mode), organ=a["organ"], what=what)
    details = ["Color Doppler shows flow signal (red and blue) within the lesion."] if a["doppler"] else []
    return title, details


def listing(words: list[str]) -> str:
    """["a"] → "a"; ["a", "b", "c"] → "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _bar(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    colours = listing(a["colours"])
    title = sentence(rng, "Bar chart of {measure} across {groups} groups",
                     "Quantification of {measure} ({groups} groups, bar graph)",
                     "{measure_cap} in each group, shown as a bar chart",
                     measure=a["measure"], measure_cap=upper_first(a["measure"]), groups=a["groups"])
    details = [f"Bars ({colours}) show mean values; error bars indicate {a['error']}."]
    if a["series"] > 1:
        details.append(f"{a['series']} conditions are compared within each group.")
    return title, details


def _line(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    colours = listing(a["colours"])
    if a["survival"]:
        title = sentence(rng, "Kaplan–Meier curves of {m} over {u}",
                         "Kaplan–Meier survival analysis ({n} groups)",
                         m=a["measure"], u=a["unit"], n=a["series"])
        return title, [f"Survival curves are drawn as step lines ({colours}); log-rank test."]
    title = sentence(rng, "Line chart of {m} over time ({u})", "Time course of {m} (line graph)",
                     "{m_cap} measured over {u}", m=a["measure"], m_cap=upper_first(a["measure"]),
                     u=a["unit"])
    return title, [f"{a['series']} series are shown as lines with markers ({colours})."]


def _scatter(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    title = sentence(rng, "Scatter plot of {y} versus {x}", "Correlation between {x} and {y}",
                     "Relationship of {x} with {y} (scatter plot)", x=a["x"], y=a["y"])
    details = [f"Each dot represents one sample (n = {a['n']})."]
    if a["fit"]:
        details.append(f"The line shows the linear regression fit (r = {a['r']}).")
    return title, details


def _heatmap(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    title = sentence(rng, "Heatmap of {rows} differentially expressed genes across {cols} samples",
                     "Hierarchical clustering heatmap of gene expression",
                     "Heat map showing expression of {rows} genes", rows=a["rows"], cols=a["cols"])
    details = [f"Colour scale ({a['scheme']}) indicates z-scored expression."]
    if a["dendrogram"]:
        details.append("Dendrograms show unsupervised hierarchical clustering.")
    return title, details


def _western(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    targets = listing(a["targets"])
    title = sentence(rng, "Western blot analysis of {t}", "Immunoblot of {t} in {lanes} samples",
                     "Western blotting showing {trend} {t} protein levels",
                     t=targets, lanes=a["lanes"], trend=a["trend"])
    return title, [f"{a['control']} served as the loading control; {a['lanes']} lanes are shown."]


def _flow(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    title = sentence(rng, "Flow cytometry analysis of {x} and {y}",
                     "Representative flow cytometry dot plots of {x}/{y} staining",
                     "FACS plots showing {x} versus {y}", x=a["x_marker"], y=a["y_marker"])
    return title, [f"Numbers in the quadrants indicate the percentage of cells "
                   f"({a['quadrant'][0]}% and {a['quadrant'][1]}% in the upper quadrants)."]


def _diagram(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    style = a["style"]
    title = sentence(rng, "{Style} of the study", "Schematic diagram: {style} with {boxes} steps",
                     "{Style} summarising the design", style=style,
                     Style=style[0].upper() + style[1:], boxes=a["boxes"])
    return title, [f"Diagram with {a['boxes']} boxes connected by arrows."]


def _photo(a: Attrs, rng: Generator) -> tuple[str, list[str]]:
    title = sentence(rng, "Clinical photograph of the {s}", "Photograph showing {a} {s}",
                     "Clinical image of the patient's {s}", s=a["subject"], a=article(a["subject"]))
    return title, ["A ruler is included for scale."] if a["ruler"] else []


WORDING = {
    "he_histology": _he, "ihc": _ihc, "fluorescence": _fluorescence, "electron_microscopy": _em,
    "chest_xray": _cxr, "ct": _ct, "mri": _mri, "ultrasound": _us, "bar_chart": _bar,
    "line_chart": _line, "scatter_plot": _scatter, "heatmap": _heatmap, "western_blot": _western,
    "flow_cytometry": _flow, "diagram": _diagram, "photograph": _photo,
}

CHARTS = {"bar_chart", "line_chart", "scatter_plot", "heatmap", "flow_cytometry"}

METHODS = [
    "All experiments were performed in triplicate.",
    "Representative images from three independent experiments are shown.",
    "Samples were collected from patients enrolled between 2015 and 2019.",
    "Data were analysed with GraphPad Prism 9.",
    "Images were processed identically with ImageJ (Fiji).",
    "Quantification was performed by two blinded observers.",
    "The experiment was repeated at least three times with similar results.",
    "Animals were randomly assigned to the treatment groups.",
]
CONTEXT = [
    "Tissue samples were fixed in 10% neutral-buffered formalin for 24 hours, dehydrated through "
    "graded ethanol and embedded in paraffin before sectioning.",
    "Acquisition parameters, including exposure time, gain and detector settings, were kept "
    "constant across all conditions so that intensities can be compared between panels.",
    "Regions of interest were selected at random by an investigator blinded to the group "
    "allocation, and at least five fields were analysed per sample.",
    "Outliers were identified with the ROUT method (Q = 1%) and retained in all analyses unless "
    "stated otherwise in the corresponding section of the Methods.",
    "Comparisons between more than two groups used one-way ANOVA followed by Tukey's multiple "
    "comparisons test; two groups were compared with the unpaired two-tailed t test.",
    "The cohort comprised consecutive patients referred to the tertiary care centre during the "
    "study period who met the inclusion criteria described in the Methods.",
    "Source data for every panel are provided in the Supplementary Material, together with the "
    "uncropped images and the analysis scripts.",
]
ABBREVIATIONS = [
    "Abbreviations: CT, computed tomography; MRI, magnetic resonance imaging.",
    "Abbreviations: IHC, immunohistochemistry; DAB, 3,3′-diaminobenzidine.",
    "Abbreviations: SD, standard deviation; SEM, standard error of the mean.",
    "Abbreviations: WT, wild type; KO, knockout; NS, not significant.",
]


@dataclass(frozen=True)
class CaptionStyle:
    """Per-figure choices made by the corpus planner (so noise rates are exact per figure)."""

    layout: str = "title+p"  # "title+p" | "p" (no <title>) | "panels" (one <p> per panel)
    long: bool = False
    short: bool = False
    mathml: bool = False
    inline_graphic: bool = False
    citation: str = ""  # rid of a bibliography entry to cite, if any
    panel_style: str = "({})"  # "({})": "(A)", "(A–C)", "(A and B)"; "{}": Nature's bare "a", "a–c", "a, b"


RANGE_RATE = 0.22  # composite captions with a run of same-kind panels that describe it once: "(A–C) ..."


def panel_runs(kinds: list[str], rng: Generator) -> list[tuple[int, int]]:
    """The panels' (first, last) index of each described part, in order: one panel each, or
    (RANGE_RATE of the captions that can) one run of consecutive same-kind panels together."""
    runs, start = [], 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            if i - start > 1:
                runs.append((start, i - 1))
            start = i
    parts = [(i, i) for i in range(len(kinds))]
    if runs and rng.random() < RANGE_RATE:
        first, last = pick(rng, runs)
        parts = [*parts[:first], (first, last), *parts[last + 1:]]
    return parts


def panel_marker(panel_style: str, first: int, last: int, rng: Generator) -> str:
    """The marker of panels first..last as `panels.captions.split_caption` reads it: "(A)",
    "(A and B)", "(A, B)", "(A–C)", "(A-C)"; in the bare style lower case, as Nature prints it
    ("a", "a, b", "a–c"; a bare upper-case letter reads as English)."""
    a, b = chr(ord("A") + first), chr(ord("A") + last)
    if panel_style != "({})":
        a, b = a.lower(), b.lower()
        return a if first == last else f"{a}, {b}" if last == first + 1 else f"{a}–{b}"
    if first == last:
        return f"({a})"
    if last == first + 1:
        return pick(rng, (f"({a} and {b})", f"({a}, {b})"))
    return pick(rng, (f"({a}–{b})", f"({a}-{b})"))


def describe(kinds: list[str], attrs: list[Attrs], style: CaptionStyle, rng: Generator,
             inline_href: str = "") -> Caption:
    """Write the caption of a (possibly composite) figure whose panels are `kinds`/`attrs`.

    `inline_href` is the stem of the inline graphic embedded when the style asks for one.
    """
    first_title, first_details = WORDING[kinds[0]](attrs[0], rng)
    panels: list[list[Segment]] = []
    subcaptions: list[str] = []
    if len(kinds) == 1:
        title = first_title + "."
        if not (style.short and len(title.split()) >= 10):  # else title-only, as many real ones are
            panels.append([" ".join(first_details or [pick(rng, METHODS)])])
    else:
        title = sentence(rng, "{t} and associated analyses.", "{t}: multi-panel figure.",
                         "{t}.", t=first_title)
        for first, last in panel_runs(kinds, rng):
            panel_title, panel_details = WORDING[kinds[first]](attrs[first], rng)
            text = f" {upper_first(panel_title)}."
            if not style.short:
                text += " " + " ".join(panel_details)
            letter = panel_marker(style.panel_style, first, last, rng)
            mark: Segment = Markup("bold", text=letter) if style.layout == "panels" else letter
            panels.append([mark, text])
            subcaptions += [" ".join(text.split())] * (last - first + 1)
    extra: list[Segment] = []
    if style.citation:
        extra += [" Adapted from reference ", Markup("xref", text="12", ref=style.citation), "."]
    if style.mathml:
        if set(kinds) & CHARTS or rng.random() < 0.5:
            extra += [" Statistical significance: ",
                      Markup("math", math=(("mi", "p"), ("mo", "<"), ("mn", "0.05"))),
                      " (two-tailed ", Markup("italic", text="t"), " test)."]
        else:
            extra += [" Signal intensity scaled as ",
                      Markup("math", math=(("mi", "I"), ("mo", "="), ("msub", "I|0"),
                                           ("mo", "·"), ("msup", "e|−kt"))), "."]
    if style.inline_graphic:
        extra += [" Marker ", Markup("inline_graphic", ref=inline_href),
                  " indicates the region of interest."]
    if set(kinds) & CHARTS and not style.short:
        n = int(3 + rng.integers(10))
        extra += [" Data are presented as mean ± SD (", Markup("italic", text="n"), f" = {n})."]
    if style.long:
        extra += [" " + " ".join(METHODS[int(i)] for i in rng.permutation(len(METHODS))[:4])]
        extra += [" " + " ".join(CONTEXT[int(i)] for i in rng.permutation(len(CONTEXT))[:int(3 + rng.integers(5))])]
        extra += [" " + pick(rng, ABBREVIATIONS)]
        extra += [" ", Markup("sup", text="*"), "Values in the text refer to the same panels."]
    body = [seg for panel in panels for seg in [" ", *panel]] + extra
    if style.layout == "panels":
        paragraphs = [*panels, extra] if extra else panels
        caption = Caption(title=[title], paragraphs=[_tidy(p) for p in paragraphs])
    elif style.layout == "p":
        caption = Caption(title=[], paragraphs=[_tidy([title, " ", *body])])
    else:
        caption = Caption(title=[title], paragraphs=[_tidy(body)] if body else [])
    if subcaptions:
        caption.subcaptions = subcaptions
        caption.shared = " ".join(" ".join(text.split()) for text in (title, segments_text(extra)) if text.strip())
    return caption


def _tidy(paragraph: list[Segment]) -> list[Segment]:
    """Drop empty strings and the leading space of a paragraph."""
    kept = [seg for seg in paragraph if seg != ""]
    while kept and isinstance(kept[0], str) and not kept[0].strip():
        kept.pop(0)
    if kept and isinstance(kept[0], str):
        kept[0] = kept[0].lstrip()
    return kept
