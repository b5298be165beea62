"""The paper's benchmarks in the formats users download them in, and its prompts for each.

Readers (chosen by `format`, or detected from the files with `auto`):
- `pcam`: PatchCamelyon's HDF5 files as distributed, `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`
  (`x`: uint8 N x 96 x 96 x 3, `y`: uint8 N x 1 x 1 x 1; the `.h5.gz` forms too), read `CHUNK`
  patches at a time: the 262,144-patch train split is never in memory at once.
- `lc25000`:
  `lung_colon_image_set/{lung_image_sets/{lung_aca,lung_n,lung_scc},colon_image_sets/{colon_aca,colon_n}}/*.jpeg`;
  the lung and colon tasks are two benchmarks (`preset` picks which).
- `rsna_pneumonia`: `stage_2_train_labels.csv` (`patientId,x,y,width,height,Target`, one row per
  box: several per positive patient) and `stage_2_train_images/<patientId>.dcm`: one label per
  patient (pneumonia when any row says so), the DICOM read with pydicom, MONOCHROME1 inverted,
  windowed to 8 bits (the file's window, else its value range).
- `tcga_til`: class folders of the TIL patches.
(`labels_csv` and `class_folders` are `biomedclip.evaluate.benchmarks`' own.)

Presets give the paper's class prompts and templates (supplementary table 10) and the metric it
reports for that benchmark (the headline: accuracy, AUROC for TCGA-TIL).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from biomedclip.storage import LocalStore, MissingObject, ObjectStore, UnsafeKey

log = logging.getLogger(__name__)

CHUNK = 1024  # PCam patches read at a time (3 MB per 100)
PCAM_SPLITS = {"train": "train", "val": "valid", "test": "test"}
PCAM_FILE = "camelyonpatch_level_2_split_{split}_{part}.h5"
RSNA_LABELS, RSNA_IMAGES = "stage_2_train_labels.csv", "stage_2_train_images"
LC25000_TASKS = {"lc25000_lung": ("lung_image_sets", ("lung_aca", "lung_n", "lung_scc")),
                 "lc25000_colon": ("colon_image_sets", ("colon_aca", "colon_n"))}


@dataclass(frozen=True)
class Preset:
    """A paper benchmark's prompts: dataset label -> class prompt, templates, headline metric."""

    format: str
    classes: dict[str, str]
    templates: tuple[str, ...]
    headline: str  # a key of the zero-shot metrics


TEMPLATES_A = ("this is an image of {}", "{} presented in image")
TEMPLATES_B = ("a photo of {}", "{} presented in image")
PRESETS = {
    "pcam": Preset("pcam", {"0": "normal lymph node", "1": "lymph node metastasis"}, TEMPLATES_A, "top1"),
    "lc25000_lung": Preset("lc25000", {"lung_aca": "lung adenocarcinomas", "lung_n": "normal lung tissue",
                                       "lung_scc": "lung squamous cell carcinomas"}, TEMPLATES_A, "top1"),
    "lc25000_colon": Preset("lc25000", {"colon_aca": "colon adenocarcinomas", "colon_n": "normal colonic tissue"},
                            TEMPLATES_B, "top1"),
    "tcga_til": Preset("tcga_til", {"til-negative": "none", "til-positive": "tumor infiltrating lymphocytes"},
                       TEMPLATES_B, "auroc"),
    "rsna_pneumonia": Preset("rsna_pneumonia", {"0": "normal lung", "1": "pneumonia"}, TEMPLATES_B, "top1"),
}
# The paper's own zero-shot results for its published model (224 px), for reference beside ours.
PAPER_ZERO_SHOT = {"pcam": 73.41, "lc25000_lung": 65.23, "lc25000_colon": 92.98, "tcga_til": 67.04,
                   "rsna_pneumonia": 78.95}


class FormatError(ValueError):
    """A benchmark whose files are not in the format named (names the file and what is wrong)."""


# -- reading images ----------------------------------------------------------------------------
READ_ERRORS = (OSError, MissingObject, UnsafeKey, ValueError, KeyError, Image.DecompressionBombError)


