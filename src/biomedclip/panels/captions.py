"""Split a compound figure's caption into what every panel shares and one sub-caption per panel.

About half of PMC's figures are compound: panels A, B, C... under one caption. A panel-level pair
trains on `SplitCaption.text_for(key)`: the shared part (title, methods, statistics, scale bars)
and that panel's own text. A wrong split teaches a panel another panel's words, which is worse
than no split (the whole caption, as today), so every rule below leans towards "shared" or
"none" when in doubt.

Markers. Three families:
- paren: "(A)", "(a)", ranges "(A–C)", "(a-c)", "(A—C)", "(A to C)" (one text for A, B and C),
  lists "(A and B)", "(A, B)", "(A,B)", "(A, B, and C)". What the JATS reader makes of labelled
  `<list-item>`s ("(B, C) ...") is this form.
- lead: a letter (or letter group) leading a sentence, as PLOS, BMC and Nature print them:
  "A, text", "A. Text", "A: text", "a) text", and Nature's bold letters, which reach the text as a
  bare lower-case letter before a capitalised word: "a Schematic ...; b Plot ...", "a, b Mice",
  "c–h Sections". A bare upper-case letter is not a marker ("A Previous model" is English). Old
  PLOS captions also name panels mid-sentence, "Structures of A, THL and B, MmPPOX": an upper-case
  letter and comma after "of", "and", "or", "in", "for", "to", "from" or "with", before a
  capitalised word.
- positional: "Left:", "Right panel:", "Top panel shows", "Upper row", "Lower:", "Inset:",
  "(left)", "(top)", "(center)" -> keys left, right, top, bottom, middle, inset (upper -> top,
  lower -> bottom, centre/center -> middle). Used only when the letters give no split: in a
  lettered caption "Inset:" or "Top:" describes part of a panel and stays in that panel's text.
  At least two different positions ("Inset:" alone describes part of the one figure).
Tried in this order, the first plausible split wins: parenthesised letters if one leads a
sentence (or follows ";" or ":"); lead letters if one leads (with the inline parenthesised
ones, "(c, d)"); inline letters of either family; positions.

Leading and inline markers. A marker leads when it opens the caption or a sentence (after ".",
"!" or "?"), or follows ";" or ":" inside a sentence that itself opened with a marker
("a Schematic ...; b Plot ..."). A leading marker opens a segment: the text up to the next
leading marker belongs to its panels, sentence by sentence. Any other marker is inline
("... in males and females (A), but not in males (B).", "Comparison of b the current density
and c voltage"): the sentence that holds it goes to the panels it names, whole (a sentence is
never cut at an inline marker: the words around it usually describe both panels). Inline
markers in a segment's first sentence join the segment ("(A) Normalized and (B) unnormalized
frequencies. ..." is A's and B's); in a later sentence they narrow that one sentence
("c–h Infected mice. At 1 dpi, cells around the bronchi (c, d)." gives the second sentence to C
and D only). Nature's bare inline letters ("Light-induced b temperature changes and c ionic
current") are too weak to find on their own (a lone "b" or "s" is often a unit): they are looked
for only to fill a gap between two leading letters ("a ...", "d ...": b and c, in that order,
in a's segment, not after a number).

Shared text. Sentences before the first marker (the title, common methods) are shared, and so is
a sentence without a marker that is not inside a segment (captions with inline markers only).
In the last segment, from the first sentence after its opening one that reads as boilerplate
(`_SHARED_START`, `_SHARED_ANYWHERE`) everything is shared: captions end with statistics, scale
bars and methods that apply to all panels, and once they start the caption rarely returns to the
last panel. The cues: a sentence starting with "Data", "Values", "Results are/were", "Mean",
"Average", "Bars", "Error bars", "Scale bar(s)", "Statistical", "Significance", "Asterisks",
"Symbols", "Abbreviations", "Magnification", "All", "In (all) panels", "For all panels",
"Each dot/point/symbol", "Representative", "n =", "*", "P <", "p values", "ns"; or naming
anywhere "mean ±", "± SD/SEM", "standard deviation/error", a named test (t-test, ANOVA,
log-rank, Mann-Whitney, Wilcoxon, Kruskal, Bonferroni, Tukey, Dunnett, Benjamini,
chi-square), "confidence interval", "independent experiments", "scale bar", "panels B-D",
"all/both/each panels", "Methods", "Supplementary", "Table(s) 2"; or a bare size
("Micropattern diameter, 700 μm."). Boilerplate in an earlier segment stays with its panel:
there it is more often that panel's own ("Error bars indicate the SDs" of panel A).

Not markers. A parenthesised letter right after a word or symbol is notation ("ψ(s)", "P(r)",
"q⋆(u, t)"); one followed by "-" is a stereo descriptor ("(S)-ketamine"); "(CT)", "(B cells)",
"(IL-6)", "(n = 5)", "(P < 0.05)" are not single letters. A parenthesised marker after "see",
"in", "as (in)", "shown in", "compared with/to", "than", "vs", "versus", "cf", "like", "from",
"also", "similar/relative/identical to", "panel(s)" or "Fig. 2" refers back and is left in the
text ("as shown in (A)", "(in (A,B))"); "(see B)" is not a marker form at all. Inside a segment,
an inline marker naming only earlier panels ("(D) Quantification of (C)") is a reference too.
"(i)" is a Roman numeral where the caption also has "(ii)". Markers of the minority case
("P, light coral" among "a", "b", "c") and inline letters far past the others (a symbol:
"temperature (T)") are ignored.

Plausible letters: the panels start at A, sorted letters skip at most one letter at a time
(A, B, D is fine, A, B, E is not), there are at least two, leading markers come in order (each
starting later than the one before, no more than one letter past the highest so far; "c–h ...
e, f ... g, h" is fine), a range spans at most 12 letters. Anything else returns style "none"
with the whole caption shared.

Known limits: a sentence is never cut inside, so "in males and females (A), but not in males
(B)" gives the whole sentence to A and B; an unmarked sentence after a narrowed one goes to the
whole segment again ("c–h ... (c, d). The airways showed ..." gives the second to C-H); "Top
left:" is "top"; a marker-like letter that fits the sequence ("types of A, B and O blood" in a
lettered caption) is taken for a marker; a closing-boilerplate sentence in the middle of the last
panel's text takes the rest of it to the shared text; Nature's bold letters before a lower-case
word ("Comparison of b the current") are found only between leading ones.

Speed: ~12,000-17,000 captions/s for 60-word captions on one (busy) core; the full fixture
captions (115 words on average) ~5,000-10,000/s. Pure Python regexes, each starting with a
literal or a character class so the engine skips ahead; a caption is read a few times, never
character by character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

__all__ = ["SplitCaption", "split_caption"]

POSITIONS = ("left", "right", "top", "bottom", "middle", "inset")
_POSITION_KEY = {"left": "left", "right": "right", "top": "top", "upper": "top", "bottom": "bottom",
                 "lower": "bottom", "middle": "middle", "center": "middle", "centre": "middle",
                 "inset": "inset", "insets": "inset"}


@dataclass(frozen=True)
class SplitCaption:
    shared: str  # title + sentences that name no panel (methods, statistics, scale bars)
    panels: dict[str, str]  # "A", "B", ... or "left", "top", "inset", ... -> the panel's own text
    style: str  # "paren", "lead", "positional" or "none"

    def text_for(self, key: str) -> str:
        """Shared text and the panel's own: what a panel pair trains on.

        Letters in either case ("b" is "B"); a key the caption does not name gets the shared
        text alone, which for style "none" is the whole caption.
        """
        norm = key.strip()
        norm = norm.upper() if len(norm) == 1 else norm.lower()
        own = self.panels.get(norm, "")
        return f"{self.shared} {own}".strip() if own else self.shared


class _Marker(NamedTuple):
    start: int
    end: int
    keys: tuple  # letter indices (0 = A) ascending, or position keys
    leading: bool
    upper: bool  # the letters' case (True for positional markers)
    kind: str  # "paren", "lead" or "positional"; "-weak" added until `_resolve_weak` decides


# --- letters ---------------------------------------------------------------------------------

_SEP = r"(?:\s*[,;&]\s*(?:and\s+)?|\s+and\s+|\s+to\s+|\s*[–—-]\s*)"
_GROUP = rf"[A-Za-z](?:{_SEP}[A-Za-z])*"
_PAREN = re.compile(rf"\(\s*({_GROUP})\s*\)")
_GROUP_TOKEN = re.compile(r"\bto\b|[–—-]|\b[A-Za-z]\b")
_MAX_SPAN = 12
# Where a leading marker may start: the caption's start, after a sentence's end, after ";" or ":".
_AFTER_STOP = re.compile(r"[.!?;:][)\]\"”’]? ")
_LEAD = re.compile(
    rf"(?:({_GROUP})(?:\) |: |\. (?=[A-Z(])|, (?!(?:[A-Za-z][\s,.)]|and |or )))"
    rf"|([a-z](?:{_SEP}[a-z])*) (?=[A-Z0-9(]))"
)
# Upper-case "of A, LipH; B, LipN and C, LipY": inline lead markers (PLOS).
_LEAD_INLINE = re.compile(r"([A-Z]), (?=[A-Z0-9])")
_LEAD_INLINE_AFTER = (" of ", " and ", " or ", " in ", " for ", " to ", " from ", " with ")
_BARE = {c: re.compile(rf"(?<=[^\d\s(] ){c}(?= [^\s.,;:)])") for c in "abcdefghijklmnopqrstuvwxyz"}
_REFERENCE = re.compile(
    r"(?:\b(?:see|cf|in|as|than|vs|versus|panels?|like|from|also|compare[ds]?(?: with| to)?"
    r"|similar to|relative to|identical to)|\bfig(?:ure)?s?\.?\s*S?\d+[A-Za-z]?)\.?\s*\(?\s*$",
    re.IGNORECASE,
)
_ABBREVIATION_END = re.compile(
    r"(?:\b(?:e\.g|i\.e|vs|cf|al|Figs?|approx|ca|eqs?|Eqs?|No|Ref|resp)\.)$")
_SENTENCE_END = re.compile(r"[.!?][)\]\"”’]* ")

# --- positions -------------------------------------------------------------------------------

_POS_WORD = r"(Left|Right|Top|Bottom|Upper|Lower|Middle|Center|Centre|Insets?)"
_POS_NOUN = r"(?:panels?|rows?|columns?|images?|graphs?|plots?|parts?)"
# "Left: ...", "Top panel shows ...", "Lower row, ...", "Inset, ..." (not "Left ventricle").
_POSITIONAL = re.compile(
    rf"{_POS_WORD}(?:[- ](?:left|right|middle|center|centre))?(?: {_POS_NOUN}[:,]? |: )|(Insets?), "
)
_POSITIONAL_PAREN = re.compile(
    r"\((left|right|top|bottom|upper|lower|middle|center|centre|inset)(?: " + _POS_NOUN + r")?\)",
    re.IGNORECASE,
)

# --- sentences and boilerplate ---------------------------------------------------------------

_BOUNDARY = re.compile(r"[.!?][)\]\"”’]* (?=[A-Z0-9(*∗†‡\"“‘])")
_SHARED_START = re.compile(
    r"[*∗†‡#]|(?:Data\b|Values\b|Results (?:are|were)|Means?\b|Average|Bars\b|Error bars"
    r"|Scale bars?|Statistic|Significan|Asterisks?|Symbols?\b|Abbreviations?|Magnification"
    r"|Original magnification|All\b|In (?:all |each )?panels?\b|For all panels"
    r"|Each (?:dot|point|symbol|circle|data point|bar|line)"
    r"|Representative|[nN]\s*=|[Pp]\s*[<>≤=]|[Pp][- ]?values?|ns\b|n\.s\.)"
)
_SHARED_ANYWHERE = re.compile(
    r"(?i:mean\s*(?:±|\+/?-)|±\s*(?:SD|SEM|S\.E\.M|SE|s\.d)\b|standard (?:deviation|error)"
    r"|\bt[- ]tests?\b|ANOVA|log-rank|Mann[–-]Whitney|Wilcoxon|Kruskal|Bonferroni|Tukey|Dunnett"
    r"|Benjamini|chi-squared?|χ2|confidence intervals?|independent experiments|\bscale bars?\b"
    r"|\bpanels\s+[A-Z]\b|\b(?:all|both|each) panels\b|Supplementa|\bTables?\s+S?\d)"
    r"|\bMethods\b|^[A-Z][^.,;:]{0,40}[,:=]\s*[\d.]+\s*(?:[nµμmc]m)\.?$"
)
_CLOSING = set(".,;:!?)]")


def _letters(group: str) -> tuple[tuple[int, ...], bool] | None:
    """Letter indices of "A", "a–c", "A and B", "A to C", "A, B, and C"; None if not a marker."""
    out: list[int] = []
    upper = None
    pending_range = False
    for token in _GROUP_TOKEN.findall(group):
        if len(token) == 1 and token.isalpha():
            if upper is None:
                upper = token.isupper()
            elif token.isupper() != upper:
                return None  # "(K, w)": symbols, not panels
            index = ord(token.lower()) - 97
            if pending_range:
                if not out or index <= out[-1] or index - out[-1] > _MAX_SPAN:
                    return None
                out.extend(range(out[-1] + 1, index + 1))
                pending_range = False
            else:
                if out and index <= out[-1]:
                    return None
                out.append(index)
        else:
            pending_range = True
    if not out or pending_range:
        return None
    return tuple(out), bool(upper)


def _leading_kind(text: str, start: int) -> str:
    """"strong" (caption or sentence start), "weak" (after ";" or ":") or "" (inline)."""
    i = start
    while i and text[i - 1] == " ":
        i -= 1
    if i == 0:
        return "strong"
    j = i
    while j and text[j - 1] in ")]\"”’":
        j -= 1
    c = text[j - 1] if j else ""
    if c in ".!?":
        if c == "." and _ABBREVIATION_END.search(text, max(0, j - 8), j):
            return ""
        return "strong"
    return "weak" if c in ";:" and j == i else ""


def _paren_markers(text: str) -> list[_Marker]:
    markers = []
    if "(" not in text:
        return markers
    for m in _PAREN.finditer(text):
        s, e = m.span()
        if s and text[s - 1] not in " ([":
            continue  # ψ(s), P(r), 1(A): notation or another figure's panel
        if e < len(text) and text[e] not in " .,;:)]":
            continue  # (S)-ketamine
        parsed = _letters(m.group(1))
        if parsed is None:
            continue
        kind = _leading_kind(text, s)
        if not kind and _REFERENCE.search(text, max(0, s - 30), s):
            continue  # "as shown in (A)", "compared with (B)"
        markers.append(_Marker(s, e, parsed[0], kind == "strong", parsed[1],
                               "paren-weak" if kind == "weak" else "paren"))
    return markers


def _lead_positions(text: str) -> list[int]:
    """Where a leading marker may start: the caption's start, after ".", "!", "?", ";", ":"."""
    return [0, *(m.end() for m in _AFTER_STOP.finditer(text))]


