"""JATS XML for a demo article, in the two dialects PMC has served.

- "opendata": the PMC-normalised JATS 1.3 of `s3://pmc-oa-opendata/PMC{id}.{v}/PMC{id}.{v}.xml`
  (article ids `pmcid`, `pmc-uid`; `<ali:license_ref>` in `<permissions>`).
- "legacy": the `.nxml` inside the old `oa_package` tarballs (article id `pmc`, numeric).

Both carry a DOCTYPE with an external DTD, as PMC's files do: the ingest must not resolve it.
Also the plain-text rendering PMC publishes beside the XML (`PMC{id}.{v}.txt`).
"""

from __future__ import annotations

from lxml import etree

from biomedclip.demo.article import LICENSES, ArticleVersion, FigRef, Figure, Paragraph
from biomedclip.demo.captions import Caption, Segment, segments_text

XLINK = "http://www.w3.org/1999/xlink"
MML = "http://www.w3.org/1998/Math/MathML"
ALI = "http://www.niso.org/schemas/ali/1.0/"
JATS_NS = "https://jats.nlm.nih.gov/ns/archiving/1.3/"
NSMAP = {"xlink": XLINK, "mml": MML, "ali": ALI}

DOCTYPES = {
    "opendata": '<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and '
    'Interchange DTD with MathML3 v1.3 20210610//EN" "JATS-archive-oasis-article1-3-mathml3.dtd">',
    "legacy": '<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and '
    'Interchange DTD v1.0 20120330//EN" "JATS-archivearticle1.dtd">',
}