def decoded(data: bytes, max_pixels: int) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} pixels is over the limit")
        return image.convert("RGB")


class StoreImages:
    """Image files in a store, decoded one by one."""

    def __init__(self, store: ObjectStore, max_pixels: int) -> None:
        self.store, self.max_pixels = store, max_pixels

    def decode(self, data: bytes) -> Image.Image:
        return decoded(data, self.max_pixels)

    def read(self, keys: Iterable[str]) -> Iterator[Image.Image | Exception]:
        for key in keys:
            try:
                yield self.decode(self.store.get(key))
            except READ_ERRORS as exc:
                yield exc


class DicomImages(StoreImages):
    """DICOM files as 8-bit RGB: MONOCHROME1 inverted, windowed to 8 bits."""

    def decode(self, data: bytes) -> Image.Image:
        return dicom_image(data)


def dicom_image(data: bytes) -> Image.Image:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        pixels = dataset.pixel_array.astype(np.float64)
    except (InvalidDicomError, AttributeError, TypeError) as exc:
        raise ValueError(f"not a readable DICOM image ({type(exc).__name__}: {exc})") from None
    if pixels.ndim != 2:
        raise ValueError(f"a greyscale DICOM image has 2 dimensions, this one {pixels.shape}")
    slope, intercept = (float(getattr(dataset, "RescaleSlope", 1) or 1),
                        float(getattr(dataset, "RescaleIntercept", 0) or 0))
    pixels = pixels * slope + intercept
    center, width = _window(dataset)
    low, high = (center - width / 2, center + width / 2) if width else (pixels.min(), pixels.max())
    scaled = np.clip((pixels - low) / max(high - low, 1e-9), 0, 1)
    if getattr(dataset, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":  # white is low
        scaled = 1 - scaled
    return Image.fromarray(np.round(scaled * 255).astype(np.uint8)).convert("RGB")


def _window(dataset: Any) -> tuple[float, float]:
    """The file's (first) window centre and width; (0, 0) when it has none."""
    from pydicom.multival import MultiValue

    def first(value: Any) -> float | None:
        try:
            return None if value is None else float(value[0] if isinstance(value, MultiValue | list) else value)
        except (TypeError, ValueError, IndexError):
            return None

    center, width = first(getattr(dataset, "WindowCenter", None)), first(getattr(dataset, "WindowWidth", None))
    return (center, width) if center is not None and width and width > 0 else (0.0, 0.0)


class PcamImages:
    """PCam's `x` dataset, CHUNK patches at a time, in index order. A decompressed copy (of a
    `.h5.gz` or an S3 object) in `scratch` is removed with the reader."""

    def __init__(self, path: Path, chunk: int = CHUNK, scratch: Path | None = None) -> None:
        self.path, self.chunk = path, chunk
        if scratch is not None:
            weakref.finalize(self, shutil.rmtree, scratch, True)

    def read(self, keys: Iterable[str]) -> Iterator[Image.Image | Exception]:
        import h5py

        with h5py.File(self.path, "r") as handle:
            x = handle["x"]
            block, start = None, -1
            for key in keys:
                index = int(key)
                if block is None or not start <= index < start + len(block):
                    start = index - index % self.chunk
                    block = x[start:start + self.chunk]
                yield Image.fromarray(block[index - start]).convert("RGB")


# -- detecting and listing -----------------------------------------------------------------------
def detect(store: ObjectStore) -> str:
    """The format of a benchmark from its files (the choice is logged by the caller)."""
    names = {info.key for info in store.list("")}
    tops = {PurePosixPath(n).parts[0] for n in names}
    if "labels.csv" in names:
        return "labels_csv"
    if any(PurePosixPath(n).name.startswith("camelyonpatch_level_2_split_") for n in names):
        return "pcam"
    if RSNA_LABELS in names:
        return "rsna_pneumonia"
    if tops & {"lung_colon_image_set", "lung_image_sets", "colon_image_sets"}:
        return "lc25000"
    return "class_folders"


def _local_copy(store: ObjectStore, key: str, scratch: Path) -> Path:
    """A path h5py can open: the file itself on disk, else a streamed copy in `scratch`
    (gunzipped for `.h5.gz`); never the whole file in memory."""
    if isinstance(store, LocalStore) and not key.endswith(".gz"):
        return store.root / key
    fetched = store.root / key if isinstance(store, LocalStore) else scratch / PurePosixPath(key).name
    if not isinstance(store, LocalStore):
        store.download(key, fetched)
    if not key.endswith(".gz"):
        return fetched
    target = scratch / PurePosixPath(key).name.removesuffix(".gz")
    with gzip.open(fetched, "rb") as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, length=16 << 20)
    if fetched.parent == scratch:
        fetched.unlink()
    return target


