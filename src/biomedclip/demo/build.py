"""Turn article plans into article versions: images encoded, captions written, truth recorded.

The truth is what a perfect ingest would conclude about each figure graphic (its caption text,
its media file, the noise it carries); tests of the demo corpus and of the ingest compare
against it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from biomedclip.demo import prose
from biomedclip.demo.article import JOURNALS, ArticleVersion, Figure, Supplement
from biomedclip.demo.captions import Caption, describe
from biomedclip.demo.compound import (
    COMPOUND_STREAM,
    SINGLE_LETTERED,
    corpus_figure,
    lettered_single,
)
from biomedclip.demo.encoding import EXTENSIONS, bomb_png, corrupt, encode, huge_jpeg
from biomedclip.demo.figures import Attrs, render
from biomedclip.demo.figures.laboratory import formula_image, table_image
from biomedclip.demo.plan import ArticlePlan, FigurePlan, GraphicPlan, Planner, new_seed, rng_for

CORPUS_LAYOUT = 2  # the index, in compound.COMPOUND_STREAM, of a corpus graphic's layout draws


@dataclass(frozen=True)
class RenderedGraphic:
    data: bytes | None  # None: the media file is missing
    kinds: list[str]
    attrs: list[Attrs]
    damage: str = ""  # how a corrupt image was damaged
    thumbnail: bytes | None = None
    layout: str = ""  # of a composite or a lettered single image: "grid-2x2-gutter8", "single-lettered"...
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # its panels, normalised, reading order


def render_graphic(g: GraphicPlan, may_letter: bool = False) -> RenderedGraphic:
    """Draw, lay out and encode one graphic; identical plans give identical bytes.

    A composite is laid out by `compound.corpus_figure`; a single image gets a panel letter drawn
    on it (SINGLE_LETTERED of them) if `may_letter` (the figure's one graphic). Both from the
    graphic's own seed, and with the panel boxes recorded."""
    kinds = [p.kind for p in g.panels]
    layout_rng = rng_for(g.encode_seed, COMPOUND_STREAM, CORPUS_LAYOUT)
    figure = None
    if len(g.panels) > 1:
        figure, attrs = corpus_figure(layout_rng, g.panels, g.columns)
        img = figure.image
    else:
        p = g.panels[0]
        img, attr = render(p.kind, p.seed, p.width, p.height)
        attrs = [attr]
        if may_letter and layout_rng.random() < SINGLE_LETTERED:
            figure = lettered_single(layout_rng, img, p.kind)
            img = figure.image
    layout, boxes = (figure.layout, tuple(t.box for t in figure.panels)) if figure else ("", ())
    rng = np.random.default_rng(g.encode_seed)
    if g.condition == "missing_media":
        return RenderedGraphic(None, kinds, attrs, layout=layout, boxes=boxes)
    if g.condition == "huge_image":
        width, height = int(13_000 + rng.integers(11_000)), int(13_000 + rng.integers(11_000))
        data = bomb_png(width, height) if g.encoding == "png" else huge_jpeg(img, width, height)
        return RenderedGraphic(data, kinds, attrs, layout=layout, boxes=boxes)
    if g.condition == "tiny_image":
        img = img.resize((int(6 + rng.integers(18)), int(6 + rng.integers(18))),
                         Image.Resampling.BILINEAR)
    data = encode(img, g.encoding, rng)
    damage = ""
    if g.condition == "corrupt_image":
        data, damage = corrupt(data, rng)
    thumb = None
    if g.thumbnail:
        small = img.resize((100, max(1, 100 * img.height // img.width)), Image.Resampling.BILINEAR)
        thumb = encode(small, "gif", np.random.default_rng(g.encode_seed + 1))
    return RenderedGraphic(data, kinds, attrs, damage, thumb, layout, boxes)


def panel_truth(r: RenderedGraphic, caption: Caption | None) -> dict[str, Any] | None:
    """Where each panel of a composite (or lettered single) graphic is and what the caption says of
    it: its letter (the caption's, upper case), box (normalised to the image as encoded) and
    sub-caption, and what the caption says of all panels. One panel: the whole caption is shared."""
    if not r.layout:
        return None
    if len(r.boxes) == 1:
        subcaptions, shared = [""], caption.plain() if caption else ""
    else:
        subcaptions = caption.subcaptions if caption else [""] * len(r.boxes)
        shared = caption.shared if caption else ""
    panels = [{"letter": chr(ord("A") + i), "box": [round(v, 6) for v in box], "subcaption": text}
              for i, (box, text) in enumerate(zip(r.boxes, subcaptions, strict=True))]
    return {"layout": r.layout, "panels": panels, "shared": shared}


def figure_caption(fig: FigurePlan, rendered: list[RenderedGraphic], inline_href: str) -> Caption | None:
    if fig.no_caption:
        return None
    return describe(rendered[0].kinds, rendered[0].attrs, fig.caption_style,
                    np.random.default_rng(fig.caption_seed), inline_href)


class ArticleBuilder:
    """Builds every version of planned articles, with the truth rows of the newest one."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.params = planner.params

    def _names(self, plan: ArticlePlan) -> dict[str, Any]:
        year = plan.pub_date.year
        return {"key": f"{plan.key:06d}", "year": year, "yy": year % 1000, "vol": year - 2008,
                "check": plan.key % 10}

    def build(self, plan: ArticlePlan) -> tuple[list[ArticleVersion], dict[str, Any]]:
        """All versions of the article (oldest first) and the truth about the newest."""
        journal = JOURNALS[plan.journal]
        names = self._names(plan)
        rng = np.random.default_rng(plan.text_seed)
        figures: list[Figure] = []
        fig_media: list[list[str]] = []  # media files of each figure, to drop with it
        media: dict[str, bytes] = {}
        truth: list[dict[str, Any]] = []
        groups: dict[int, list[Figure]] = {}
        number = 0
        for position, fig in enumerate(plan.figures):
            if not fig.group or fig.group not in groups:
                number += 1
            member = chr(ord("A") + len(groups.get(fig.group, []))) if fig.group else ""
            fig_id = journal.fig_id.format(n=number, **names) + member.lower()
            label = journal.label.format(n=number) + member
            rendered = [render_graphic(g, may_letter=len(fig.graphics) == 1 and not fig.group)
                        for g in fig.graphics]
            inline_href = journal.inline.format(n=position + 1, **names)
            caption = figure_caption(fig, rendered, inline_href)
            hrefs, files = [], []
            for k, (g, r) in enumerate(zip(fig.graphics, rendered, strict=True)):
                part = member.lower() + ("" if len(fig.graphics) == 1 else chr(ord("a") + k))
                stem = journal.media.format(n=number, part=part, **names)
                hrefs.append(stem)
                filename = stem + EXTENSIONS[g.encoding]
                if r.data is not None:
                    files.append(filename)
                    media[filename] = r.data
                if r.thumbnail is not None:
                    files.append(stem + ".gif")
                    media[stem + ".gif"] = r.thumbnail
                truth.append({
                    "figure": position, "fig_id": fig_id, "label": label, "href": stem,
                    "media_file": filename if r.data is not None else None,
                    "caption": caption.plain() if caption else None,
                    "kinds": r.kinds, "panels": len(r.kinds), "condition": g.condition,
                    "encoding": g.encoding, "damage": r.damage, "placement": fig.placement,
                    "group": fig.group, "duplicate_of": g.duplicate_of,
                    "noise": sorted(fig.noise), "panel_truth": panel_truth(r, caption),
                })
            if caption and fig.caption_style.inline_graphic:
                glyph = Image.new("RGB", (18, 12), (255, 255, 255))
                ImageDraw.Draw(glyph).polygon([(2, 10), (9, 1), (16, 10)], fill=(0, 0, 0))
                files.append(inline_href + ".gif")
                media[inline_href + ".gif"] = encode(glyph, "gif", rng)
            record = Figure(fig_id, label, caption, hrefs, fig.empty_caption_element,
                            fig.in_alternatives, fig.placement)
            if fig.group:
                record.group_id = journal.fig_id.format(n=number, **names) + "-group"
                if fig.group not in groups:
                    groups[fig.group] = []
                    record.group_caption = Caption(title=[f"{journal.label.format(n=number)} overview."])
                groups[fig.group].append(record)
            figures.append(record)
            fig_media.append(files)
        supplements = []
        for s in range(1, plan.supplements + 1):
            filename = journal.supplement.format(n=s, **names) + ".csv"
            rows = "\n".join(f"{i},{rng.integers(1000)},{rng.integers(1000)}" for i in range(20))
            media[filename] = f"id,value_a,value_b\n{rows}\n".encode()
            supplements.append(Supplement(f"S{s}", f"Supplementary Table S{s}",
                                          "Source data for the figures.", filename))
        extras = self._non_figure_graphics(plan, rng, media)
        pmcid = f"PMC{plan.pmcid}"
        doi = journal.doi.format(**names)
        days_to_update = int(rng.integers(1, 25))
        published = dt.datetime.combine(plan.pub_date, dt.time(3, 0))
        newest = ArticleVersion(
            pmcid=pmcid, version=plan.versions, pmid=plan.pmid,
            doi=doi, publisher_id=doi.split("/", 1)[1],
            journal=journal, title=prose.title(rng, plan.topic), article_type=plan.article_type,
            license_code=plan.license_code, retracted=plan.retracted, pub_date=plan.pub_date,
            last_updated=published + dt.timedelta(days=days_to_update, seconds=int(rng.integers(86_400))),
            volume=names["vol"], authors=prose.authors(rng), abstract=prose.abstract(rng, plan.topic),
            sections=prose.sections(rng, plan.topic, citations(figures)), figures=figures,
            supplements=supplements, references=prose.references(rng, 12), media=media,
            license_style=plan.license_style, jats_namespace=plan.jats_namespace, **extras,
        )
        versions = [self._older(plan, newest, fig_media, v, published + dt.timedelta(
            days=days_to_update * v // plan.versions, hours=v)) for v in range(1, plan.versions)]
        article_truth = {
            "index": plan.index, "pmcid": pmcid, "version": plan.versions, "pmid": plan.pmid,
            "license_code": plan.license_code, "retracted": plan.retracted,
            "figures": len(plan.figures), "noise": sorted(plan.noise), "graphics": truth,
        }
        return [*versions, newest], article_truth

    @staticmethod
    def _non_figure_graphics(plan: ArticlePlan, rng: np.random.Generator,
                             media: dict[str, bytes]) -> dict[str, Any]:
        """Graphics a figure miner must not take for figures: graphical abstract, table and
        equation images."""
        extras: dict[str, Any] = {"graphical_abstract": "", "tables": [], "formulas": []}
        if plan.graphical_abstract:
            image, _ = render("diagram", new_seed(rng), 320, 200)
            media["fx1.jpg"] = encode(image, "jpeg", rng)
            extras["graphical_abstract"] = "fx1"
        if plan.table_graphic:
            media["table1.png"] = encode(table_image(rng, 360, 240), "png", rng)
            extras["tables"] = [("tbl1", "Table 1", "Baseline characteristics of the study "
                                 "participants by group; values are n (%) or median (IQR).", "table1")]
        if plan.formula_graphic:
            media["equation1.gif"] = encode(formula_image(rng, 220, 40), "gif", rng)
            extras["formulas"] = [("E1", "equation1.gif")]
        return extras

    @staticmethod
    def _older(plan: ArticlePlan, newest: ArticleVersion, fig_media: list[list[str]], version: int,
               updated: dt.datetime) -> ArticleVersion:
        """An earlier version: the last figure not yet added, text and media to match."""
        keep = len(newest.figures) - 1 if len(newest.figures) > 1 else len(newest.figures)
        figures = newest.figures[:keep]
        dropped = {name for files in fig_media[keep:] for name in files}
        media = {name: data for name, data in newest.media.items() if name not in dropped}
        sections = prose.sections(np.random.default_rng([plan.text_seed, version]), plan.topic,
                                  citations(figures))
        return replace(newest, version=version, figures=figures, media=media, sections=sections,
                       last_updated=updated)


def citations(figures: list[Figure]) -> list[tuple[str, str]]:
    """(rid, text) of each figure, or of each figure group once, in order of appearance."""
    cited: list[tuple[str, str]] = []
    for fig in figures:
        if not fig.group_id:
            cited.append((fig.fig_id, fig.label))
        elif fig.group_id not in {rid for rid, _ in cited}:
            cited.append((fig.group_id, fig.label.rstrip("ABCDEFGH")))
    return cited
