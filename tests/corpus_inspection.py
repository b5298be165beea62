"""Read a demo corpus back from its files, independently of the generator's own records.

What a careful reader sees in the files — licences, versions, figure structure, caption markup,
image formats and damage — so tests can check that each kind of noise is really there.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree
from PIL import Image

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
MML_MATH = "{http://www.w3.org/1998/Math/MathML}math"
PREFIX = re.compile(r"^(PMC\d+)\.(\d+)$")
# Safe parsing: no DTD loading, no entities, no network.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
BOMB_PIXELS = 100_000_000
NON_COMMERCIAL = {"CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND"}


@dataclass
class GraphicSeen:
    article: str
    href: str
    files: list[str]
    missing: bool = False
    huge: bool = False
    corrupt: bool = False
    tiny: bool = False
    mode: str = ""
    suffix: str = ""
    sha256: str = ""
    frames: int = 1


@dataclass
class FigureSeen:
    article: str
    fig_id: str
    caption: str
    in_group: bool
    group_id: str
    in_back: bool
    in_floats: bool
    in_alternatives: bool
    mathml: bool
    inline_graphic: bool
    citation: bool
    graphics: list[GraphicSeen] = field(default_factory=list)


@dataclass
class ArticleSeen:
    pmcid: str
    versions: int
    meta: dict
    figures: list[FigureSeen]  # figures of the article proper (not the graphical abstract)
    supplementary: bool
    xml: etree._Element
    graphical_abstract: bool = False
    table_graphic: bool = False
    formula_graphic: bool = False


def local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def child(el: etree._Element, name: str) -> etree._Element | None:
    return next((c for c in el if local(c) == name), None)


def caption_text(caption: etree._Element | None) -> str:
    """Title + paragraphs, inline graphics contribute nothing, whitespace collapsed."""
    if caption is None:
        return ""
    parts = [" ".join(c.itertext()) for c in caption]
    return " ".join(" ".join(parts).split())


def _inspect_graphic(folder: Path, article: str, href: str, by_stem: dict[str, list[Path]]) -> GraphicSeen:
    files = sorted(by_stem.get(href, []), key=lambda p: (p.suffix == ".gif", p.name))
    seen = GraphicSeen(article, href, [p.name for p in files])
    if not files:
        seen.missing = True
        return seen
    main = files[0]
    seen.suffix = main.suffix
    data = main.read_bytes()
    seen.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncated files warn about EXIF; they are the point
            img = Image.open(main)
            if img.width * img.height > BOMB_PIXELS:
                seen.huge = True
                return seen
            seen.mode = img.mode
            seen.frames = getattr(img, "n_frames", 1)
            img.load()
            seen.tiny = min(img.size) < 32
    except Image.DecompressionBombError:
        seen.huge = True
    except Exception:
        seen.corrupt = True
    return seen


def inspect_corpus(root: Path) -> list[ArticleSeen]:
    versions: dict[str, list[int]] = defaultdict(list)
    for entry in root.iterdir():
        match = PREFIX.match(entry.name)
        if match:
            versions[match.group(1)].append(int(match.group(2)))
    articles = []
    for pmcid in sorted(versions):
        newest = max(versions[pmcid])
        folder = root / f"{pmcid}.{newest}"
        meta = json.loads((folder / f"{pmcid}.{newest}.json").read_text())
        xml = etree.parse(str(folder / f"{pmcid}.{newest}.xml"), PARSER).getroot()
        by_stem: dict[str, list[Path]] = defaultdict(list)
        for path in folder.iterdir():
            if not path.name.startswith(f"{pmcid}.{newest}."):
                by_stem[path.stem].append(path)
        figures = []
        graphical_abstract = False
        for fig in xml.iter("{*}fig"):
            ancestors = {local(a) for a in fig.iterancestors()}
            if "abstract" in ancestors:
                graphical_abstract = True
                continue
            caption = child(fig, "caption")
            graphics = list(fig.iter("{*}graphic"))
            parent = fig.getparent()
            seen = FigureSeen(
                article=pmcid, fig_id=fig.get("id"), caption=caption_text(caption),
                in_group=local(parent) == "fig-group",
                group_id=parent.get("id") if local(parent) == "fig-group" else "",
                in_back="back" in ancestors,
                in_floats="floats-group" in ancestors,
                in_alternatives=any(local(g.getparent()) == "alternatives" for g in graphics),
                mathml=caption is not None and next(caption.iter(MML_MATH), None) is not None,
                inline_graphic=caption is not None and next(caption.iter("{*}inline-graphic"), None) is not None,
                citation=caption is not None and any(x.get("ref-type") == "bibr" for x in caption.iter("{*}xref")),
            )
            seen.graphics = [_inspect_graphic(folder, pmcid, g.get(XLINK_HREF), by_stem) for g in graphics]
            figures.append(seen)
        articles.append(ArticleSeen(
            pmcid, len(versions[pmcid]), meta, figures,
            next(xml.iter("{*}supplementary-material"), None) is not None, xml,
            graphical_abstract=graphical_abstract,
            table_graphic=any(True for t in xml.iter("{*}table-wrap") if next(t.iter("{*}graphic"), None) is not None),
            formula_graphic=any(True for f in xml.iter("{*}disp-formula")
                                if next(f.iter("{*}graphic"), None) is not None),
        ))
    return articles
