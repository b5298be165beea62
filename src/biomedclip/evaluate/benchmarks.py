"""Labelled benchmarks, in the formats users download them in, on disk or S3.

Formats (`format`, or `auto`: detected from the files, the choice logged), under a folder or an
`s3://bucket/prefix`:
- `labels_csv`: `labels.csv` with columns `path,label` (paths relative to the benchmark's root)
  and optionally `split`, and optionally a `dataset.json` whose `classes` lists the class names in
  order (the demo benchmark's layout);
- `class_folders`: `<root>/<class>/<image>`, or `<root>/{train,val,test}/<class>/<image>`;
- `pcam`, `lc25000`, `rsna_pneumonia`, `tcga_til`: the paper's benchmarks as distributed
  (`biomedclip.evaluate.formats`).

A benchmark's dataset labels map to class prompts ("this is an image of {lymph node metastasis}"):
`classes` as a list names them in order (the labels are the prompts), as a mapping names each
label's prompt; a `preset` gives the paper's. Bad input is never a wrong metric: a label outside
the classes or a class without images is an error naming it; an image that cannot be decoded is
skipped and counted, with its key and reason.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from PIL import Image

from biomedclip.config import S3Params
from biomedclip.evaluate import formats
from biomedclip.storage import MissingObject, ObjectStore, open_store

log = logging.getLogger(__name__)
SPLIT_NAMES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
MAX_PIXELS = 50_000_000  # decompression bombs are skipped, not decoded


class BenchmarkError(ValueError):
    """A benchmark whose labels cannot give a correct metric (names the row or class)."""


@dataclass
class Benchmark:
    name: str
    root: str
    classes: list[str]  # the class prompts, in class-index order
    examples: list[tuple[str, int]]  # (key in the store, class index)
    store: ObjectStore
    format: str = "labels_csv"
    split: str | None = None  # the split read; None: the format has no splits (every image)
    reader: Any = None  # reads keys into images: formats.StoreImages (default), DicomImages, PcamImages
    skipped: list[dict[str, str]] = field(default_factory=list)  # filled while images are read

    def version(self) -> str:
        """A digest of what the benchmark is: its files (names, sizes, change tags), classes and
        examples. A feature cache keyed by it is never stale."""
        import hashlib

        digest = hashlib.sha256(json.dumps([self.format, self.split, self.classes, self.examples]).encode())
        for info in self.store.list(""):
            digest.update(f"{info.key}\0{info.size}\0{info.tag}\n".encode())
        return digest.hexdigest()

    def counts(self) -> dict[str, int]:
        found = Counter(label for _, label in self.examples)
        return {name: found[i] for i, name in enumerate(self.classes)}

    def images(self) -> Iterator[tuple[Image.Image, int]]:
        """Decoded RGB images with their class index; undecodable ones go to `skipped` (reset
        at each pass, so counts are per pass)."""
        for _, image, label in self.keyed_images():
            yield image, label

    def keyed_images(self) -> Iterator[tuple[str, Image.Image, int]]:
        """(key, decoded RGB image, class index), as `images()`: the key names the image in the
        benchmark (a file, or PCam's patch index)."""
        self.skipped = []
        reader = self.reader or formats.StoreImages(self.store, MAX_PIXELS)
        read = reader.read(key for key, _ in self.examples)
        for (key, label), image in zip(self.examples, read, strict=True):
            if isinstance(image, Exception):
                self.skipped.append({"key": key, "reason": f"{type(image).__name__}: {image}"})
                continue
            yield key, image, label


def _from_csv(name: str, root: str, store: ObjectStore, declared: list[str] | None, split: str) -> Benchmark:
    text = store.get("labels.csv").decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"path", "label"} <= set(rows[0]):
        raise BenchmarkError(f"{root}/labels.csv: needs columns path,label (has {sorted(rows[0])})")
    has_splits = bool(rows) and "split" in rows[0]
    if has_splits:  # one file for every split: keep this one's rows
        rows = [row for row in rows if (row["split"] or "").strip().lower() in SPLIT_NAMES[split]]
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
    return Benchmark(name, root, classes, examples, store, split=split if has_splits else None)