def _lead_markers(text: str) -> list[_Marker]:
    markers = []
    for pos in _lead_positions(text):
        m = _LEAD.match(text, pos)
        if m is None:
            continue
        group = m.group(1) or m.group(2)
        parsed = _letters(group)
        if parsed is None:
            continue
        s = m.start()
        kind = _leading_kind(text, s)
        if not kind:  # after an abbreviation ("e.g. a DNA")
            continue
        end = m.end() if m.group(1) else m.end(2) + 1
        markers.append(_Marker(s, end, parsed[0], kind == "strong", parsed[1],
                               "lead" if kind == "strong" else "lead-weak"))
    for m in _LEAD_INLINE.finditer(text):
        s = m.start()
        after_word = text[max(0, s - 6):s].endswith(_LEAD_INLINE_AFTER)
        if after_word and not any(mk.start == s for mk in markers):
            markers.append(_Marker(s, m.end(), (ord(m.group(1)) - 65,), False, True, "lead"))
    return markers


def _positional_markers(text: str) -> list[_Marker]:
    markers = []
    for pos in _lead_positions(text):
        m = _POSITIONAL.match(text, pos)
        if m is None:
            continue
        kind = _leading_kind(text, m.start())
        if kind:
            key = _POSITION_KEY[(m.group(1) or m.group(2)).lower()]
            markers.append(_Marker(m.start(), m.end(), (key,), kind == "strong", True,
                                   "positional" if kind == "strong" else "positional-weak"))
    if "(" in text:
        for m in _POSITIONAL_PAREN.finditer(text):
            s, e = m.span()
            if (s and text[s - 1] not in " ([") or (e < len(text) and text[e] not in " .,;:)]"):
                continue
            if _REFERENCE.search(text, max(0, s - 30), s):
                continue
            key = _POSITION_KEY[m.group(1).lower()]
            markers.append(_Marker(s, e, (key,), False, True, "positional"))
    markers.sort()
    return markers


