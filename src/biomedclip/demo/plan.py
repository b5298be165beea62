"""Every random decision about a demo article, made before any pixel is drawn.

Article `i` is planned from its own seed sequence `(seed, CORPUS_STREAM, i)`, so it does not
depend on how many articles are generated: a corpus of 1,200 articles starts with the same 600
articles as a corpus of 600, which is how the demo "grows" like PMC does. Noise is decided per
article and per figure by draws against the configured rates.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.random import Generator

from biomedclip.demo.article import COMMERCIAL_LICENSES, JOURNALS, NON_COMMERCIAL_LICENSES
from biomedclip.demo.captions import CaptionStyle
from biomedclip.demo.figures import RENDERERS, pick
from biomedclip.demo.params import DemoParams, SideRange
from biomedclip.demo.prose import TOPICS

CORPUS_STREAM = 1
BENCHMARK_STREAM = 2

KINDS = tuple(RENDERERS)
CHART_KINDS = ("bar_chart", "line_chart", "scatter_plot", "heatmap")
# Article domains and the figure types they mostly publish.
DOMAINS = {
    "pathology": ("he_histology", "ihc", "bar_chart", "photograph"),
    "radiology": ("chest_xray", "ct", "mri", "ultrasound", "line_chart", "diagram"),
    "cell biology": ("fluorescence", "electron_microscopy", "western_blot", "flow_cytometry",
                     "bar_chart", "heatmap"),
    "clinical research": ("bar_chart", "line_chart", "scatter_plot", "diagram", "heatmap",
                          "photograph"),
}
ARTICLE_TYPES = (("research-article", 0.85), ("review-article", 0.08), ("case-report", 0.07))


def rng_for(seed: int, stream: int, index: int) -> Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def new_seed(rng: Generator) -> int:
    return int(rng.integers(2**62))


@dataclass(frozen=True)
class PanelPlan:
    kind: str
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class GraphicPlan:
    panels: tuple[PanelPlan, ...]
    columns: int
    encoding: str  # "jpeg", "png" or a noise encoding (NoiseRates.ENCODINGS)
    condition: str  # "ok" or a noise condition (NoiseRates.CONDITIONS)
    encode_seed: int
    thumbnail: bool = False
    duplicate_of: tuple[int, int] | None = None  # (article index, figure index) of the source

    @property
    def noise(self) -> set[str]:
        tags = {self.condition, self.encoding} - {"ok", "jpeg", "png"}
        for name, on in (("thumbnail", self.thumbnail), ("composite", len(self.panels) > 1),
                         ("duplicate_image", self.duplicate_of is not None)):
            if on:
                tags.add(name)
        return tags


@dataclass(frozen=True)
class FigurePlan:
    graphics: tuple[GraphicPlan, ...]
    caption_seed: int
    caption_style: CaptionStyle
    no_caption: bool = False
    empty_caption_element: bool = False
    in_alternatives: bool = False
    placement: str = "body"
    group: int = 0  # members of one <fig-group> share a non-zero group number

    @property
    def noise(self) -> frozenset[str]:
        """The noise kinds this figure carries, derived from the plan itself."""
        tags = set().union(*(g.noise for g in self.graphics))
        style = self.caption_style
        flags = {
            "multiple_graphics": len(self.graphics) > 1,
            "fig_group": self.group != 0,
            "back_matter": self.placement == "back",
            "no_caption": self.no_caption,
            "alternatives": self.in_alternatives,
            "mathml": style.mathml and not self.no_caption,
            "inline_graphic": style.inline_graphic and not self.no_caption,
            "citation": bool(style.citation) and not self.no_caption,
        }
        return frozenset(tags | {name for name, on in flags.items() if on})


@dataclass(frozen=True)
class ArticlePlan:
    index: int
    pmcid: int
    pmid: int
    journal: int
    key: int
    pub_date: dt.date
    topic: str
    domain: str
    article_type: str
    license_code: str
    retracted: bool
    versions: int
    floats_group: bool
    supplements: int
    text_seed: int
    figures: tuple[FigurePlan, ...]
    license_style: str = "ali"  # how <permissions> states the licence: ali | xlink | text | none
    graphical_abstract: bool = False
    table_graphic: bool = False
    formula_graphic: bool = False
    jats_namespace: bool = False

    @property
    def noise(self) -> frozenset[str]:
        flags = {
            "graphical_abstract": self.graphical_abstract,
            "table_graphic": self.table_graphic,
            "formula_graphic": self.formula_graphic,
            "jats_namespace": self.jats_namespace,
            "non_cc_license": self.license_code == "NO-CC CODE",
            "non_commercial_license": self.license_code in NON_COMMERCIAL_LICENSES,
            "retracted": self.retracted,
            "multiple_versions": self.versions > 1,
            "floats_group": self.floats_group and bool(self.figures),
            "no_figures": not self.figures,
            "supplementary_material": self.supplements > 0,
        }
        return frozenset(name for name, on in flags.items() if on)


def _categorical(rng: Generator, rates: dict[str, float], default: str) -> str:
    roll, edge = rng.random(), 0.0
    for name, rate in rates.items():
        edge += rate
        if roll < edge:
            return name
    return default


class Planner:
    """Plans articles of one corpus; remembers earlier plans that duplicates point back to."""

    def __init__(self, params: DemoParams) -> None:
        self.params = params
        self.noise = params.noise
        self._cache: dict[int, ArticlePlan] = {}

    def article(self, index: int) -> ArticlePlan:
        if index not in self._cache:
            self._cache[index] = self._plan_article(index)
        return self._cache[index]

    # --- articles ---------------------------------------------------------------------------

    def _license(self, rng: Generator) -> str:
        roll = rng.random()
        if roll < self.noise.non_cc_license:
            return "NO-CC CODE"
        if roll < self.noise.non_cc_license + self.noise.non_commercial_license:
            return pick(rng, NON_COMMERCIAL_LICENSES)
        return str(rng.choice(COMMERCIAL_LICENSES, p=[0.8, 0.1, 0.05, 0.05]))

    def _plan_article(self, index: int) -> ArticlePlan:
        p, noise = self.params, self.noise
        rng = rng_for(p.seed, CORPUS_STREAM, index)
        license_code = self._license(rng)
        retracted = bool(rng.random() < noise.retracted)
        versions = int(2 + rng.integers(2)) if rng.random() < noise.multiple_versions else 1
        floats_group = bool(rng.random() < noise.floats_group)
        supplements = int(1 + rng.integers(2)) if rng.random() < noise.supplementary_material else 0
        no_figures = bool(rng.random() < noise.no_figures)
        extras = {name: bool(rng.random() < getattr(noise, name)) for name in
                  ("graphical_abstract", "table_graphic", "formula_graphic", "jats_namespace")}
        license_style = str(rng.choice(["ali", "xlink", "text", "none"], p=[0.6, 0.15, 0.2, 0.05]))
        journal = int(rng.integers(len(JOURNALS)))
        domain = pick(rng, list(DOMAINS))
        days = (p.snapshot_date - dt.date(2015, 1, 1)).days - 30
        figures: list[FigurePlan] = []
        if not no_figures:
            count = int(rng.integers(p.figures_per_article.min, p.figures_per_article.max + 1))
            for slot in range(count):
                figures.extend(self._plan_figure_slot(rng, index, slot, domain, journal, floats_group))
        return ArticlePlan(
            index=index,
            pmcid=p.first_pmcid + 3 * index + int(rng.integers(3)),
            pmid=30_000_000 + 7 * index + int(rng.integers(7)),
            journal=journal,
            key=100_000 + 17 * index + int(rng.integers(17)),  # unique: DOIs never collide
            pub_date=dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(days))),
            topic=pick(rng, TOPICS),
            domain=domain,
            article_type=str(rng.choice([t for t, _ in ARTICLE_TYPES], p=[w for _, w in ARTICLE_TYPES])),
            license_code=license_code,
            retracted=retracted,
            versions=versions,
            floats_group=floats_group,
            supplements=supplements,
            text_seed=new_seed(rng),
            figures=tuple(figures),
            license_style=license_style,
            **extras,
        )

    # --- figures ----------------------------------------------------------------------------

    def _kind(self, rng: Generator, domain: str) -> str:
        return pick(rng, DOMAINS[domain]) if rng.random() < 0.7 else pick(rng, KINDS)

    def _size(self, rng: Generator, lo: int, hi: int, kind: str, median: int | None = None) -> tuple[int, int]:
        """(width, height) with the longer side in [lo, hi] (uniform, or log-normal around
        `median`) and an aspect ratio in [0.6, 1.4]."""
        if median is None:
            side = int(rng.integers(lo, hi + 1))
        else:
            side = int(np.clip(round(median * math.exp(SideRange.SPREAD * rng.standard_normal())), lo, hi))
        aspect = 1.0 if kind in ("chest_xray", "mri", "ct") else 0.6 + 0.8 * rng.random()
        if aspect <= 1.0:
            return side, max(lo // 2, int(side * aspect))
        return max(lo // 2, int(side / aspect)), side

    def _panels(self, rng: Generator, kind: str, composite: bool) -> tuple[tuple[PanelPlan, ...], int]:
        side = self.params.image_side
        if not composite:
            w, h = self._size(rng, side.min, side.max, kind, side.median)
            return (PanelPlan(kind, new_seed(rng), w, h),), 1
        count = int(rng.choice([2, 3, 4, 6], p=[0.35, 0.25, 0.3, 0.1]))
        columns = 2 if count in (2, 4) else 3
        if side.median is None:
            hi = max(64, side.max // 2)
            lo = min(hi, max(64, side.min * 3 // 4))
            w, h = self._size(rng, lo, hi, kind)
        else:  # the whole figure follows the profile: each panel a column's share of it
            hi = max(64, side.max // columns)
            lo = min(hi, max(64, side.min * 3 // 4))
            w, h = self._size(rng, lo, hi, kind, max(lo, min(hi, side.median // columns)))
        panels = [PanelPlan(kind, new_seed(rng), w, h)]
        for _ in range(count - 1):
            other = kind if rng.random() < 0.6 else pick(rng, CHART_KINDS)
            panels.append(PanelPlan(other, new_seed(rng), w, h))
        return tuple(panels), columns

    def _graphic(self, rng: Generator, kind: str, composite: bool) -> GraphicPlan:
        noise = self.noise
        panels, columns = self._panels(rng, kind, composite)
        condition = _categorical(rng, {c: getattr(noise, c) for c in noise.CONDITIONS}, "ok")
        default = "png" if kind in CHART_KINDS and rng.random() < 0.4 else "jpeg"
        encoding = _categorical(rng, {e: getattr(noise, e) for e in noise.ENCODINGS}, default)
        if condition == "huge_image":  # a PNG bomb, or a JPEG whose header claims huge sides
            encoding = "png" if rng.random() < 0.5 else "jpeg"
        thumbnail = condition == "ok" and encoding != "gif" and rng.random() < noise.thumbnail
        return GraphicPlan(panels, columns, encoding, condition, new_seed(rng), thumbnail)

    def _caption_style(self, rng: Generator, journal: int, composite: bool) -> CaptionStyle:
        noise = self.noise
        length = rng.random()
        layout = rng.random()
        return CaptionStyle(
            layout="panels" if composite and layout < 0.5 else ("p" if layout > 0.7 else "title+p"),
            long=length < 0.12,
            short=length > 0.85,
            mathml=bool(rng.random() < noise.mathml),
            inline_graphic=bool(rng.random() < noise.inline_graphic),
            citation=f"B{int(1 + rng.integers(12))}" if rng.random() < noise.citation else "",
            panel_style=JOURNALS[journal].panel_style,
        )

    def _duplicate_source(self, rng: Generator, index: int) -> tuple[int, FigurePlan] | None:
        """A clean single-graphic figure of an earlier article, whose image bytes are reused."""
        source = self.article(int(rng.integers(index)))
        for f, fig in enumerate(source.figures):
            if len(fig.graphics) == 1 and fig.graphics[0].condition == "ok" and not fig.group:
                return f, replace(fig, graphics=(replace(fig.graphics[0], thumbnail=False,
                                                         duplicate_of=(source.index, f)),))
        return None

    def _plan_figure_slot(self, rng: Generator, index: int, slot: int, domain: str, journal: int,
                          floats_group: bool) -> list[FigurePlan]:
        """One numbered figure: usually one <fig>, sometimes a <fig-group> of 2-3 members."""
        noise = self.noise
        kind = self._kind(rng, domain)
        placement = "floats" if floats_group else (
            "back" if rng.random() < noise.back_matter else "body")
        if rng.random() < noise.fig_group:
            return [
                FigurePlan((self._graphic(rng, kind, composite=False),), new_seed(rng),
                           self._caption_style(rng, journal, composite=False),
                           placement=placement, group=slot + 1)
                for m in range(int(2 + rng.integers(2)))
            ]
        composite = bool(rng.random() < noise.composite)
        graphics = [self._graphic(rng, kind, composite)]
        if not composite and rng.random() < noise.multiple_graphics:
            graphics.append(self._graphic(rng, kind, composite=False))
        style = self._caption_style(rng, journal, composite)
        caption_seed = new_seed(rng)
        no_caption = bool(rng.random() < noise.no_caption)
        empty_element = bool(no_caption and rng.random() < 0.5)
        in_alternatives = bool(rng.random() < noise.alternatives)
        if index > 0 and rng.random() < noise.duplicate_image:
            same_caption = rng.random() < 0.5
            found = self._duplicate_source(rng, index)
            if found is not None:
                _, source = found
                graphics = list(source.graphics)
                if same_caption:
                    style, caption_seed = source.caption_style, source.caption_seed
        return [FigurePlan(tuple(graphics), caption_seed, style, no_caption, empty_element,
                           in_alternatives, placement)]