def _from_folders(name: str, root: str, store: ObjectStore, declared: list[str] | None, split: str) -> Benchmark:
    found: dict[str, list[str]] = {}
    keys = [info.key for info in store.list("")]
    split_dirs = {PurePosixPath(k).parts[0] for k in keys if len(PurePosixPath(k).parts) == 3}
    split_dir = next((d for d in sorted(split_dirs) if d.lower() in SPLIT_NAMES[split]), None)
    depth = 3 if split_dir else 2
    for key in keys:
        parts = PurePosixPath(key).parts
        if len(parts) == depth and PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES \
                and (split_dir is None or parts[0] == split_dir):
            found.setdefault(parts[-2], []).append(key)
    classes = declared or sorted(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise BenchmarkError(f"{root}: folders {unknown} are not among the declared classes {classes}")
    examples = [(key, i) for i, c in enumerate(classes) for key in sorted(found.get(c, []))]
    return Benchmark(name, root, classes, examples, store, split=split if split_dir else None)


def _prompts(labels: list[str], classes: Sequence[str] | Mapping[str, str] | None,
             preset: formats.Preset | None, root: str) -> list[str]:
    """The class prompt of each dataset label: `classes` (a mapping), else the preset's."""
    mapping = dict(classes) if isinstance(classes, Mapping) else preset.classes if preset else None
    if mapping is None:
        return list(labels)
    missing = [label for label in labels if label not in mapping]
    if missing:
        raise BenchmarkError(f"{root}: labels {missing} have no class prompt (known: {sorted(mapping)}); "
                             "give `classes` as a mapping label -> prompt")
    return [mapping[label] for label in labels]


def load_benchmark(name: str, root: str, *, classes: Sequence[str] | Mapping[str, str] | None = None,
                   format: str = "auto", preset: str | None = None, split: str = "test",
                   s3: S3Params | None = None) -> Benchmark:
    """Read a benchmark's labels (not its images) from a folder or `s3://bucket/prefix`: the
    `split` where the format has splits, every image where it has none."""
    store = open_store(root, s3 or S3Params())
    spec = formats.PRESETS.get(preset) if preset else None
    if preset and spec is None:
        raise BenchmarkError(f"{name}: unknown preset {preset!r}; known: {sorted(formats.PRESETS)}")
    if format == "auto":
        format = formats.detect(store)
        log.info("benchmark %s: format %s (detected from the files in %s)", name, format, root)
    # A mapping's labels, in its order, are the classes (and their order) as a list's are.
    declared = list(classes) if classes else None
    try:
        benchmark = _read(name, root, store, format, declared, preset, split)
    except formats.FormatError as exc:
        raise BenchmarkError(f"benchmark {name}: {exc}") from None
    benchmark.format = format
    benchmark.classes = _prompts(benchmark.classes, classes if isinstance(classes, Mapping) else None, spec, root)
    if len(benchmark.classes) < 2:
        raise BenchmarkError(f"{root}: zero-shot classification needs at least 2 classes, found "
                             f"{benchmark.classes}")
    empty = [c for c, n in benchmark.counts().items() if n == 0]
    if empty:
        raise BenchmarkError(f"{root}: classes without images: {empty}")
    return benchmark


def _read(name: str, root: str, store: ObjectStore, format: str, declared: list[str] | None,
          preset: str | None, split: str) -> Benchmark:
    """The benchmark with its dataset labels as `classes` (prompts are mapped after)."""
    if format == "pcam":
        labels, examples, reader = formats.pcam(store, root, split)
        return Benchmark(name, root, labels, examples, store, split=split, reader=reader)
    if format == "lc25000":
        labels, examples = formats.lc25000(store, root, preset)
        return Benchmark(name, root, labels, examples, store)
    if format == "rsna_pneumonia":
        labels, examples = formats.rsna(store, root)
        return Benchmark(name, root, labels, examples, store, reader=formats.DicomImages(store, MAX_PIXELS))
    if format not in ("labels_csv", "class_folders", "tcga_til"):
        raise BenchmarkError(f"{name}: unknown format {format!r}")
    if declared is None:
        try:
            declared = json.loads(store.get("dataset.json")).get("classes") or None
        except (MissingObject, ValueError, AttributeError):
            declared = None
    reader = _from_csv if format == "labels_csv" else _from_folders
    return reader(name, root, store, declared, split)
