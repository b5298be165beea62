"""What filters read: one small array per field, one entry per indexed vector (4-6 bytes a vector,
~130 MB at PMC-15M's 24M vectors), and the mask a set of filters makes of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biomedclip.card.figure_types import group_of
from biomedclip.ingest.licenses import CODES
from biomedclip.ingest.split import SPLITS
from biomedclip.search.filters import KINDS, Filter, FilterError

NONE = 255  # "no value" in the uint8 columns (year: 0)


@dataclass(frozen=True)
class Facets:
    license: np.ndarray  # (N,) uint8 index into CODES
    year: np.ndarray  # (N,) int16, 0 unknown
    split: np.ndarray  # (N,) uint8 index into SPLITS
    kind: np.ndarray  # (N,) uint8 index into KINDS
    type: np.ndarray  # (N,) uint8 index into `classes`
    classes: tuple[tuple[str, str], ...]  # (code, name) of the figure-type taxonomy; () when not typed

    def __len__(self) -> int:
        return len(self.year)

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez(fh, license=self.license, year=self.year, split=self.split, kind=self.kind, type=self.type)

    @classmethod
    def load(cls, path: Path, classes: Sequence[tuple[str, str]]) -> Facets:
        with np.load(path) as data:
            return cls(data["license"], data["year"], data["split"], data["kind"], data["type"],
                       tuple((c, n) for c, n in classes))


def code_of(value: str | None, vocabulary: Sequence[str]) -> int:
    return vocabulary.index(value) if value in vocabulary else NONE


def value_at(facets: Facets, field: str, i: int) -> str | int | None:
    """Row `i`'s value of `field`, as a filter compares it (type: the class code)."""
    if field == "year":
        return int(facets.year[i]) or None
    column, vocabulary = {"license": (facets.license, CODES), "split": (facets.split, SPLITS),
                          "kind": (facets.kind, KINDS),
                          "type": (facets.type, [c for c, _ in facets.classes])}[field]
    code = int(column[i])
    return vocabulary[code] if code != NONE and code < len(vocabulary) else None


def _type_codes(facets: Facets, value: str, source: Filter) -> list[int]:
    """Class indices a `type` value names: a branch (radiology), a class code (DRXR) or name."""
    if not facets.classes:
        raise FilterError(f"filter '{source}': this index has no figure types (built with index.figure_types "
                          "off, or without the card's taxonomy)")
    found = [i for i, (code, name) in enumerate(facets.classes)
             if value in (code.lower(), name.lower(), group_of(code).lower())]
    if not found:
        groups = sorted({group_of(code) for code, _ in facets.classes})
        raise FilterError(f"filter '{source}': unknown figure type {value!r} (types: {', '.join(groups)}, "
                          "or a class code or name of the taxonomy)")
    return found


def _matches(facets: Facets, condition: Filter) -> np.ndarray:
    if condition.field == "year":
        years = facets.year.astype(np.int32)
        known = years > 0
        if condition.op in ("=", "in", "!=", "not in"):
            hit = np.isin(years, np.asarray(condition.values, dtype=np.int32))
            return known & hit if condition.op in ("=", "in") else ~(known & hit)
        bound = int(condition.values[0])
        compare = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}[condition.op]
        return known & compare(years, bound)
    if condition.field == "type":
        codes = [c for v in condition.values for c in _type_codes(facets, str(v), condition)]
        column = facets.type
    else:
        column, vocabulary = {"license": (facets.license, CODES), "split": (facets.split, SPLITS),
                              "kind": (facets.kind, KINDS)}[condition.field]
        codes = [vocabulary.index(v) for v in condition.values]
    hit = np.isin(column, np.asarray(codes, dtype=column.dtype))
    return hit if condition.op in ("=", "in") else ~hit


def mask(facets: Facets, filters: Sequence[Filter]) -> np.ndarray | None:
    """(N,) bool: the vectors every filter accepts; None without filters."""
    if not filters:
        return None
    result = np.ones(len(facets), dtype=bool)
    for condition in filters:
        result &= _matches(facets, condition)
    return result
