"""Demo stand-ins of VQA-RAD and SLAKE 1.0 in their own formats, so the `vqa` stage runs its real
readers end to end without the datasets (both are licensed downloads).

Images are drawn by the demo's radiology renderers (chest X-ray, CT, MRI, ultrasound), from a seed
stream the corpus never uses; every question is asked about what the renderer drew (its truth):
the modality and figure type, the organ or body region, whether the image is normal, the finding,
its side, the CT's contrast, the X-ray's view, the MRI's sequence; open and closed.

Under `out/` (one demo marker for the folder: a rerun replaces it):
- `vqa_rad/`, the OSF release's layout: `VQA_RAD Dataset Public.json` (the release's fields:
  `qid`, `image_name` `synpicNNNNN.jpg`, `image_case_url`, `image_organ`, `answer`, `answer_type`
  with the release's trailing spaces on some (`"CLOSED "`), `question_type`, `question`,
  `phrase_type`, ...) and `VQA_RAD Image Folder/`. As in the release, test questions
  (`test_freeform`, `test_para`) are asked about images that train questions are asked about too.
- `slake/`, SLAKE 1.0's layout: `train.json`, `validate.json`, `test.json` (split by image;
  `img_id`, `img_name` `xmlabN/source.jpg`, `question`, `answer`, `q_lang`, `location`, `modality`,
  `answer_type`, `base_type`, `content_type`, `triple`, `qid`), `imgs/xmlabN/source.jpg` beside
  a `mask.png` and `detection.json` (the reader ignores them), English questions and some
  Chinese ones.
- In both, a few test answers never occur in training (`TEST_ONLY`): an honest protocol counts
  them wrong and reports them as outside the vocabulary.

Same params, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.random import Generator
from PIL import Image

from biomedclip.atomic_io import atomic_directory, check_replaceable
from biomedclip.console import progress
from biomedclip.demo.corpus import MARKER, write_marker
from biomedclip.demo.figures import CLASS_NAMES, render
from biomedclip.demo.params import SideRange, VqaDemoParams
from biomedclip.demo.plan import BENCHMARK_STREAM, new_seed, rng_for

# Seed-sequence indices in BENCHMARK_STREAM, far from benchmark.py's and native.py's.
RAD_PART, SLAKE_PART = 2 * 10**9, 2 * 10**9 + 10**6
RAD_KINDS = ("chest_xray", "ct", "mri", "ultrasound")
SLAKE_KINDS = ("chest_xray", "ct", "mri")  # SLAKE holds X-ray, CT and MRI
MODALITY = {"chest_xray": "x-ray", "ct": "ct", "mri": "mri", "ultrasound": "ultrasound"}
SLAKE_MODALITY = {"chest_xray": "X-Ray", "ct": "CT", "mri": "MRI"}
RAD_ORGAN = {"chest": "CHEST", "abdomen": "ABD", "head": "HEAD", "liver": "ABD",  # image_organ
             "kidney": "ABD", "thyroid": "HEAD", "carotid artery": "HEAD", "breast": "CHEST"}
TEST_ONLY = ("hemorrhage", "carotid artery")  # answers asked only in the test split
RAD_TEST_RATE = 0.13  # the release: 451 of 3,515 questions
SLAKE_SPLITS = (("train", 0.7), ("validate", 0.15), ("test", 0.15))
ZH = {"yes": "是", "no": "否", "x-ray": "X光", "ct": "CT", "mri": "核磁共振", "ultrasound": "超声",
      "chest": "胸部", "abdomen": "腹部", "head": "头部"}


@dataclass(frozen=True)
class DemoQuestion:
    question: str
    answer: str
    closed: bool
    content: str  # what it asks about: Modality, Organ, Abnormality, Position, Plane, Attribute
    question_type: str  # VQA-RAD's category: MODALITY, ORGAN, ABN, PRES, POS, PLANE, ATTRIB


@dataclass(frozen=True)
class DemoImage:
    kind: str
    seed: int
    width: int
    height: int
    truth: dict[str, Any]

    @property
    def organ(self) -> str:
        return {"chest_xray": "chest", "mri": "head"}.get(self.kind) or self.truth.get("region") \
            or self.truth["organ"]


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _open(question: str, answer: str, content: str, kind: str) -> DemoQuestion:
    return DemoQuestion(question, answer, False, content, kind)


def _closed(question: str, flag: bool, content: str, kind: str, zh: bool = False) -> DemoQuestion:
    return DemoQuestion(question, ZH[_yes(flag)] if zh else _yes(flag), True, content, kind)


def questions_about(image: DemoImage, rng: Generator) -> list[DemoQuestion]:
    """English questions about what the renderer drew, open and closed."""
    kind, truth = image.kind, image.truth
    other = RAD_KINDS[int(rng.integers(len(RAD_KINDS)))]
    article = "an" if other in ("mri", "ultrasound") else "a"
    finding = truth.get("finding", "normal")
    out = [_open("What imaging modality was used?", MODALITY[kind], "Modality", "MODALITY"),
           _closed(f"Is this {article} {MODALITY[other]} image?", other == kind, "Modality",
                   "MODALITY"),
           _open("What type of image is this?", CLASS_NAMES[kind].lower(), "Modality", "MODALITY"),
           _open("Which part of the body is shown?", image.organ, "Organ", "ORGAN"),
           _closed("Is this image normal?", finding == "normal", "Abnormality", "ABN")]
    if finding != "normal":
        out.append(_open("What abnormality is seen?", finding, "Abnormality", "PRES"))
        if "side" in truth:
            asked = "left" if rng.random() < 0.5 else "right"
            out.append(_closed(f"Is the abnormality on the {asked} side?", truth["side"] == asked,
                               "Position", "POS"))
    if kind == "ct":
        out.append(_closed("Was contrast given?", truth["contrast"] == "contrast-enhanced",
                           "Attribute", "ATTRIB"))
    if kind == "chest_xray":
        view = "pa" if truth["view"] == "posteroanterior" else "ap"
        out.append(_open("What is the view of this radiograph?", view, "Plane", "PLANE"))
    if kind == "mri":
        sequence = truth["sequence"].split("-")[0].lower()  # T1-weighted -> t1, FLAIR -> flair
        out.append(_open("What sequence is this MRI?", sequence, "Attribute", "ATTRIB"))
    return out


def chinese_questions(image: DemoImage) -> list[DemoQuestion]:
    """SLAKE's Chinese questions (q_lang zh) about the same truth."""
    normal = image.truth.get("finding", "normal") == "normal"
    return [_open("这张图片的成像方式是什么?", ZH[MODALITY[image.kind]], "Modality", "MODALITY"),
            _open("图中显示的是身体的哪个部位?", ZH.get(image.organ, image.organ), "Organ", "ORGAN"),
            _closed("这张图片正常吗?", normal, "Abnormality", "ABN", zh=True)]