def _resolve_weak(text: str, markers: list[_Marker]) -> list[_Marker]:
    """A marker after ";" or ":" leads only inside a sentence that a leading marker opened."""
    out = []
    opener = -1  # start of the last leading marker
    for m in markers:
        if m.kind.endswith("-weak"):
            kind = m.kind[:-5]
            lead = opener >= 0 and not _SENTENCE_END.search(text, opener, m.start)
            m = m._replace(leading=lead, kind=kind)
        if m.leading:
            opener = m.start
        out.append(m)
    return out


def _same_case(markers: list[_Marker]) -> list[_Marker]:
    """Keep the markers of the majority case (of the leading ones, if any)."""
    voters = [m for m in markers if m.leading] or markers
    if not voters:
        return markers
    upper = sum(m.upper for m in voters) * 2 >= len(voters)
    return [m for m in markers if m.upper == upper]


def _fill_gaps(text: str, markers: list[_Marker]) -> list[_Marker]:
    """Nature's inline bare letters, only where leading letters skip them, in order."""
    leading = [m for m in markers if m.leading]
    if not leading or leading[0].upper:
        return markers
    named = {k for m in leading for k in m.keys}
    extra = []
    for before, after in pairwise(leading):
        pos, stop = before.end, after.start
        for index in range(max(before.keys) + 1, min(after.keys)):
            if index in named or index > 25:
                continue
            found = _BARE[chr(97 + index)].search(text, pos, stop)
            if found is None:
                break
            extra.append(_Marker(found.start(), found.end() + 1, (index,), False, False, "lead"))
            pos = found.end()
    return sorted(markers + extra) if extra else markers