def _attr(name: str) -> str:
    """Python keyword → JATS attribute: `ref_type` → `ref-type`, `xlink__href` → `{xlink}href`."""
    if name.startswith("xlink__"):
        return f"{{{XLINK}}}{name.removeprefix('xlink__')}"
    return name.replace("_", "-")


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, {_attr(k): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _append_text(parent: etree._Element, text: str) -> None:
    if len(parent):
        last = parent[-1]
        last.tail = (last.tail or "") + text
    else:
        parent.text = (parent.text or "") + text


def _math(parent: etree._Element, tokens: tuple[tuple[str, str], ...], formula_id: str) -> etree._Element:
    formula = etree.SubElement(parent, "inline-formula", {"id": formula_id})
    math = etree.SubElement(formula, f"{{{MML}}}math", {"display": "inline"})
    row = etree.SubElement(math, f"{{{MML}}}mrow")
    for tag, text in tokens:
        if tag in ("msub", "msup"):
            base, script = text.split("|")
            wrapper = etree.SubElement(row, f"{{{MML}}}{tag}")
            etree.SubElement(wrapper, f"{{{MML}}}mi").text = base
            etree.SubElement(wrapper, f"{{{MML}}}mi").text = script
        else:
            etree.SubElement(row, f"{{{MML}}}{tag}").text = text
    return formula


def _inline(parent: etree._Element, segments: list[Segment | FigRef], ids: list[int]) -> None:
    """Append text and inline markup to `parent`; `ids` numbers formulas uniquely per article."""
    for seg in segments:
        if isinstance(seg, str):
            _append_text(parent, seg)
        elif isinstance(seg, FigRef):
            _sub(parent, "xref", seg.text, ref_type="fig", rid=seg.rid)
        elif seg.kind in ("italic", "bold") or seg.kind in ("sup", "sub"):
            _sub(parent, seg.kind, seg.text)
        elif seg.kind == "xref":
            _sub(parent, "xref", seg.text, ref_type="bibr", rid=seg.ref)
        elif seg.kind == "math":
            ids[0] += 1
            _math(parent, seg.math, f"M{ids[0]}")
        elif seg.kind == "inline_graphic":
            parent.append(etree.Element("inline-graphic", {f"{{{XLINK}}}href": seg.ref}))
        else:
            raise ValueError(f"unknown markup {seg.kind!r}")


def _caption(parent: etree._Element, caption: Caption, ids: list[int]) -> None:
    el = _sub(parent, "caption")
    if caption.title:
        _inline(_sub(el, "title"), caption.title, ids)
    for paragraph in caption.paragraphs:
        _inline(_sub(el, "p"), paragraph, ids)


def _figure(parent: etree._Element, fig: Figure, ids: list[int]) -> None:
    el = _sub(parent, "fig", id=fig.fig_id, position="float")
    _sub(el, "label", fig.label)
    if fig.caption is not None:
        _caption(el, fig.caption, ids)
    elif fig.empty_caption_element:
        _sub(_sub(el, "caption"), "p")
    holder = el
    if fig.in_alternatives:
        holder = _sub(el, "alternatives")
    for href in fig.hrefs:
        holder.append(etree.Element("graphic", {f"{{{XLINK}}}href": href, "position": "float"}))
    if fig.in_alternatives:
        _sub(holder, "textual-form", fig.label, specific_use="alt-text")


def _figures(parent: etree._Element, figures: list[Figure], ids: list[int]) -> None:
    """Write figures in order; consecutive members of one fig-group go inside one <fig-group>."""
    groups: dict[str, etree._Element] = {}
    for fig in figures:
        if not fig.group_id:
            _figure(parent, fig, ids)
            continue
        if fig.group_id not in groups:
            group = _sub(parent, "fig-group", id=fig.group_id)
            if fig.group_caption is not None:
                _caption(group, fig.group_caption, ids)
            groups[fig.group_id] = group
        _figure(groups[fig.group_id], fig, ids)


def _front(article: etree._Element, a: ArticleVersion, dialect: str, ids: list[int]) -> None:
    front = _sub(article, "front")
    jm = _sub(front, "journal-meta")
    _sub(jm, "journal-id", a.journal.nlm_ta, journal_id_type="nlm-ta")
    _sub(_sub(jm, "journal-title-group"), "journal-title", a.journal.title)
    _sub(jm, "issn", a.journal.issn, pub_type="epub")
    _sub(_sub(jm, "publisher"), "publisher-name", a.journal.publisher)
    meta = _sub(front, "article-meta")
    number = a.pmcid.removeprefix("PMC")
    if dialect == "opendata":
        _sub(meta, "article-id", a.pmcid, pub_id_type="accession")
        _sub(meta, "article-id", a.pmcid, pub_id_type="pmcid")
        _sub(meta, "article-id", number, pub_id_type="pmc-uid")
    else:
        _sub(meta, "article-id", number, pub_id_type="pmc")
    _sub(meta, "article-id", str(a.pmid), pub_id_type="pmid")
    _sub(meta, "article-id", a.doi, pub_id_type="doi")
    _sub(meta, "article-id", a.publisher_id, pub_id_type="publisher-id")
    heading = {"research-article": "Research Article", "review-article": "Review",
               "case-report": "Case Report"}.get(a.article_type, "Article")
    _sub(_sub(_sub(meta, "article-categories"), "subj-group", subj_group_type="heading"),
         "subject", heading)
    _sub(_sub(meta, "title-group"), "article-title", a.title)
    contribs = _sub(meta, "contrib-group")
    for surname, given in a.authors:
        name = _sub(_sub(contribs, "contrib", contrib_type="author"), "name")
        _sub(name, "surname", surname)
        _sub(name, "given-names", given)
    date = _sub(meta, "pub-date", pub_type="epub")
    _sub(date, "day", f"{a.pub_date.day:02d}")
    _sub(date, "month", f"{a.pub_date.month:02d}")
    _sub(date, "year", str(a.pub_date.year))
    _sub(meta, "volume", str(a.volume))
    _sub(meta, "elocation-id", a.publisher_id)
    permissions = _sub(meta, "permissions")
    _sub(permissions, "copyright-statement", f"© {a.pub_date.year} The Author(s)")
    _sub(permissions, "copyright-year", str(a.pub_date.year))
    _license(permissions, a, dialect)
    abstract = _sub(meta, "abstract")
    for text in a.abstract:
        _sub(abstract, "p", text)
    if a.graphical_abstract:
        graphical = _sub(meta, "abstract", abstract_type="graphical")
        _sub(graphical, "title", "Graphical abstract")
        fig = _sub(_sub(graphical, "p"), "fig", id="undfig1", position="anchor")
        _sub(fig, "graphic", xlink__href=a.graphical_abstract, position="anchor")


LICENSE_WORDS = {
    "CC BY": "the Creative Commons Attribution License",
    "CC0": "the Creative Commons CC0 public domain dedication",
    "CC BY-SA": "the Creative Commons Attribution-ShareAlike License",
    "CC BY-ND": "the Creative Commons Attribution-NoDerivatives License",
    "CC BY-NC": "the Creative Commons Attribution-NonCommercial License",
    "CC BY-NC-SA": "the Creative Commons Attribution-NonCommercial-ShareAlike License",
    "CC BY-NC-ND": "the Creative Commons Attribution-NonCommercial-NoDerivatives License",
}


def _license(permissions: etree._Element, a: ArticleVersion, dialect: str) -> None:
    """State the licence the way publishers do: ALI URL, xlink URL, words only, or not at all."""
    url = LICENSES[a.license_code]
    style = "xlink" if dialect == "legacy" and a.license_style == "ali" else a.license_style
    if style == "none":
        permissions.getparent().remove(permissions)
        return
    if not url:
        _sub(_sub(permissions, "license", license_type="restricted"), "license-p",
             "This article is made available for research use in the PMC Open Access Subset; "
             "reuse terms are set by the publisher.")
        return
    words = f"This is an open access article distributed under the terms of {LICENSE_WORDS[a.license_code]}"
    if style == "text":
        _sub(_sub(permissions, "license", license_type="open-access"), "license-p", words + ".")
        return
    lic = _sub(permissions, "license", license_type="open-access")
    if style == "ali":
        etree.SubElement(lic, f"{{{ALI}}}license_ref", {"specific-use": "textmining"}).text = url
    else:
        lic.set(f"{{{XLINK}}}href", url)
    p = _sub(lic, "license-p", words + " (")
    _sub(p, "ext-link", url, ext_link_type="uri", xlink__href=url)
    _append_text(p, ").")


def article_xml(a: ArticleVersion, dialect: str = "opendata") -> bytes:
    """Serialise one article version to JATS bytes (UTF-8, DOCTYPE, stable attribute order)."""
    ids = [0]
    article = etree.Element("article", nsmap=NSMAP)
    article.set("article-type", a.article_type)
    article.set("dtd-version", "1.3" if dialect == "opendata" else "1.0")
    article.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    _front(article, a, dialect, ids)
    body = _sub(article, "body")
    in_body = [f for f in a.figures if f.placement == "body"]
    for title, paragraphs in a.sections:
        sec = _sub(body, "sec")
        _sub(sec, "title", title)
        for paragraph in paragraphs:
            _inline(_sub(sec, "p"), paragraph, ids)
            cited = {seg.rid for seg in paragraph if isinstance(seg, FigRef)}
            placed = [f for f in in_body if f.fig_id in cited or f.group_id in cited]
            _figures(sec, placed, ids)
            in_body = [f for f in in_body if f not in placed]
    _figures(body, in_body, ids)  # figures never cited in the text
    for table_id, label, caption, href in a.tables:  # tables typeset as images: not figures
        wrap = _sub(body, "table-wrap", id=table_id, position="float")
        _sub(wrap, "label", label)
        _sub(_sub(wrap, "caption"), "p", caption)
        _sub(wrap, "graphic", xlink__href=href)
    for formula_id, href in a.formulas:  # equations as images: their hrefs keep the extension
        p = _sub(body, "p", "The model is defined as ")
        formula = _sub(p, "disp-formula", id=formula_id)
        _sub(formula, "graphic", xlink__href=href, position="anchor")
        _append_text(p, " where all terms are defined in the text.")
    back = _sub(article, "back")
    appendix = [f for f in a.figures if f.placement == "back"]
    if appendix:
        app = _sub(_sub(back, "app-group"), "app", id="app1")
        _sub(app, "title", "Appendix A")
        _figures(app, appendix, ids)
    for sup in a.supplements:
        el = _sub(back, "supplementary-material", id=sup.sup_id, content_type="local-data")
        _sub(el, "label", sup.label)
        _sub(_sub(el, "caption"), "p", sup.caption)
        _sub(el, "media", xlink__href=sup.filename, mimetype="text", mime_subtype="csv")
    refs = _sub(back, "ref-list")
    _sub(refs, "title", "References")
    for rid, text in a.references:
        _sub(_sub(refs, "ref", id=rid), "mixed-citation", text, publication_type="journal")
    floats = [f for f in a.figures if f.placement == "floats"]
    if floats:
        _figures(_sub(article, "floats-group"), floats, ids)
    if a.jats_namespace:
        for el in article.iter():
            if isinstance(el.tag, str) and not el.tag.startswith("{"):
                el.tag = f"{{{JATS_NS}}}{el.tag}"
        article = _renamespaced(article)
    return etree.tostring(article, xml_declaration=True, encoding="UTF-8",
                          doctype=DOCTYPES[dialect])


def _renamespaced(article: etree._Element) -> etree._Element:
    """The same tree with the JATS namespace declared as the default (no ns0: prefixes)."""
    root = etree.Element(article.tag, dict(article.attrib), nsmap={None: JATS_NS, **NSMAP})
    root.text = article.text
    root.extend(list(article))
    return root


def _paragraph_text(paragraph: Paragraph) -> str:
    return "".join(seg.text if isinstance(seg, FigRef) else segments_text([seg])
                   for seg in paragraph)


def article_text(a: ArticleVersion) -> str:
    """The plain-text rendering PMC publishes as `PMC{id}.{v}.txt`."""
    lines = [a.journal.title, a.citation, "", a.title, "", "Abstract", *a.abstract, ""]
    for title, paragraphs in a.sections:
        lines += [title, *(_paragraph_text(p) for p in paragraphs), ""]
    for fig in a.figures:
        caption = fig.caption.plain() if fig.caption else ""
        lines.append(f"{fig.label}. {caption}".strip())
    lines += ["", "References", *(text for _, text in a.references), ""]
    return "\n".join(lines)

