"""Read a JATS article the way the ingest sees it: ids, licence, and every figure with its caption.

Safe on hostile XML: no DTD loading, no entity resolution, no network; a document that declares
entities in an internal DTD subset (XXE, "billion laughs") is refused outright. Namespace-blind:
PMC-normalised JATS (no namespace), OAI-PMH envelopes (default JATS namespace, unwrapped here)
and publisher JATS all parse the same way.

The traps pubmed_parser falls into are handled on purpose: every `<fig>` anywhere (body, back
matter, `<floats-group>`, each member of a `<fig-group>`); every `<graphic>` of a figure, including
inside `<alternatives>`; captions built per figure from that figure's own `<caption>` only, so a
figure without one is reported as such, never given its neighbour's text; MathML rendered as
readable text; inline graphics dropped.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from lxml import etree

from biomedclip.ingest.licenses import License, license_from_xml
from biomedclip.ingest.rejects import Reason, Rejected

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
MATHML = "http://www.w3.org/1998/Math/MathML"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False)

# Elements whose text a reader does not see in a caption.
_DROPPED = {"inline-graphic", "graphic", "media", "object-id", "label", "fn", "alt-text",
            "long-desc", "attrib", "permissions"}
# Block elements: their text is separated from the neighbours'.
_BLOCKS = {"title", "p", "list", "list-item", "def-list", "def-item", "disp-quote", "table-wrap",
           "disp-formula", "boxed-text", "sec"}
# MathML operators written with spaces around them ("p < 0.05", not "p<0.05").
_SPACED_OPERATORS = set("=<>≤≥≈≠±∓+−×÷·→←↔∝∼") | {"-"}
# Everything render_text treats other than as inline markup ("": comments and PIs).
_SPECIAL = _DROPPED | _BLOCKS | {"", "math", "inline-formula", "disp-formula"}


_ENTITY_DECLARATION = re.compile(rb"<!DOCTYPE[^\[>]*\[.*?<!ENTITY", re.DOTALL)
_ENTITY_NAME = re.compile(rb"<!ENTITY\s+(?:%\s+)?([\w.-]+)")


class JatsError(Rejected):
    """An article that cannot be read; `reason` is the reject code."""


class Figure(NamedTuple):  # a NamedTuple: immutable and cheap to build, millions of them
    fig_id: str
    label: str
    caption: str  # "" when the figure has no caption text
    graphics: tuple[str, ...]  # <graphic xlink:href> values, document order, unique
    group_id: str = ""  # the enclosing <fig-group>'s id, if any

    @property
    def panels(self) -> int:
        """Panel letters the caption names (composite figures), at least 1; computed on use."""
        return count_panels(self.caption)


class Article(NamedTuple):  # a NamedTuple, like Figure: a frozen dataclass costs 5× to build
    pmcid: str | None
    pmid: str | None
    doi: str | None
    title: str
    article_type: str
    license: License
    figures: tuple[Figure, ...] = ()
    year: int | None = None  # of publication (<pub-date>: electronic first), for the dataset card

    def to_json(self) -> dict[str, Any]:
        """The `biomedclip inspect --json` contract (DESIGN.md)."""
        return {
            "pmcid": self.pmcid,
            "pmid": self.pmid,
            "license": {"code": self.license.code, "url": self.license.url},
            "figures": [{"fig_id": f.fig_id, "label": f.label, "caption": f.caption,
                         "graphics": list(f.graphics)} for f in self.figures],
        }


_LOCAL_NAMES: dict[Any, str] = {}


def local(el: etree._Element) -> str:
    """Local name of an element ("" for comments and processing instructions); memoised."""
    tag = el.tag
    try:
        return _LOCAL_NAMES[tag]
    except KeyError:
        name = tag.rpartition("}")[2] if isinstance(tag, str) else ""
        if len(_LOCAL_NAMES) < 10_000:  # hostile documents cannot grow it without bound
            _LOCAL_NAMES[tag] = name
        return name


def first_child(el: etree._Element, tag: str) -> etree._Element | None:
    """The first child of `el` with exactly `tag`, or None: what `el.find(tag)` returns.

    A loop over the children: cheaper than `find` (lxml's ElementPath) or `iterchildren(tag)`
    (a tag matcher built per call) for what this module looks up, an early child.
    """
    for child in el:
        if child.tag == tag:
            return child
    return None


# What str.split() splits ASCII text on, besides " " (then "  ": a run of spaces).
_ASCII_SPACES = ("  ", "\n", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f")


def normalise_space(text: str) -> str:
    """Collapse runs of any Unicode whitespace (incl. no-break spaces) to one space, trim."""
    # Already normal: no split into words and back. ASCII text (isascii() reads a flag) is
    # searched for each other whitespace character, at memchr speed; other text is checked by
    # isprintable() (every whitespace but " " is non-printable: tabs, newlines, no-break and
    # other Unicode spaces), a table lookup per character, several times slower.
    if text.isascii():
        for space in _ASCII_SPACES:
            if space in text:
                return " ".join(text.split())
        return text.strip(" ")
    if text.isprintable() and "  " not in text:
        return text.strip(" ")
    return " ".join(text.split())


def _math_text(el: etree._Element) -> str:
    name = local(el)
    if name == "mo":
        op = normalise_space(el.text or "")
        return f" {op} " if op in _SPACED_OPERATORS else op
    if name in ("mi", "mn", "mtext", "ms"):
        return el.text or ""
    if name == "annotation" or name == "annotation-xml":
        return ""
    children = [_math_text(child) for child in el if isinstance(child.tag, str)]
    if name == "mfrac" and len(children) == 2:
        return f"{children[0]}/{children[1]}"
    if name in ("msqrt", "mroot") and children:
        return f"√({children[0]})"
    if name == "semantics" and children:
        return children[0]
    return "".join(children)


def render_text(el: etree._Element) -> str:
    """Readable text of an element: inline markup flattened, MathML rendered, noise dropped."""
    if not len(el):  # the common case: plain text
        return el.text or ""
    parts = [el.text or ""]
    for child in el:
        name = _LOCAL_NAMES.get(child.tag) or local(child)
        if name not in _SPECIAL:  # inline markup (<italic>, <xref>, ...): one set lookup
            parts.append((child.text or "") if not len(child) else render_text(child))
        elif not name or name in _DROPPED:  # comments, processing instructions; noise
            pass
        elif name == "math":
            parts.append(_math_text(child))
        elif name in _BLOCKS:
            parts += [" ", _list_item_text(child) if name == "list-item" else render_text(child), " "]
        else:  # inline-formula, disp-formula
            math = next(child.iter("{*}math"), None)
            if math is not None:
                parts.append(_math_text(math))
            else:
                tex = next(child.iter("{*}tex-math"), None)
                parts.append((tex.text or "").strip("$ ") if tex is not None else render_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _list_item_text(item: etree._Element) -> str:
    """A <list-item>'s text, led by its <label> as "(B, C) ..." when the label is its first child.

    Some journals write a caption's panels as a list whose labels are the panel letters; dropped
    like other labels, the letters would be lost to `count_panels` and the panel captions. A label
    of punctuation only (a bullet) is dropped as before; its own brackets and stops are not doubled.
    """
    text = render_text(item)
    first = next((child for child in item if isinstance(child.tag, str)), None)
    if first is None or local(first) != "label":
        return text
    label = normalise_space(render_text(first)).strip("().:; ")
    return f"({label}) {text}" if any(c.isalnum() for c in label) else text


# Each pattern starts with a literal, so the regex engine skips ahead instead of trying every
# position: (A), (A–C), (G and H) | ". a Schematic ...", "; a, b Mice ..." | a caption's start.
_PANEL_PAREN = re.compile(r"\(\s*([A-Ha-h])\s*(?:(?:[–\-,&]|and)\s*([A-Ha-h])\s*)?\)")
_PANEL_LEAD = re.compile(r"[.;]\s+([A-Ha-h])(?:\s*,\s*([A-Ha-h]))?\s+(?=[A-Z])")
_LETTER = {c: i % 8 for i, c in enumerate("ABCDEFGHabcdefgh")}
_PANEL_START = re.compile(r"([A-Ha-h])(?:\s*,\s*([A-Ha-h]))?\s+(?=[A-Z])")


def count_panels(caption: str) -> int:
    """Panels a caption names: "(A) ... (B)", "(A–C)", "(G and H)", "a Schematic ... b Plot".

    A heuristic (captions name panels in many ways); at least 1.
    """
    letters: set[int] = set()
    matches = [*(_PANEL_PAREN.finditer(caption) if "(" in caption else ()),
               *_PANEL_LEAD.finditer(caption)]
    if start := _PANEL_START.match(caption):
        matches.append(start)
    for first, last in (m.group(1, 2) for m in matches):
        a, b = _LETTER[first], _LETTER[last or first]
        letters.update(range(a, max(a, b) + 1))
    return len(letters) if 0 in letters else 1


def _strip_label(text: str, label: str) -> str:
    """Drop a leading copy of the label ("Figure 2. ...") that some publishers repeat."""
    bare = label.rstrip(".: ")
    if bare and text[: len(bare)].lower() == bare.lower():
        rest = text[len(bare):]
        if not rest[:1].isalnum():
            return rest.lstrip(".:|—–- ")
    return text


def caption_of(caption: etree._Element | None, label: str) -> str:
    """Title and paragraphs of a figure's own <caption>, as one normalised string."""
    if caption is None:
        return ""
    blocks = [caption.text or ""]  # text directly inside <caption>, rare
    previous = ""  # the block before, stripped
    for child in caption:
        name = _LOCAL_NAMES.get(child.tag) or local(child)
        if not name or name in _DROPPED:
            continue
        text = render_text(child).strip()
        if not text:
            continue
        if previous and previous[-1] not in ".!?:;" and previous.count("(") <= previous.count(")"):
            # A title (or title-like first <p>) without a full stop would run into the next
            # sentence; not when it was cut mid-phrase (an open parenthesis).
            blocks[-1] += "."
        blocks.append(text)
        previous = text
    return _strip_label(normalise_space(" ".join(blocks)), label)


def _add_href(hrefs: list[str], graphic: etree._Element) -> None:
    href = (graphic.get(XLINK_HREF) or graphic.get("href") or "").strip()
    if href and href not in hrefs:
        hrefs.append(href)


def _inside(el: etree._Element, top: etree._Element, tag: str) -> bool:
    """Whether an element between `el` and its ancestor `top` (both excluded) has `tag`."""
    parent = el.getparent()
    while parent is not top:
        if parent.tag == tag:
            return True
        parent = parent.getparent()
    return False


_new_figure = tuple.__new__  # Figure(...) without NamedTuple's keyword-handling __new__


def _figures(article: etree._Element, ns: str) -> tuple[Figure, ...]:
    """Every <fig> of the article; `ns` is the document's JATS namespace ("{...}" or "").

    A figure's graphics are its <graphic> children and those deeper (in <alternatives>), in
    document order, except inside a caption.
    """
    figures = []
    label_tag, caption_tag, graphic_tag = ns + "label", ns + "caption", ns + "graphic"
    group_tag = ns + "fig-group"
    last_parent, group = None, ""  # figures often share a parent: look at it once
    for fig in article.iter(ns + "fig"):
        label_el = caption_el = None
        hrefs: list[str] = []
        for child in fig:  # one pass over the children instead of a find() per element
            tag = child.tag
            if tag == graphic_tag:  # the common case: no walk below
                _add_href(hrefs, child)
            elif tag == caption_tag:  # the first is the caption
                caption_el = child if caption_el is None else caption_el
            else:
                if tag == label_tag and label_el is None:
                    label_el = child
                if len(child):  # <alternatives>, or deeper
                    for graphic in child.iter(graphic_tag):
                        if not _inside(graphic, child, caption_tag):
                            _add_href(hrefs, graphic)
        label = normalise_space(render_text(label_el)) if label_el is not None else ""
        parent = fig.getparent()
        if parent is not last_parent:  # lxml hands out the same proxy while one is alive
            last_parent = parent
            group = parent.get("id", "") if parent is not None and parent.tag == group_tag else ""
        figures.append(_new_figure(Figure, (fig.get("id") or "", label, caption_of(caption_el, label),
                                            tuple(hrefs), group)))
    return tuple(figures)


def _front_matter(meta: etree._Element, ns: str) -> tuple[dict[str, str], etree._Element | None,
                                                          etree._Element | None]:
    """<article-meta>'s ids by type (the first of each), its <article-title> and its
    <permissions> (None when missing): children, so no walk through the abstract."""
    ids: dict[str, str] = {}
    for el in meta.iterchildren(ns + "article-id"):
        kind, text = el.get("pub-id-type"), (el.text or "").strip()
        if kind and text and kind not in ids:
            ids[kind] = text
    title = permissions = None
    title_group_tag = ns + "title-group"
    for child in meta.iterchildren(title_group_tag, ns + "permissions"):
        if child.tag == title_group_tag:
            title = first_child(child, ns + "article-title") if title is None else title
        elif permissions is None:
            permissions = child
    return ids, title, permissions


_PMCID = re.compile(r"(?:PMC)?(\d+)(?:\.\d+)?", re.I)
# Which <pub-date> dates an article: electronic first, then print, then the issue's.
_DATE_RANK = {"epub": 0, "pub": 1, "ppub": 2, "epub-ppub": 2, "collection": 3}


def _pub_year(meta: etree._Element, ns: str) -> int | None:
    """The year of the best-ranked <pub-date> (`pub-type`, or JATS 1.2's `date-type`)."""
    best: tuple[int, int] | None = None
    for date in meta.iterchildren(ns + "pub-date"):
        year = first_child(date, ns + "year")
        text = (year.text or "").strip() if year is not None else ""
        if not (text.isdigit() and 1800 <= int(text) <= 2200):
            continue
        rank = _DATE_RANK.get(date.get("pub-type") or date.get("date-type") or "", 4)
        if best is None or rank < best[0]:
            best = (rank, int(text))
    return best[1] if best else None


def normalise_pmcid(value: str | None) -> str | None:
    if not value:
        return None
    match = _PMCID.fullmatch(value.strip())
    return f"PMC{match.group(1)}" if match else None


def parse_document(data: bytes) -> etree._Element:
    """Parse bytes into the JATS <article> element, refusing what is unsafe or not JATS."""
    if not data or data.isspace():  # isspace() stops at the first byte; strip() would copy
        raise JatsError(Reason.XML_MALFORMED, "empty document")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        if _ENTITY_DECLARATION.search(data[:65_536]):  # libxml2 gave up on an entity bomb
            names = ", ".join(n.decode(errors="replace") for n in _ENTITY_NAME.findall(data[:65_536])[:5])
            raise JatsError(Reason.XML_ENTITIES,
                            f"internal DTD declares entities ({names}); refused: {exc}") from None
        raise JatsError(Reason.XML_MALFORMED, f"not well-formed XML: {exc}") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        names = ", ".join(sorted(e.name for e in dtd.iterentities())[:5])
        raise JatsError(Reason.XML_ENTITIES, f"internal DTD declares entities ({names}); refused")
    if local(root) == "article":
        return root
    article = next(root.iter("{*}article"), None)  # OAI-PMH GetRecord envelope
    if article is None:
        error = next(root.iter("{*}error"), None)
        detail = f"OAI-PMH error: {normalise_space(error.text or '')} ({error.get('code')})" \
            if error is not None else f"root element <{local(root)}> holds no <article>"
        raise JatsError(Reason.NOT_AN_ARTICLE, detail)
    return article


def parse_article(data: bytes) -> Article:
    """Parse one JATS article (PMC, OAI-PMH or publisher flavour). Raises `JatsError`."""
    article = parse_document(data)
    tag = article.tag
    ns = tag[: tag.index("}") + 1] if tag[0] == "{" else ""
    front = first_child(article, ns + "front")
    meta = first_child(front, ns + "article-meta") if front is not None else None
    if meta is None:
        meta = article
    ids, title_el, permissions = _front_matter(meta, ns)
    pmcid = normalise_pmcid(ids.get("pmcid") or ids.get("pmc") or ids.get("accession")
                            or ids.get("pmc-uid"))
    if pmcid is None:  # the OAI-PMH header carries it: oai:pubmedcentral.nih.gov:10821037
        envelope = article.getroottree().getroot()
        header_id = next(envelope.iter("{*}identifier"), None)
        if header_id is not None and header_id.text:
            pmcid = normalise_pmcid(header_id.text.rpartition(":")[2])
    return Article(
        pmcid,
        ids.get("pmid"),
        ids.get("doi"),
        normalise_space(render_text(title_el)) if title_el is not None else "",
        article.get("article-type") or "",
        # No <permissions> where expected: look for its content anywhere in the front matter.
        license_from_xml(permissions if permissions is not None else meta, ns),
        _figures(article, ns),
        _pub_year(meta, ns),
    )