def _accept(text: str, markers: list[_Marker]) -> list[_Marker] | None:
    """The markers that make a plausible letter sequence, or None."""
    if not markers:
        return None
    if "(ii)" in text or "(iii)" in text:  # Roman numerals
        markers = [m for m in markers if m.upper or 8 not in m.keys]
    accepted = []
    top = first = -1  # highest letter so far; first letter of the last leading marker
    segment_min = None
    for m in markers:
        if m.leading:
            if m.keys[0] <= first or m.keys[0] > top + 2:
                return None  # leading letters out of order, or skipping two or more
            first = segment_min = m.keys[0]
        elif segment_min is not None and m.keys[-1] < segment_min:
            continue  # names only earlier panels: a reference
        elif m.keys[-1] > top + 2:
            continue  # far past the others: a symbol ("temperature (T)")
        accepted.append(m)
        top = max(top, m.keys[-1])
    keys = sorted({k for m in accepted for k in m.keys})
    if len(keys) < 2 or keys[0] != 0 or any(b - a > 2 for a, b in pairwise(keys)):
        return None
    return accepted


def _pieces(text: str, cuts: set[int]) -> list[tuple[int, int]]:
    """Sentences (not cut inside parentheses), also cut where a leading marker starts."""
    ends = {m.end() for m in _BOUNDARY.finditer(text) if text[m.start()] != "."
            or not _ABBREVIATION_END.search(text, max(0, m.start() - 7), m.start() + 1)}
    bounds = sorted(ends | cuts - {0})
    pieces = []
    start = 0
    for b in bounds:
        if b in cuts or text.count("(", start, b) <= text.count(")", start, b):
            pieces.append((start, b))
            start = b
    pieces.append((start, len(text)))
    return pieces


