"""What a demo article is: the records the JATS writer and the layout writers serialise."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from biomedclip.demo.captions import Caption, Segment


@dataclass(frozen=True)
class Journal:
    """A journal's identity and its publisher's naming habits (figure labels, media names)."""

    title: str
    nlm_ta: str
    publisher: str
    issn: str
    doi: str  # format fields: key, year, vol, yy, check
    media: str  # media file stem; fields: key, year, vol, n, part (a, b... or empty)
    fig_id: str
    supplement: str
    inline: str  # inline-graphic stem; fields: key, year, vol, n
    label: str  # "Fig {n}", "Figure {n}", "Fig. {n}"
    panel_style: str  # "({})" or "{}"
    manuscript: bool = False


JOURNALS = (
    Journal("PLoS ONE", "PLoS One", "Public Library of Science", "1932-6203",
            "10.1371/journal.pone.0{key}", "pone.0{key}.g{n:03d}{part}", "pone.0{key}.g{n:03d}",
            "pone.0{key}.s{n:03d}", "pone.0{key}.e{n:03d}", "Fig {n}", "({})"),
    Journal("Scientific Reports", "Sci Rep", "Nature Publishing Group UK", "2045-2322",
            "10.1038/s41598-{yy:03d}-{key}-{check}", "41598_{year}_{key}_Fig{n}{part}_HTML", "Fig{n}",
            "41598_{year}_{key}_MOESM{n}_ESM", "41598_{year}_{key}_Article_IEq{n}_HTML", "Figure {n}", "{}"),
    Journal("Frontiers in Immunology", "Front Immunol", "Frontiers Media S.A.", "1664-3224",
            "10.3389/fimmu.{year}.{key}", "fimmu-{vol}-{key}-g{n:03d}{part}", "F{n}", "Data_Sheet_{n}",
            "fimmu-{vol}-{key}-i{n:03d}", "Figure {n}", "({})"),
    Journal("BMC Cancer", "BMC Cancer", "BioMed Central", "1471-2407",
            "10.1186/s12885-{yy:03d}-{key}-{check}", "12885_{year}_{key}_Fig{n}{part}_HTML", "Fig{n}",
            "12885_{year}_{key}_MOESM{n}_ESM", "12885_{year}_{key}_Article_IEq{n}_HTML", "Fig. {n}", "{}"),
    Journal("Cancers", "Cancers (Basel)", "MDPI", "2072-6694", "10.3390/cancers{vol}{key}",
            "cancers-{vol}-{key}-g{n:03d}{part}", "cancers-{vol}-{key}-f{n:03d}",
            "cancers-{vol}-{key}-s{n:03d}", "cancers-{vol}-{key}-i{n:03d}", "Figure {n}", "({})"),
    Journal("eLife", "eLife", "eLife Sciences Publications, Ltd", "2050-084X",
            "10.7554/eLife.{key}", "elife-{key}-fig{n}{part}", "fig{n}", "elife-{key}-supp{n}",
            "elife-{key}-inf{n}", "Figure {n}", "({})"),
    Journal("Cell Reports", "Cell Rep", "Elsevier", "2211-1247", "10.1016/j.celrep.{year}.{key}",
            "nihms{key}f{n}{part}", "F{n}", "nihms{key}s{n}", "nihms{key}ueq{n}", "Figure {n}", "({})",
            manuscript=True),
)

LICENSES = {  # license_code (PMC metadata) → licence URL in the JATS <ali:license_ref>
    "CC BY": "https://creativecommons.org/licenses/by/4.0/",
    "CC0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "CC BY-SA": "https://creativecommons.org/licenses/by-sa/4.0/",
    "CC BY-ND": "https://creativecommons.org/licenses/by-nd/4.0/",
    "CC BY-NC": "https://creativecommons.org/licenses/by-nc/4.0/",
    "CC BY-NC-SA": "https://creativecommons.org/licenses/by-nc-sa/4.0/",
    "CC BY-NC-ND": "https://creativecommons.org/licenses/by-nc-nd/4.0/",
    "NO-CC CODE": "",
}
COMMERCIAL_LICENSES = ("CC BY", "CC0", "CC BY-SA", "CC BY-ND")
NON_COMMERCIAL_LICENSES = ("CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND")


@dataclass(frozen=True)
class FigRef:
    """An in-text citation of a figure: <xref ref-type="fig" rid=...>text</xref>."""

    rid: str
    text: str


Paragraph = list[Segment | FigRef]


@dataclass
class Figure:
    fig_id: str
    label: str
    caption: Caption | None
    hrefs: list[str]  # <graphic xlink:href> values: media stems, no extension
    empty_caption_element: bool = False  # no caption text, but an empty <caption><p/></caption>
    in_alternatives: bool = False
    placement: str = "body"  # "body" | "floats" | "back"
    group_id: str = ""  # members of one <fig-group> share it
    group_caption: Caption | None = None


@dataclass(frozen=True)
class Supplement:
    sup_id: str
    label: str
    caption: str
    filename: str


@dataclass
class ArticleVersion:
    """One version of one article: everything PMC holds under `PMC{id}.{v}/`."""

    pmcid: str
    version: int
    pmid: int
    doi: str
    publisher_id: str
    journal: Journal
    title: str
    article_type: str
    license_code: str
    retracted: bool
    pub_date: dt.date
    last_updated: dt.datetime
    volume: int
    authors: list[tuple[str, str]]
    abstract: list[str]
    sections: list[tuple[str, list[Paragraph]]]
    figures: list[Figure]
    supplements: list[Supplement]
    references: list[tuple[str, str]]  # (ref id, citation text)
    media: dict[str, bytes] = field(default_factory=dict)  # filename → bytes
    license_style: str = "ali"  # <permissions>: ali:license_ref | license/@xlink:href | text | none
    jats_namespace: bool = False  # elements in the JATS 1.3 default namespace
    graphical_abstract: str = ""  # href of the abstract's unlabelled, uncaptioned <fig>
    tables: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, label, caption, href
    formulas: list[tuple[str, str]] = field(default_factory=list)  # id, href (with extension)

    @property
    def prefix(self) -> str:
        return f"{self.pmcid}.{self.version}"

    @property
    def citation(self) -> str:
        d = self.pub_date
        return f"{self.journal.nlm_ta}. {d.year} {d:%b} {d.day}; {self.volume}:{self.publisher_id}"
