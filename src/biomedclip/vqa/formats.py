"""VQA-RAD and SLAKE in the layouts users download them in, from a folder or `s3://bucket/prefix`.

Formats (`format`, or `auto`: detected from the files, the choice logged):
- `vqa_rad`, the OSF release: `VQA_RAD Dataset Public.json` (one list of records: `qid`,
  `image_name`, `question`, `answer`, `answer_type` `OPEN`/`CLOSED`, in the release sometimes
  with trailing spaces, `phrase_type`, `question_type`, `image_organ`, ...) and the images in
  `VQA_RAD Image Folder/`. Test = `phrase_type` `test_freeform` + `test_para`, train = the rest.
- `vqa_rad`, the MEVF split layout: `trainset.json`, `testset.json` (the same fields) and
  `images/`.
- `slake`, SLAKE 1.0: `train.json`, `validate.json`, `test.json` (`qid`, `img_id`, `img_name`
  such as `xmlab102/source.jpg`, `question`, `answer`, `q_lang` `en`/`zh`, `answer_type`,
  `content_type`, `modality`, `location`, `base_type`), images under `imgs/` (the masks and
  detection files beside them are not read). Questions whose `q_lang` is not among `languages`
  are left out and counted per language.

A record that is not an object or lacks a field, an answer type that is neither open nor closed,
a qid seen twice in a file, or an image the listing does not hold is rejected: named by (file,
qid), counted by reason, kept in the report, never a crash and never silently dropped. Splits are
named `train`, `val` (SLAKE's `validate`) and `test`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from biomedclip.config import S3Params
from biomedclip.evaluate.benchmarks import MAX_PIXELS, Benchmark
from biomedclip.evaluate.formats import StoreImages
from biomedclip.storage import MissingObject, ObjectStore, UnsafeKey, check_key, open_store

log = logging.getLogger(__name__)

RAD_RELEASE, RAD_IMAGES = "VQA_RAD Dataset Public.json", "VQA_RAD Image Folder"
RAD_TEST_PHRASES = ("test_freeform", "test_para")
MEVF_FILES, MEVF_IMAGES = {"train": "trainset.json", "test": "testset.json"}, "images"
SLAKE_FILES = {"train": "train.json", "val": "validate.json", "test": "test.json"}
SLAKE_IMAGES = "imgs"
ANSWER_TYPES = {"OPEN": "open", "CLOSED": "closed"}
SPLITS = ("train", "val", "test")


class VqaFormatError(ValueError):
    """A benchmark that cannot be read at all (names the file and what is wrong)."""


class RejectReason(StrEnum):
    MALFORMED = "malformed_record"  # not an object, a field missing or of the wrong type
    UNKNOWN_ANSWER_TYPE = "unknown_answer_type"  # neither OPEN nor CLOSED (after stripping)
    DUPLICATE_QID = "duplicate_qid"  # a qid seen earlier in the same file
    MISSING_IMAGE = "missing_image"  # the image the record names is not in the benchmark
    UNREADABLE_IMAGE = "unreadable_image"  # listed, but does not decode (found when embedded)


@dataclass(frozen=True)
class Reject:
    file: str  # the annotation file, relative to the benchmark's root
    qid: str  # the record's qid, or `#<index>` where it has none
    reason: RejectReason
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "qid": self.qid, "reason": str(self.reason),
                "detail": self.detail}


@dataclass(frozen=True)
class Question:
    qid: str
    image: str  # the image's key in the benchmark's store
    question: str
    answer: str  # as released; compared after `protocol.normalise`
    answer_type: str  # "open" | "closed"
    language: str  # "en", "zh"
    file: str  # the annotation file it came from


@dataclass
class VqaDataset:
    name: str
    root: str
    format: str  # vqa_rad | slake
    layout: str  # osf | mevf | slake
    store: ObjectStore
    splits: dict[str, list[Question]]  # train, test, and val where the benchmark has one
    rejects: list[Reject] = field(default_factory=list)
    left_out_by_language: dict[str, int] = field(default_factory=dict)  # q_lang -> questions
    listing: tuple[tuple[str, int, str], ...] = ()  # (key, size, change tag) of every file

    def version(self) -> str:
        """A digest of the benchmark's files (names, sizes, change tags): a cache keyed by it is
        never stale."""
        digest = hashlib.sha256(f"vqa\0{self.format}\0{self.layout}\n".encode())
        for key, size, tag in self.listing:
            digest.update(f"{key}\0{size}\0{tag}\n".encode())
        return digest.hexdigest()

    def images(self, split: str) -> list[str]:
        """The split's distinct image keys, sorted."""
        return sorted({q.image for q in self.splits.get(split, [])})

    def reject_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(str(r.reason) for r in self.rejects).items()))