def _clean(text: str, start: int, end: int, remove: list[_Marker]) -> str:
    """The piece's text without its markers: "bronchi (c, d)." -> "bronchi."."""
    if not remove:
        return text[start:end].strip()
    parts = []
    pos = start
    for m in remove:
        before = text[pos:m.start]
        after = text[m.end:m.end + 1]
        parts.append(before.rstrip() if after in _CLOSING else before)
        pos = m.end
    parts.append(text[pos:end])
    return " ".join("".join(parts).split())


def _assign(text: str, markers: list[_Marker], style: str) -> SplitCaption | None:
    """Give each piece of the caption to the panels its markers name, or to the shared text."""
    opens = {m.start for m in markers if m.leading}
    pieces = _pieces(text, opens)
    last_open = max((i for i, (a, _) in enumerate(pieces) if a in opens), default=-1)
    shared: list[str] = []
    own: dict = {}
    current: tuple = ()  # the open segment's panels
    tail = False  # in the last segment's closing boilerplate
    todo = iter(markers)
    marker = next(todo, None)
    for i, (a, b) in enumerate(pieces):
        inside = []
        while marker is not None and marker.start < b:
            inside.append(marker)
            marker = next(todo, None)
        opener = inside[0] if a in opens else None
        named = tuple(dict.fromkeys(k for m in inside for k in m.keys))
        if opener is not None:
            keys = current = named
        elif tail or (i > last_open >= 0 and _is_boilerplate(text[a:b])):
            tail, keys, inside = True, (), []
        else:
            keys = named or current
        piece = _clean(text, a, b, inside)
        if not keys:
            if piece:
                shared.append(piece)
            continue
        if i + 1 < len(pieces) and pieces[i + 1][0] in opens:
            piece = piece.rstrip(";,")  # "a Schematic ...; b Plot ...": the ";" is the marker's
        for k in keys:
            own.setdefault(k, [])
            if piece:
                own[k].append(piece)
    if len(own) < 2:
        return None
    if style == "positional":
        panels = {k: " ".join(v) for k, v in own.items()}
    else:
        panels = {chr(65 + k): " ".join(own[k]) for k in sorted(own)}
    return SplitCaption(" ".join(shared), panels, style)