def _images(seed: int, part: int, count: int, kinds: tuple[str, ...],
            side: SideRange) -> list[DemoImage]:
    images = []
    for i in range(count):
        rng = rng_for(seed, BENCHMARK_STREAM, part + i)
        kind = kinds[i % len(kinds)]
        w, h = (int(rng.integers(side.min, side.max + 1)) for _ in range(2))
        render_seed = new_seed(rng)
        images.append(DemoImage(kind, render_seed, w, h, render(kind, render_seed, 16, 16)[1]))
    return images


def _save_jpeg(image: DemoImage, path: Path) -> None:
    pixels, truth = render(image.kind, image.seed, image.width, image.height)
    if truth != image.truth:  # drawn before any pixel: a thumbnail of the seed has the same truth
        raise RuntimeError(f"{image.kind} drew {truth} at full size, {image.truth} small")
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels.save(path, format="JPEG", quality=90)


def _dump(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_vqa_rad(root: Path, params: VqaDemoParams) -> int:
    """The OSF layout; returns the number of questions."""
    records: list[dict[str, Any]] = []
    images = _images(params.seed, RAD_PART, params.vqa_rad_images, RAD_KINDS, params.image_side)
    for i, image in enumerate(progress(images, total=len(images),
                                       description="VQA-RAD stand-in images")):
        name = f"synpic{50000 + i * 37}.jpg"
        _save_jpeg(image, root / "VQA_RAD Image Folder" / name)
        rng = rng_for(params.seed, BENCHMARK_STREAM, RAD_PART + 500_000 + i)
        for j, q in enumerate(questions_about(image, rng)):
            test = q.answer in TEST_ONLY or (rng.random() < RAD_TEST_RATE)
            phrase = ("test_" if test else "") + ("para" if rng.random() < 0.3 else "freeform")
            kind = "CLOSED" if q.closed else "OPEN"
            records.append({
                "qid": len(records) + 1, "image_name": name, "image_case_url":
                f"https://medpix.nlm.nih.gov/case?id={image.seed % 10**8:08d}",
                "image_organ": RAD_ORGAN[image.organ],
                "answer": q.answer, "answer_type": kind + (" " if (i + j) % 9 == 4 else ""),
                "question_type": q.question_type, "question": q.question, "phrase_type": phrase,
                "qid_linked_id": f"{image.seed % 10**6:06d}{j:02d}", "evaluation": "given",
                "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL"})
    _dump(root / "VQA_RAD Dataset Public.json", records)
    return len(records)


def _slake_split(image: DemoImage, rng: Generator) -> str:
    if image.truth.get("finding") in TEST_ONLY:
        return "test"
    draw, edge = rng.random(), 0.0
    for split, share in SLAKE_SPLITS:
        edge += share
        if draw < edge:
            return split
    return SLAKE_SPLITS[-1][0]


def write_slake(root: Path, params: VqaDemoParams) -> int:
    """SLAKE 1.0's layout; returns the number of questions (both languages)."""
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split, _ in SLAKE_SPLITS}
    images = _images(params.seed, SLAKE_PART, params.slake_images, SLAKE_KINDS, params.image_side)
    qid = 0
    for i, image in enumerate(progress(images, total=len(images),
                                       description="SLAKE stand-in images")):
        folder = f"xmlab{i + 1}"
        _save_jpeg(image, root / "imgs" / folder / "source.jpg")
        Image.new("L", (image.width, image.height), 0).save(root / "imgs" / folder / "mask.png")
        (root / "imgs" / folder / "detection.json").write_text("[]\n", encoding="utf-8")
        rng = rng_for(params.seed, BENCHMARK_STREAM, SLAKE_PART + 500_000 + i)
        split = _slake_split(image, rng)
        asked: list[tuple[str, DemoQuestion]] = [("en", q) for q in questions_about(image, rng)]
        asked += [("zh", q) for q in chinese_questions(image)]
        for language, q in asked:
            qid += 1
            splits[split].append({
                "img_id": i + 1, "img_name": f"{folder}/source.jpg", "question": q.question,
                "answer": q.answer, "q_lang": language, "location": image.organ.title(),
                "modality": SLAKE_MODALITY[image.kind], "base_type": "vqa",
                "answer_type": "CLOSED" if q.closed else "OPEN", "content_type": q.content,
                "triple": ["vhead", "_", "_"], "qid": qid})
    for split, records in splits.items():
        _dump(root / f"{split}.json", records)
    return qid


@dataclass(frozen=True)
class VqaDemoReport:
    path: Path
    vqa_rad_questions: int
    slake_questions: int

    def summary(self) -> str:
        return (f"VQA stand-ins `{self.path}`: VQA-RAD {self.vqa_rad_questions} questions, SLAKE "
                f"{self.slake_questions} questions (English and Chinese)")


def write_vqa_demo(params: VqaDemoParams, *, force: bool = False) -> VqaDemoReport:
    """Write `params.out/{vqa_rad,slake}` atomically; same params, same bytes. An existing folder
    is replaced only if this command wrote it (its demo marker), or with `force`."""
    check_replaceable(params.out, MARKER, force=force)
    with atomic_directory(params.out) as staging:
        write_marker(staging)
        (staging / "vqa_rad").mkdir()
        (staging / "slake").mkdir()
        rad = write_vqa_rad(staging / "vqa_rad", params)
        slake = write_slake(staging / "slake", params)
    return VqaDemoReport(params.out, rad, slake)
