"""Search filters: `license in (CC BY, CC0)`, `year >= 2020`, `type = radiology`, parsed strictly.

A filter is `FIELD OP VALUE`: fields `license`, `year`, `type` (the figure type: a branch of the
card's taxonomy such as `radiology`, or one of its classes by code or name), `split`, `kind`
(`figure` or `panel`); operators `=`, `!=`, `in (a, b)`, `not in (a, b)`, and for `year` also
`<`, `<=`, `>`, `>=`. Values may be quoted ('...' or "..."). Anything else is a `FilterError`
naming the filter and what is wrong with it; so is a licence, split or kind that does not exist.
Several filters all apply (AND). `str(filter)` gives it back in canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from biomedclip.ingest.licenses import CODES, from_code
from biomedclip.ingest.split import SPLITS

KINDS = ("figure", "panel")
FIELDS = ("license", "year", "type", "split", "kind")
EQUALITY = ("=", "!=", "in", "not in")
ORDER = ("<", "<=", ">", ">=")
MAX_VALUES = 64
_FILTER = re.compile(r"^\s*(?P<field>[A-Za-z_]\w*)\s*(?P<op>not\s+in\b|in\b|>=|<=|!=|==|=|>|<)\s*(?P<value>.*?)\s*$",
                     re.S)
_LIST = re.compile(r"^\((?P<items>.*)\)$", re.S)
_QUOTED = re.compile(r"""^(?:'(?P<single>[^']*)'|"(?P<double>[^"]*)")$""")


class FilterError(ValueError):
    """A filter that cannot be used; the message quotes it and says why."""


@dataclass(frozen=True)
class Filter:
    field: str
    op: str  # one of EQUALITY + ORDER ("in" / "not in" hold several values)
    values: tuple[str | int, ...]

    def __str__(self) -> str:
        shown = [str(v) if isinstance(v, int) or _plain(v) else f'"{v}"' for v in self.values]
        if self.op in ("in", "not in"):
            return f"{self.field} {self.op} ({', '.join(shown)})"
        return f"{self.field} {self.op} {shown[0]}"

    def accepts(self, value: str | int | None) -> bool:
        """Does a row with this field's `value` pass? (A row without a value passes only `!=` and
        `not in`.) The reference the vectorised `biomedclip.search.facets` is tested against."""
        if value is None:
            return self.op in ("!=", "not in")
        if self.op in ("=", "in"):
            return value in self.values
        if self.op in ("!=", "not in"):
            return value not in self.values
        bound = self.values[0]
        assert isinstance(value, int) and isinstance(bound, int)
        return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[self.op]


def _plain(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(?: [\w.-]+)*", value)) and value not in ("in", "not")


def _unquote(text: str, source: str) -> str:
    text = text.strip()
    match = _QUOTED.match(text)
    if match:
        text = match.group("single") if match.group("single") is not None else match.group("double")
    elif any(c in text for c in "'\"(),"):
        raise FilterError(f"filter {source!r}: value {text!r} has a quote, bracket or comma (quote it whole)")
    if not text.strip():
        raise FilterError(f"filter {source!r}: an empty value")
    return text.strip()


def _values(raw: str, op: str, source: str) -> list[str]:
    if op in ("in", "not in"):
        match = _LIST.match(raw)
        if not match:
            raise FilterError(f"filter {source!r}: '{op}' takes a list in brackets, e.g. license in (CC BY, CC0)")
        items = re.findall(r"""'[^']*'|"[^"]*"|[^,]+""", match.group("items"))
        if not items or not "".join(items).strip():
            raise FilterError(f"filter {source!r}: an empty list")
        if len(items) > MAX_VALUES:
            raise FilterError(f"filter {source!r}: {len(items)} values, at most {MAX_VALUES}")
        if match.group("items").count(",") != len(items) - 1:
            raise FilterError(f"filter {source!r}: an empty item in the list")
        return [_unquote(item, source) for item in items]
    if _LIST.match(raw):
        raise FilterError(f"filter {source!r}: a list needs 'in' or 'not in', not '{op}'")
    return [_unquote(raw, source)]


def _typed(field: str, value: str, source: str) -> str | int:
    if field == "year":
        if not re.fullmatch(r"\d{4}", value):
            raise FilterError(f"filter {source!r}: year {value!r} is not a four-digit year")
        return int(value)
    if field == "license":
        code = from_code(value)
        if code is None:
            raise FilterError(f"filter {source!r}: unknown licence {value!r} (licences: {', '.join(CODES)})")
        return code
    if field == "split" and value not in SPLITS:
        raise FilterError(f"filter {source!r}: unknown split {value!r} (splits: {', '.join(SPLITS)})")
    if field == "kind" and value not in KINDS:
        raise FilterError(f"filter {source!r}: unknown kind {value!r} (kinds: {', '.join(KINDS)})")
    return value.lower() if field == "type" else value


def parse_filter(text: str) -> Filter:
    """One filter from its text; raises FilterError naming it and what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("an empty filter (e.g. 'year >= 2020')")
    if len(text) > 1000:
        raise FilterError(f"filter {text[:40]!r}...: longer than 1000 characters")
    match = _FILTER.match(text)
    if not match:
        raise FilterError(f"filter {text!r}: not FIELD OP VALUE (e.g. 'license in (CC BY, CC0)', "
                          "'year >= 2020', 'type = radiology')")
    field, op = match.group("field").lower(), " ".join(match.group("op").split()).lower()
    op = "=" if op == "==" else op
    if field not in FIELDS:
        raise FilterError(f"filter {text!r}: unknown field {match.group('field')!r} (fields: {', '.join(FIELDS)})")
    if op in ORDER and field != "year":
        raise FilterError(f"filter {text!r}: '{op}' compares years only; {field} takes =, !=, in, not in")
    raw = match.group("value")
    if not raw:
        raise FilterError(f"filter {text!r}: no value after '{op}'")
    values = [_typed(field, v, text) for v in _values(raw, op, text)]
    return Filter(field, op, tuple(dict.fromkeys(values)))


def parse_filters(texts: list[str] | tuple[str, ...]) -> tuple[Filter, ...]:
    return tuple(parse_filter(t) for t in texts)