def _is_boilerplate(sentence: str) -> bool:
    """Methods, statistics, scale bars: text for every panel (the module docstring's cues)."""
    sentence = sentence.strip()
    return bool(_SHARED_START.match(sentence) or _SHARED_ANYWHERE.search(sentence))


def _letter_split(text: str) -> SplitCaption | None:
    """The first plausible split by parenthesised letters, leading lead letters, inline letters."""
    paren = _paren_markers(text)
    lead = _lead_markers(text)
    inline_paren = [m for m in paren if m.kind == "paren" and not m.leading]
    systems = []
    if any(m.leading or m.kind == "paren-weak" for m in paren):
        systems.append(("paren", paren))
    if any(m.leading or m.kind == "lead-weak" for m in lead):
        systems.append(("lead", sorted(lead + inline_paren)))
    inline_lead = [m for m in lead if m.kind == "lead" and not m.leading]
    systems.append(("inline", sorted(inline_paren + inline_lead)))
    for style, candidates in systems:
        markers = _same_case(_resolve_weak(text, candidates))
        if style == "lead":
            markers = _fill_gaps(text, markers)
        accepted = _accept(text, markers)
        if accepted is None:
            continue
        if style == "inline":
            style = "paren" if any(m.kind == "paren" for m in accepted) else "lead"
        elif style == "lead" and not any(m.leading and m.kind == "lead" for m in accepted):
            continue  # no lead letter leads after all: the inline system decides
        result = _assign(text, accepted, style)
        if result is not None:
            return result
    return None


def _positional_split(text: str) -> SplitCaption | None:
    markers = _resolve_weak(text, _positional_markers(text))
    if len({m.keys[0] for m in markers}) < 2:
        return None
    return _assign(text, markers, "positional")


def split_caption(caption: str) -> SplitCaption:
    """Shared text and per-panel sub-captions of a figure caption (see the module's rules)."""
    text = " ".join(caption.split())
    result = _letter_split(text) if text else None
    if result is None and text:
        result = _positional_split(text)
    return result or SplitCaption(text, {}, "none")
