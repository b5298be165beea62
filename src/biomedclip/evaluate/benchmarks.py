"""Labelled zero-shot benchmarks, as PCam / LC25000 / RSNA users prepare them, on disk or S3.

Two layouts, either under a folder or an `s3://bucket/prefix`:
- `labels.csv` with columns `path,label` (paths relative to the benchmark's root), optionally a
  `dataset.json` whose `classes` lists the class names in order (the demo benchmark's layout);
- an image folder: `<root>/<class name>/<image>`; the folder names are the class names.

Class names are what the prompts say ("this is an image of {chest X-ray}"). Bad input is never a
wrong metric: a label outside the declared classes or a declared class without images is an error
naming it; an image that cannot be decoded is skipped and counted, with its key and reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError

from biomedclip.config import S3Params
from biomedclip.storage import MissingObject, ObjectStore, UnsafeKey, open_store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
MAX_PIXELS = 50_000_000  # decompression bombs are skipped, not decoded


class BenchmarkError(ValueError):
    """A benchmark whose labels cannot give a correct metric (names the row or class)."""


@dataclass
class Benchmark:
    name: str
    root: str
    classes: list[str]
    examples: list[tuple[str, int]]  # (key in the store, class index)
    store: ObjectStore
    skipped: list[dict[str, str]] = field(default_factory=list)  # filled while images are read

    def counts(self) -> dict[str, int]:
        found = Counter(label for _, label in self.examples)
        return {name: found[i] for i, name in enumerate(self.classes)}

    def images(self) -> Iterator[tuple[Image.Image, int]]:
        """Decoded RGB images with their class index; undecodable ones go to `skipped` (reset
        at each pass, so counts are per pass)."""
        self.skipped = []
        for key, label in self.examples:
            try:
                data = self.store.get(key)
                with Image.open(io.BytesIO(data)) as image:
                    if image.width * image.height > MAX_PIXELS:
                        raise ValueError(f"{image.width}x{image.height} pixels is over the limit")
                    rgb = image.convert("RGB")
            except (OSError, MissingObject, UnsafeKey, UnidentifiedImageError, ValueError,
                    Image.DecompressionBombError) as exc:
                self.skipped.append({"key": key, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            yield rgb, label


def _from_csv(name: str, root: str, store: ObjectStore, declared: list[str] | None) -> Benchmark:
    text = store.get("labels.csv").decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"path", "label"} <= set(rows[0]):
        raise BenchmarkError(f"{root}/labels.csv: needs columns path,label (has {sorted(rows[0])})")
    classes = declared or sorted({row["label"] for row in rows})
    index = {c: i for i, c in enumerate(classes)}
    examples = []
    seen: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if not (row["label"] or "").strip():
            raise BenchmarkError(f"{root}/labels.csv line {line}: empty label for {row['path']!r}")
        if seen.setdefault(row["path"], row["label"]) != row["label"]:
            raise BenchmarkError(f"{root}/labels.csv line {line}: {row['path']!r} is listed again with label "
                                 f"{row['label']!r} (earlier {seen[row['path']]!r})")
        if row["label"] not in index:
            raise BenchmarkError(f"{root}/labels.csv line {line}: label {row['label']!r} is not one of "
                                 f"the benchmark's classes {classes}")
        key = str(PurePosixPath(row["path"]))
        if key.startswith(("/", "..")):
            raise BenchmarkError(f"{root}/labels.csv line {line}: path {row['path']!r} leaves the benchmark")
        examples.append((key, index[row["label"]]))
    return Benchmark(name, root, classes, examples, store)


def _from_folders(name: str, root: str, store: ObjectStore, declared: list[str] | None) -> Benchmark:
    found: dict[str, list[str]] = {}
    for info in store.list(""):
        parts = PurePosixPath(info.key).parts
        if len(parts) == 2 and PurePosixPath(parts[1]).suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(parts[0], []).append(info.key)
    classes = declared or sorted(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BenchmarkError(f"{root}: folders {unknown} are not among the declared classes {classes}")
    examples = [(key, i) for i, c in enumerate(classes) for key in sorted(found.get(c, []))]
    return Benchmark(name, root, classes, examples, store)


def load_benchmark(name: str, root: str, *, classes: list[str] | None = None,
                   s3: S3Params | None = None) -> Benchmark:
    """Read a benchmark's labels (not its images) from a folder or `s3://bucket/prefix`."""
    store = open_store(root, s3 or S3Params())
    declared = list(classes) if classes else None
    if declared is None:
        try:
            declared = json.loads(store.get("dataset.json")).get("classes") or None
        except (MissingObject, ValueError, AttributeError):
            declared = None
    try:
        store.get("labels.csv")
        has_csv = True
    except MissingObject:
        has_csv = False
    benchmark = (_from_csv if has_csv else _from_folders)(name, root, store, declared)
    if len(benchmark.classes) < 2:
        raise BenchmarkError(f"{root}: zero-shot classification needs at least 2 classes, found "
                             f"{benchmark.classes}")
    empty = [c for c, n in benchmark.counts().items() if n == 0]
    if empty:
        raise BenchmarkError(f"{root}: classes without images: {empty}")
    return benchmark
