"""The demo's stand-ins for PCam, LC25000 and RSNA Pneumonia (`demo.native`), read by the real
readers (`evaluate.formats`) as a user's downloads would be: detected, every split and task read,
every image decoded; written the same way twice, and only over a folder the demo wrote."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from biomedclip.atomic_io import UnsafeOutput
from biomedclip.demo.corpus import MARKER
from biomedclip.demo.figures import render
from biomedclip.demo.native import RSNA_SIDE, rsna_plan, write_native
from biomedclip.evaluate.benchmarks import load_benchmark
from biomedclip.evaluate.formats import dicom_image

SEED, PER_CLASS = 7, 6
IMAGE_SUFFIXES = ("_x.h5", ".jpeg", ".dcm")


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("native") / "benchmarks"
    report = write_native(out, seed=SEED, per_class=PER_CLASS)
    assert (report.pcam, report.lc25000, report.rsna_pneumonia) == (24 * PER_CLASS, 5 * PER_CLASS, 2 * PER_CLASS)
    assert f"PCam {24 * PER_CLASS} patches" in report.summary()
    return out


def tree_digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def decode_all(benchmark) -> list[tuple[np.ndarray, int]]:
    images = [(np.asarray(image), label) for image, label in benchmark.images()]
    assert benchmark.skipped == []
    return images


@pytest.mark.unit
def test_pcam_splits_are_detected_balanced_shuffled_and_chunked_like_the_real_files(native):
    import h5py

    for split, n in (("train", 10 * PER_CLASS), ("val", PER_CLASS), ("test", PER_CLASS)):
        bench = load_benchmark("pcam", str(native / "pcam"), preset="pcam", split=split)
        assert bench.format == "pcam"
        assert bench.counts() == {"normal lymph node": n, "lymph node metastasis": n}
        images = decode_all(bench)
        assert len(images) == 2 * n and {image.shape for image, _ in images} == {(96, 96, 3)}
        labels = [label for _, label in images]
        assert labels != sorted(labels)  # shuffled, not one class after the other
        # the two classes are drawn as different kinds: their mean colours tell them apart
        means = np.array([image.reshape(-1, 3).mean(0) for image, _ in images])
        centroids = [means[np.array(labels) == c].mean(0) for c in (0, 1)]
        nearest = np.argmin([np.linalg.norm(means - c, axis=1) for c in centroids], axis=0)
        assert (nearest == labels).mean() > 0.9
    with h5py.File(native / "pcam" / "camelyonpatch_level_2_split_train_x.h5") as handle:
        assert handle["x"].dtype == np.uint8 and handle["x"].chunks == (32, 96, 96, 3)
    with h5py.File(native / "pcam" / "camelyonpatch_level_2_split_train_y.h5") as handle:
        assert handle["y"].dtype == np.uint8 and handle["y"].shape == (20 * PER_CLASS, 1, 1, 1)


@pytest.mark.unit
def test_lc25000_lung_and_colon_tasks_read_with_their_presets_and_file_names(native):
    lung = load_benchmark("lung", str(native / "lc25000"), preset="lc25000_lung")
    colon = load_benchmark("colon", str(native / "lc25000"), preset="lc25000_colon")
    assert lung.format == colon.format == "lc25000"
    assert lung.counts() == dict.fromkeys(["lung adenocarcinomas", "normal lung tissue",
                                           "lung squamous cell carcinomas"], PER_CLASS)
    assert colon.counts() == dict.fromkeys(["colon adenocarcinomas", "normal colonic tissue"], PER_CLASS)
    names = {Path(key).name for key, _ in lung.examples + colon.examples}
    for prefix in ("lungaca", "lungn", "lungscc", "colonca", "colonn"):
        assert {f"{prefix}{i}.jpeg" for i in range(1, PER_CLASS + 1)} <= names
    assert len(decode_all(lung)) == 3 * PER_CLASS and len(decode_all(colon)) == 2 * PER_CLASS


@pytest.mark.unit
def test_rsna_has_one_label_per_patient_and_every_dicom_decodes(native):
    import pydicom

    root = native / "rsna_pneumonia"
    rows = list(csv.DictReader(io.StringIO((root / "stage_2_train_labels.csv").read_text())))
    assert list(rows[0]) == ["patientId", "x", "y", "width", "height", "Target"]
    per_patient = Counter(row["patientId"] for row in rows)
    assert max(per_patient.values()) > 1  # some positives have several boxes, as in the real file
    assert all(row["x"] == "" for row in rows if row["Target"] == "0")
    assert all(float(row["width"]) > 0 for row in rows if row["Target"] == "1")
    bench = load_benchmark("rsna", str(root), preset="rsna_pneumonia")
    assert bench.format == "rsna_pneumonia"
    assert len(bench.examples) == len(per_patient) == 2 * PER_CLASS < len(rows)
    assert bench.counts() == {"normal lung": PER_CLASS, "pneumonia": PER_CLASS}
    images = decode_all(bench)
    assert len(images) == 2 * PER_CLASS and {image.shape for image, _ in images} == {(RSNA_SIDE, RSNA_SIDE, 3)}
    headers = [pydicom.dcmread(root / key) for key, _ in bench.examples]
    assert {(h.Modality, h.BitsStored, h.file_meta.TransferSyntaxUID.name) for h in headers} == \
        {("CR", 12, "Explicit VR Little Endian")}
    photometric = Counter(h.PhotometricInterpretation for h in headers)
    assert 0 < photometric["MONOCHROME1"] < photometric["MONOCHROME2"]
    assert all("WindowCenter" in h and "WindowWidth" in h for h in headers)


@pytest.mark.unit
def test_a_monochrome1_dicom_is_stored_inverted_and_read_back_as_drawn(native):
    from pydicom import dcmread

    patient = next(p for p in rsna_plan(SEED, PER_CLASS) if p.monochrome1)
    data = (native / "rsna_pneumonia" / "stage_2_train_images" / f"{patient.patient_id}.dcm").read_bytes()
    drawn = np.asarray(render("chest_xray", patient.seed, RSNA_SIDE, RSNA_SIDE)[0].convert("L"), dtype=float)
    read = np.asarray(dicom_image(data).convert("L"), dtype=float)
    assert np.abs(read - drawn).mean() < 1
    relabelled = dcmread(io.BytesIO(data))  # the same stored values, shown as MONOCHROME2
    relabelled.PhotometricInterpretation = "MONOCHROME2"
    buffer = io.BytesIO()
    relabelled.save_as(buffer)
    uninverted = np.asarray(dicom_image(buffer.getvalue()).convert("L"), dtype=float)
    assert np.abs(uninverted - drawn).mean() > 50


@pytest.mark.unit
def test_a_rerun_replaces_its_own_folder_with_the_same_bytes(native, tmp_path):
    again = tmp_path / "benchmarks"
    shutil.copytree(native, again)
    (again / "pcam" / "stale.h5").write_bytes(b"from an older run")
    # a second apart at least, so a timestamp in a file (HDF5's, a DICOM date) would show
    time.sleep(max(0.0, 1.1 - (time.time() - (native / MARKER).stat().st_mtime)))
    write_native(again, seed=SEED, per_class=PER_CLASS)
    assert tree_digests(again) == tree_digests(native)


@pytest.mark.unit
def test_another_seed_draws_other_pixels(native, tmp_path):
    other = tmp_path / "other"
    write_native(other, seed=SEED + 1, per_class=PER_CLASS)
    images = {d for name, d in tree_digests(native).items() if name.endswith(IMAGE_SUFFIXES)}
    others = {d for name, d in tree_digests(other).items() if name.endswith(IMAGE_SUFFIXES)}
    assert len(others) == len(images) == 3 + 5 * PER_CLASS + 2 * PER_CLASS
    assert not images & others


@pytest.mark.unit
def test_a_folder_the_demo_did_not_write_is_left_alone(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UnsafeOutput, match="marker"):
        write_native(mine, seed=SEED, per_class=1)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(ValueError, match="per_class"):
        write_native(tmp_path / "new", seed=SEED, per_class=0)
