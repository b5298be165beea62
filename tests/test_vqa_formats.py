"""VQA-RAD (the OSF release and the MEVF split) and SLAKE 1.0 as users download them
(`vqa.formats`), and the demo stand-ins written in those formats (`demo.vqa`)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from biomedclip.demo.vqa import TEST_ONLY, VqaDemoParams, write_vqa_demo
from biomedclip.vqa.formats import (
    RAD_IMAGES,
    RAD_RELEASE,
    RejectReason,
    VqaFormatError,
    image_splits,
    load_vqa,
)
from biomedclip.vqa.protocol import normalise


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (120, 30, 30)).save(path)


def rad_record(qid: int, name: str, phrase: str, answer: object = "Yes",
               kind: str = "CLOSED") -> dict:
    return {"qid": qid, "image_name": name, "image_organ": "HEAD", "question": f"Question {qid}?",
            "answer": answer, "answer_type": kind, "question_type": "PRES", "phrase_type": phrase,
            "evaluation": "given"}


RAD_RECORDS = [
    rad_record(1, "synpic1.jpg", "freeform"),
    rad_record(2, "synpic1.jpg", "test_freeform", answer="Left ", kind="OPEN "),  # trailing spaces
    rad_record(3, "synpic2.jpg", "para", answer=2, kind="OPEN"),  # a number, as in some releases
    rad_record(4, "synpic2.jpg", "test_para", kind="CLOSED "),
    rad_record(5, "synpic3.jpg", "frame", kind="closed"),
    rad_record(6, "synpic404.jpg", "freeform"),  # an image the folder does not hold
    rad_record(7, "synpic1.jpg", "freeform", kind="MAYBE"),  # an answer type that is neither
    {"qid": 8, "image_name": "synpic1.jpg", "answer": "yes", "answer_type": "CLOSED",
     "phrase_type": "para"},  # no question
    "not a record",
    rad_record(3, "synpic3.jpg", "freeform"),  # qid 3 again
    rad_record(11, "synpic3.jpg", "freeform", answer=""),  # an empty answer
    rad_record(12, "../outside.jpg", "freeform"),  # an image outside the benchmark
]


def write_rad_osf(root: Path) -> Path:
    for name in ("synpic1.jpg", "synpic2.jpg", "synpic3.jpg"):
        image(root / RAD_IMAGES / name)
    (root / RAD_RELEASE).write_text(json.dumps(RAD_RECORDS), encoding="utf-8")
    return root


def write_rad_mevf(osf: Path, root: Path) -> Path:
    """The MEVF split layout from an OSF folder: trainset.json / testset.json and images/."""
    records = json.loads((osf / RAD_RELEASE).read_text())
    shutil.copytree(osf / RAD_IMAGES, root / "images")
    test = [r for r in records
            if isinstance(r, dict) and str(r.get("phrase_type")).startswith("test_")]
    train = [r for r in records if r not in test]
    (root / "trainset.json").write_text(json.dumps(train), encoding="utf-8")
    (root / "testset.json").write_text(json.dumps(test), encoding="utf-8")
    return root


def questions(dataset, split: str) -> list[tuple[str, str, str, str]]:
    return [(q.qid, q.image.rsplit("/", 1)[-1], normalise(q.answer), q.answer_type)
            for q in dataset.splits[split]]


@pytest.mark.unit
def test_vqa_rad_osf_release_splits_by_phrase_type_and_names_every_reject(tmp_path, caplog):
    root = write_rad_osf(tmp_path / "rad")
    with caplog.at_level(logging.INFO, logger="biomedclip.vqa.formats"):
        dataset = load_vqa("vqa-rad", str(root))
    assert (dataset.format, dataset.layout) == ("vqa_rad", "osf")
    assert "format vqa_rad (osf layout), detected" in caplog.text
    assert questions(dataset, "train") == [("1", "synpic1.jpg", "yes", "closed"),
                                           ("3", "synpic2.jpg", "2", "open"),
                                           ("5", "synpic3.jpg", "yes", "closed")]
    assert questions(dataset, "test") == [("2", "synpic1.jpg", "left", "open"),
                                          ("4", "synpic2.jpg", "yes", "closed")]
    assert dataset.splits["test"][0].image == f"{RAD_IMAGES}/synpic1.jpg"
    assert {r.file for r in dataset.rejects} == {RAD_RELEASE}
    assert {(r.qid, r.reason) for r in dataset.rejects} == {
        ("6", RejectReason.MISSING_IMAGE), ("7", RejectReason.UNKNOWN_ANSWER_TYPE),
        ("8", RejectReason.MALFORMED), ("#8", RejectReason.MALFORMED),
        ("3", RejectReason.DUPLICATE_QID), ("11", RejectReason.MALFORMED),
        ("12", RejectReason.MALFORMED)}
    details = {r.qid: r.detail for r in dataset.rejects}
    assert "synpic404.jpg" in details["6"] and "'MAYBE'" in details["7"]
    assert "question" in details["8"] and "leaves the benchmark" in details["12"]
    assert dataset.reject_counts() == {"duplicate_qid": 1, "malformed_record": 4,
                                       "missing_image": 1, "unknown_answer_type": 1}
    assert "7 questions rejected" in caplog.text


@pytest.mark.unit
def test_vqa_rad_mevf_split_reads_the_same_questions(tmp_path, caplog):
    osf = load_vqa("vqa-rad", str(write_rad_osf(tmp_path / "osf")))
    with caplog.at_level(logging.INFO, logger="biomedclip.vqa.formats"):
        mevf = load_vqa("vqa-rad", str(write_rad_mevf(tmp_path / "osf", tmp_path / "mevf")))
    assert (mevf.format, mevf.layout) == ("vqa_rad", "mevf") and "(mevf layout)" in caplog.text
    for split in ("train", "test"):
        assert questions(mevf, split) == questions(osf, split)
    assert mevf.splits["train"][0].image == "images/synpic1.jpg"
    assert mevf.reject_counts() == osf.reject_counts()
    def named(dataset) -> list:  # those named by qid (the others by their position in the file)
        return sorted((r.qid, r.reason) for r in dataset.rejects if not r.qid.startswith("#"))

    assert named(mevf) == named(osf)
    assert {r.file for r in mevf.rejects} == {"trainset.json"}
    # the format named, not detected: the same; the wrong one named says what it looked for
    named_format = load_vqa("vqa-rad", str(tmp_path / "mevf"), format="vqa_rad")
    assert questions(named_format, "test") == questions(osf, "test")
    with pytest.raises(VqaFormatError, match=r"no train\.json"):
        load_vqa("vqa-rad", str(tmp_path / "mevf"), format="slake")


def slake_record(qid: int, folder: str, lang: str = "en", kind: str = "OPEN",
                 answer: str = "Lung") -> dict:
    english = lang == "en"
    return {"img_id": int(folder.removeprefix("xmlab")), "img_name": f"{folder}/source.jpg",
            "question": "Which organ?" if english else "哪个器官?",
            "answer": answer if english else "肺", "q_lang": lang, "location": "Lung",
            "modality": "CT", "answer_type": kind, "base_type": "vqa", "content_type": "Organ",
            "triple": ["vhead", "_", "_"], "qid": qid}


def write_slake(root: Path) -> Path:
    for folder in ("xmlab1", "xmlab2", "xmlab3"):
        image(root / "imgs" / folder / "source.jpg")
        Image.new("L", (24, 24)).save(root / "imgs" / folder / "mask.png")  # not read
        (root / "imgs" / folder / "detection.json").write_text("[]")
    splits = {"train.json": [slake_record(1, "xmlab1"), slake_record(2, "xmlab1", "zh"),
                             slake_record(3, "xmlab1", kind="CLOSED", answer="Yes"),
                             {**slake_record(4, "xmlab1"), "q_lang": None}],
              "validate.json": [slake_record(5, "xmlab2"), slake_record(6, "xmlab2", "zh")],
              "test.json": [slake_record(7, "xmlab3"), slake_record(8, "xmlab3", "zh"),
                            slake_record(9, "xmlab9"),
                            {**slake_record(10, "xmlab3"), "answer_type": "OTHER"}]}
    for name, records in splits.items():
        (root / name).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.mark.unit
def test_slake_keeps_english_by_default_and_counts_what_it_leaves_out(tmp_path):
    root = write_slake(tmp_path / "slake")
    english = load_vqa("slake", str(root))
    assert (english.format, english.layout) == ("slake", "slake")
    assert {split: [q.qid for q in qs] for split, qs in english.splits.items()} == \
        {"train": ["1", "3"], "val": ["5"], "test": ["7"]}
    assert english.left_out_by_language == {"zh": 3}
    assert english.splits["train"][0].image == "imgs/xmlab1/source.jpg"
    assert {(r.file, r.qid, r.reason) for r in english.rejects} == {
        ("train.json", "4", RejectReason.MALFORMED), ("test.json", "9", RejectReason.MISSING_IMAGE),
        ("test.json", "10", RejectReason.UNKNOWN_ANSWER_TYPE)}
    both = load_vqa("slake", str(root), languages=("en", "zh"))
    assert [q.qid for q in both.splits["train"]] == ["1", "2", "3"]
    assert both.left_out_by_language == {}
    assert both.splits["train"][1].answer == "肺" and both.splits["train"][1].language == "zh"
    assert english.version() == both.version()  # the files, not the choice of questions
    (root / "imgs" / "xmlab3" / "extra.png").write_bytes(b"x")
    assert load_vqa("slake", str(root)).version() != english.version()


@pytest.mark.unit
def test_a_folder_in_neither_format_or_without_test_questions_is_named(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "questions.json").write_text("[]")
    with pytest.raises(VqaFormatError, match=r"benchmark x .*neither VQA-RAD .* nor SLAKE"):
        load_vqa("x", str(tmp_path / "x"))
    root = write_slake(tmp_path / "slake")
    (root / "test.json").write_text("{}")
    with pytest.raises(VqaFormatError, match=r"test.json: a list of question records expected"):
        load_vqa("slake", str(root))
    (root / "test.json").write_text("[]")
    with pytest.raises(VqaFormatError, match=r"no usable train or test questions .*'test': 0"):
        load_vqa("slake", str(root))


@pytest.mark.unit
def test_demo_stand_ins_are_deterministic_and_read_by_the_real_readers(tmp_path):
    params = VqaDemoParams(out=tmp_path / "a", vqa_rad_images=12, slake_images=16)
    report = write_vqa_demo(params)
    again = write_vqa_demo(params.model_copy(update={"out": tmp_path / "b"}))
    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())

    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in files(tmp_path / "a"))
    assert report.vqa_rad_questions == again.vqa_rad_questions
    assert report.slake_questions == again.slake_questions

    release = json.loads((tmp_path / "a" / "vqa_rad" / RAD_RELEASE).read_text())
    assert {r["answer_type"] for r in release} == {"OPEN", "CLOSED", "OPEN ", "CLOSED "}
    rad = load_vqa("vqa-rad", str(tmp_path / "a" / "vqa_rad"))
    assert rad.layout == "osf" and not rad.rejects and len(release) == report.vqa_rad_questions
    assert set(rad.images("test")) <= set(rad.images("train")), "as in the release"
    slake = load_vqa("slake", str(tmp_path / "a" / "slake"))
    assert slake.layout == "slake" and not slake.rejects and slake.left_out_by_language["zh"] > 0
    assert not set(slake.images("test")) & set(slake.images("train")), "SLAKE splits by image"
    for dataset in (rad, slake):
        training = {normalise(q.answer) for split in ("train", "val")
                    for q in dataset.splits.get(split, [])}
        test = {normalise(q.answer) for q in dataset.splits["test"]}
        assert test - training, "a few test answers are absent from train"
        assert training.isdisjoint(TEST_ONLY)
        kinds = {q.answer_type for q in dataset.splits["test"]}
        assert kinds == {"open", "closed"}


@pytest.mark.unit
def test_vqa_images_are_benchmarks_the_decontamination_hashes(tmp_path):
    root = write_slake(tmp_path / "slake")
    splits = dict(image_splits("slake", str(root)))
    assert {split: [key for key, _ in bench.examples] for split, bench in splits.items()} == {
        "train": ["imgs/xmlab1/source.jpg"], "val": ["imgs/xmlab2/source.jpg"],
        "test": ["imgs/xmlab3/source.jpg"]}
    keyed = list(splits["test"].keyed_images())
    assert [key for key, _, _ in keyed] == ["imgs/xmlab3/source.jpg"]
    assert keyed[0][1].size == (24, 24)
    assert splits["train"].version() != splits["test"].version()


@pytest.mark.integration
def test_both_formats_read_from_s3_as_from_a_folder(tmp_path, moto_url):
    """moto's S3 server on loopback: the same questions and rejects from a bucket prefix."""
    import boto3

    from biomedclip.config import S3Params

    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket="vqa")
    local = {"vqa_rad": write_rad_osf(tmp_path / "vqa_rad"),
             "slake": write_slake(tmp_path / "slake")}
    s3 = S3Params(endpoint_url=moto_url)
    for name, root in local.items():
        for path in root.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "vqa", f"{name}/{path.relative_to(root).as_posix()}")
    for name, root in local.items():
        remote = load_vqa(name, f"s3://vqa/{name}", s3=s3)
        here = load_vqa(name, str(root))
        assert remote.format == here.format and remote.splits == here.splits
        assert remote.rejects == here.rejects
        split, images = next(image_splits(name, f"s3://vqa/{name}", s3=s3))
        assert split == "train"
        assert [key for key, _, _ in images.keyed_images()] == here.images("train")