def pcam(store: ObjectStore, root: str, split: str) -> tuple[list[str], list[tuple[str, int]], PcamImages]:
    """PCam's labels for `split` and a chunked reader of its patches."""
    import h5py

    wanted = {part: PCAM_FILE.format(split=PCAM_SPLITS[split], part=part) for part in ("x", "y")}
    names = {info.key for info in store.list("")}
    keys = {}
    for part, name in wanted.items():
        key = next((n for n in sorted(names) if PurePosixPath(n).name in (name, name + ".gz")), None)
        if key is None:
            raise FormatError(f"{root}: no {name} (or {name}.gz) for the {split} split of PCam")
        keys[part] = key
    scratch = Path(tempfile.mkdtemp(prefix="biomedclip-pcam-"))
    try:
        y_path, x_path = _local_copy(store, keys["y"], scratch), _local_copy(store, keys["x"], scratch)
        with h5py.File(y_path, "r") as handle:
            y = np.asarray(handle["y"]).reshape(-1)
        with h5py.File(x_path, "r") as handle:
            shape, dtype = handle["x"].shape, handle["x"].dtype
    except (OSError, KeyError) as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        raise FormatError(f"{root}: PCam file unreadable ({exc})") from None
    if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] != len(y):
        raise FormatError(f"{root}/{keys['x']}: x is {dtype} {shape}, PCam's is uint8 N x 96 x 96 x 3 with one "
                          f"label per patch ({len(y)} in y)")
    unknown = sorted(set(np.unique(y).tolist()) - {0, 1})
    if unknown:
        raise FormatError(f"{root}/{keys['y']}: labels {unknown}, PCam's are 0 and 1")
    if x_path.parent != scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    reader = PcamImages(x_path, scratch=scratch if x_path.parent == scratch else None)
    return ["0", "1"], [(str(i), int(label)) for i, label in enumerate(y)], reader


def lc25000(store: ObjectStore, root: str, preset: str | None) -> tuple[list[str], list[tuple[str, int]]]:
    if preset not in LC25000_TASKS:
        raise FormatError(f"{root}: LC25000 holds two tasks; set preset to lc25000_lung or lc25000_colon")
    folder, classes = LC25000_TASKS[preset]
    found: dict[str, list[str]] = {c: [] for c in classes}
    for info in store.list(""):
        parts = PurePosixPath(info.key).parts
        if len(parts) >= 3 and parts[-3] == folder and parts[-2] in found \
                and PurePosixPath(parts[-1]).suffix.lower() in {".jpeg", ".jpg", ".png"}:
            found[parts[-2]].append(info.key)
    examples = [(key, i) for i, c in enumerate(classes) for key in sorted(found[c])]
    return list(classes), examples


def rsna(store: ObjectStore, root: str) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        text = store.get(RSNA_LABELS).decode("utf-8-sig")
    except MissingObject:
        raise FormatError(f"{root}: no {RSNA_LABELS}") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"patientId", "Target"} <= set(rows[0]):
        raise FormatError(f"{root}/{RSNA_LABELS}: needs columns patientId,Target (has {sorted(rows[0])})")
    patients: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        if row["Target"] not in ("0", "1"):
            raise FormatError(f"{root}/{RSNA_LABELS} line {line}: Target {row['Target']!r} is not 0 or 1")
        patients[row["patientId"]] = max(patients.get(row["patientId"], 0), int(row["Target"]))
    return ["0", "1"], [(f"{RSNA_IMAGES}/{pid}.dcm", label) for pid, label in patients.items()]