# -- detecting ------------------------------------------------------------------------------------
def detect(names: set[str]) -> tuple[str, str]:
    """(format, layout) of a benchmark from the names of its files."""
    if RAD_RELEASE in names:
        return "vqa_rad", "osf"
    if set(MEVF_FILES.values()) <= names:
        return "vqa_rad", "mevf"
    if SLAKE_FILES["train"] in names and SLAKE_FILES["test"] in names:
        return "slake", "slake"
    raise VqaFormatError(f"neither VQA-RAD ({RAD_RELEASE!r}, or {MEVF_FILES['train']} + "
                         f"{MEVF_FILES['test']}) nor SLAKE ({SLAKE_FILES['train']} + "
                         f"{SLAKE_FILES['test']}) at the top of the benchmark")


def _layout(format: str, names: set[str]) -> str:
    if format == "slake":
        return "slake"
    if RAD_RELEASE in names:
        return "osf"
    if set(MEVF_FILES.values()) <= names:
        return "mevf"
    raise VqaFormatError(f"format vqa_rad: no {RAD_RELEASE!r} (the OSF release) and no "
                         f"{MEVF_FILES['train']} + {MEVF_FILES['test']} (the MEVF split)")


# -- reading records ------------------------------------------------------------------------------
def _records(store: ObjectStore, root: str, name: str) -> list[Any]:
    try:
        data = json.loads(store.get(name).decode("utf-8-sig"))
    except MissingObject:
        raise VqaFormatError(f"{root}: no {name}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VqaFormatError(f"{root}/{name}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise VqaFormatError(f"{root}/{name}: a list of question records expected, found a "
                             f"{type(data).__name__}")
    return data


def _text(record: dict[str, Any], key: str) -> str:
    """A non-empty text field; numbers (answers such as 2 in the releases) read as text."""
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise KeyError(key if value is None else f"{key} ({type(value).__name__})")
    text = str(value).strip()
    if not text:
        raise KeyError(f"{key} (empty)")
    return text


class _Reader:
    """Turns one file's records into questions, collecting the rejects."""

    def __init__(self, dataset: VqaDataset, names: set[str],
                 languages: Iterable[str] | None) -> None:
        self.dataset, self.names = dataset, names
        self.languages = None if languages is None else set(languages)
        self.left_out: Counter[str] = Counter()

    def read(self, file: str, records: list[Any], *, image_dir: str, image_field: str,
             language_field: str | None) -> Iterator[tuple[dict[str, Any], Question]]:
        """(record, question) of each acceptable record of `file`, in file order."""
        seen: set[str] = set()
        for index, record in enumerate(records):
            named = isinstance(record, dict) and record.get("qid") is not None
            qid = str(record["qid"]) if named else f"#{index}"

            def reject(reason: RejectReason, detail: str, qid: str = qid) -> None:
                self.dataset.rejects.append(Reject(file, qid, reason, detail))

            if not isinstance(record, dict):
                reject(RejectReason.MALFORMED, f"a {type(record).__name__}, not an object")
                continue
            try:
                _text(record, "qid")
                image, question = _text(record, image_field), _text(record, "question")
                answer, kind = _text(record, "answer"), _text(record, "answer_type")
                language = _text(record, language_field) if language_field else "en"
                key = check_key(f"{image_dir}/{PurePosixPath(image).as_posix()}")
            except KeyError as exc:
                reject(RejectReason.MALFORMED, f"no usable {exc.args[0]}")
                continue
            except UnsafeKey:
                reject(RejectReason.MALFORMED,
                       f"image {record[image_field]!r} leaves the benchmark")
                continue
            if self.languages is not None and language not in self.languages:
                self.left_out[language] += 1
                continue
            if kind.upper() not in ANSWER_TYPES:
                reject(RejectReason.UNKNOWN_ANSWER_TYPE, f"answer_type {record['answer_type']!r}")
                continue
            if qid in seen:
                reject(RejectReason.DUPLICATE_QID, "the qid appears earlier in the file")
                continue
            seen.add(qid)
            if key not in self.names:
                reject(RejectReason.MISSING_IMAGE, f"no image {key!r}")
                continue
            yield record, Question(qid, key, question, answer, ANSWER_TYPES[kind.upper()],
                                   language, file)


def _vqa_rad(dataset: VqaDataset, reader: _Reader) -> None:
    if dataset.layout == "mevf":
        for split, name in MEVF_FILES.items():
            records = _records(dataset.store, dataset.root, name)
            read = reader.read(name, records, image_dir=MEVF_IMAGES, image_field="image_name",
                               language_field=None)
            dataset.splits[split] = [q for _, q in read]
        return
    records = _records(dataset.store, dataset.root, RAD_RELEASE)
    dataset.splits.update(train=[], test=[])
    read = reader.read(RAD_RELEASE, records, image_dir=RAD_IMAGES, image_field="image_name",
                       language_field=None)
    for record, question in read:
        phrase = record.get("phrase_type")
        if not isinstance(phrase, str) or not phrase.strip():
            dataset.rejects.append(Reject(RAD_RELEASE, question.qid, RejectReason.MALFORMED,
                                          "no usable phrase_type (it decides the split)"))
            continue
        dataset.splits["test" if phrase.strip() in RAD_TEST_PHRASES else "train"].append(question)


def _slake(dataset: VqaDataset, reader: _Reader) -> None:
    for split, name in SLAKE_FILES.items():
        if split == "val" and name not in reader.names:
            log.warning("benchmark %s: no %s; the epoch is chosen on train images held out "
                        "instead", dataset.name, name)
            continue
        records = _records(dataset.store, dataset.root, name)
        read = reader.read(name, records, image_dir=SLAKE_IMAGES, image_field="img_name",
                           language_field="q_lang")
        dataset.splits[split] = [q for _, q in read]


def load_vqa(name: str, root: str, *, format: str = "auto",
             languages: Iterable[str] | None = ("en",), s3: S3Params | None = None) -> VqaDataset:
    """Read a VQA benchmark's questions (not its images) from a folder or `s3://bucket/prefix`:
    those in `languages` (None: every language)."""
    store = open_store(root, s3 or S3Params())
    listing = tuple((info.key, info.size, info.tag) for info in store.list(""))
    names = {key for key, _, _ in listing}
    if format == "auto":
        try:
            format, layout = detect(names)
        except VqaFormatError as exc:
            raise VqaFormatError(f"benchmark {name} ({root}): {exc}") from None
        log.info("benchmark %s: format %s (%s layout), detected from the files in %s", name, format,
                 layout, root)
    elif format in ("vqa_rad", "slake"):
        layout = _layout(format, names)
    else:
        raise VqaFormatError(f"benchmark {name}: unknown format {format!r} "
                             "(vqa_rad, slake or auto)")
    dataset = VqaDataset(name, root, format, layout, store, {}, listing=listing)
    reader = _Reader(dataset, names, languages)
    (_vqa_rad if format == "vqa_rad" else _slake)(dataset, reader)
    dataset.left_out_by_language = dict(sorted(reader.left_out.items()))
    if dataset.rejects:
        log.warning("benchmark %s: %d questions rejected (%s), e.g. %s", name, len(dataset.rejects),
                    dataset.reject_counts(), dataset.rejects[0].as_dict())
    if not dataset.splits.get("train") or not dataset.splits.get("test"):
        sizes = {split: len(qs) for split, qs in dataset.splits.items()}
        raise VqaFormatError(f"benchmark {name} ({root}): no usable train or test questions "
                             f"({sizes}; "
                             f"{len(dataset.rejects)} rejected, left out by language: "
                             f"{dataset.left_out_by_language})")
    return dataset


def image_splits(name: str, root: str, *, format: str = "auto", s3: S3Params | None = None
                 ) -> Iterator[tuple[str, Benchmark]]:
    """(split, the split's images as a `Benchmark` of one class): what the decontamination
    hashes (`ingest.decontaminate.hash_benchmarks` reads `keyed_images()` and `version()`).
    Every language's questions count: an image is the benchmark's whatever the question's
    language."""
    dataset = load_vqa(name, root, format=format, languages=None, s3=s3)
    for split in SPLITS:
        keys = dataset.images(split)
        if keys:
            yield split, Benchmark(name, root, ["image"], [(key, 0) for key in keys], dataset.store,
                                   format=dataset.format, split=split,
                                   reader=StoreImages(dataset.store, MAX_PIXELS))
