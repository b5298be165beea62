"""Licences, read from wherever PMC states them, as one canonical code.

Codes: "CC0", "CC BY", "CC BY-SA", "CC BY-ND", "CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND", "PD"
(public domain, e.g. US-government works) and "NO-CC CODE" (PMC's own code for articles in the
Open Access Subset under a non-Creative-Commons licence). Sources, most authoritative first: the
new layout's JSON `license_code`, the legacy `oa_file_list.csv` License column, the article's
`<permissions>` (licence URL, then the licence text).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lxml import etree

XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
ALI_LICENSE_REF = "{http://www.niso.org/schemas/ali/1.0/}license_ref"
CODES = ("CC0", "CC BY", "CC BY-SA", "CC BY-ND", "CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND", "PD",
         "NO-CC CODE")
COMMERCIAL_USE = ("CC0", "CC BY", "CC BY-SA", "CC BY-ND", "PD")
NON_COMMERCIAL = ("CC BY-NC", "CC BY-NC-SA", "CC BY-NC-ND")

_URL = re.compile(r"creativecommons\.org/(?:licenses/(by(?:-nc)?(?:-sa|-nd)?)|publicdomain/(zero|mark))",
                  re.I)
# Text patterns, most specific first; matched against lower-cased text (without re.I, a
# pattern's leading literal is found by a fast scan instead of a match tried at every position).
_TEXT = [
    (re.compile(r"attribution[- ]non-?commercial[- ]no-?deriv"), "CC BY-NC-ND"),
    (re.compile(r"attribution[- ]non-?commercial[- ]share-?alike"), "CC BY-NC-SA"),
    (re.compile(r"attribution[- ]non-?commercial"), "CC BY-NC"),
    (re.compile(r"attribution[- ]share-?alike"), "CC BY-SA"),
    (re.compile(r"attribution[- ]no-?deriv"), "CC BY-ND"),
    (re.compile(r"\bcc0\b|public domain dedication"), "CC0"),
    (re.compile(r"creative commons attribution|\bcc[- ]by\b"), "CC BY"),
    (re.compile(r"public domain"), "PD"),
]


class License(NamedTuple):
    code: str | None  # one of CODES, None when nothing says
    url: str | None = None


def from_code(value: object) -> str | None:
    """Canonical code of a PMC `license_code` / file-list value ("CC BY-NC-ND", "cc0", "CC-BY")."""
    if not value or not isinstance(value, str):
        return None
    text = " ".join(value.replace("_", " ").split()).upper()
    if text in ("NO-CC CODE", "NO CC CODE"):
        return "NO-CC CODE"
    text = re.sub(r"^CC[- ]?BY", "CC BY", text)
    text = re.sub(r"\s+\d(\.\d)?$", "", text)  # "CC BY 4.0"
    return text if text in CODES else None


def from_url(url: str | None) -> str | None:
    match = _URL.search(url or "")
    if not match:
        return None
    if match.group(2):
        return "CC0" if match.group(2).lower() == "zero" else "PD"
    return "CC " + match.group(1).upper()


def from_text(text: str) -> str | None:
    text = text.lower()
    for pattern, code in _TEXT:
        if pattern.search(text):
            return code
    return None


def license_from_xml(scope: etree._Element, ns: str = "") -> License:
    """The licence stated in `scope`, an article's <permissions>: its URL if any, else its words.

    `ns` is the document's JATS namespace ("{...}" or ""), so lookups use exact tags.
    """
    ref_tags, link_tag = (ALI_LICENSE_REF, ns + "license_ref"), ns + "ext-link"
    for lic in scope.iter(ns + "license"):
        href = lic.get(XLINK_HREF)
        if code := from_url(href):  # the common case: no need to look inside
            return License(code, href)
        links = []  # the URLs of links in the text: tried after every licence reference
        for el in lic.iter():  # one walk of a small subtree, no tag matcher built per tag
            tag = el.tag
            if tag in ref_tags:
                url = (el.text or "").strip()
                if code := from_url(url):
                    return License(code, url)
            elif tag == link_tag:
                links.append(el.get(XLINK_HREF) or "")
        for url in links:
            if code := from_url(url):
                return License(code, url)
        words = " ".join(" ".join(lic.itertext()).split())
        if code := from_text(words) or from_code(lic.get("license-type")):
            return License(code, None)
    for statement in scope.iter(ns + "copyright-statement"):
        if code := from_text(" ".join(statement.itertext())):
            return License(code, None)
    return License(None, None)


def allowed_codes(allowed: tuple[str, ...], allow_non_commercial: bool) -> frozenset[str]:
    return frozenset(allowed) | (frozenset(NON_COMMERCIAL) if allow_non_commercial else frozenset())
