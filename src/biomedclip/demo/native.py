"""Demo copies of the paper's benchmarks in the formats users download them in.

`biomedclip.evaluate.formats` reads PCam's HDF5 files, LC25000's folders and RSNA Pneumonia's CSV
and DICOMs as they ship. Those downloads are large and licensed, so the demo writes small stand-ins
with the same file names, layouts, dtypes and DICOM encodings, drawn by the demo renderers: the tests
and the demo pipeline run the real readers on them, end to end, without the datasets.

Under `out/` (one demo marker for the folder: a rerun replaces it):
- `pcam/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`: `x` uint8 N x 96 x 96 x 3, `y`
  uint8 N x 1 x 1 x 1, 32 patches a chunk, uncompressed (the real files' sizes say so); label 0 is
  drawn as `PCAM_KINDS["0"]`, label 1 as `PCAM_KINDS["1"]`; balanced, shuffled.
- `lc25000/lung_colon_image_set/{lung_image_sets,colon_image_sets}/<class>/<prefix><n>.jpeg` with
  LC25000's names (`lungaca1.jpeg`, `colonn1.jpeg`...), each class one demo kind (`LC25000_KINDS`).
- `rsna_pneumonia/stage_2_train_labels.csv` (`patientId,x,y,width,height,Target`: one empty-box row
  per negative, one row per box for a positive) and `stage_2_train_images/<patientId>.dcm`: demo
  chest X-rays, Target 1 where the drawn finding is an opacity (`PNEUMONIA_FINDINGS`), 0 where it is
  normal; 12 bits stored in 16 with a window, MONOCHROME2, every fourth patient MONOCHROME1 (stored
  inverted, so the reader's inversion gives the picture back). Boxes are where the opacity was drawn,
  before the renderer's random pose, so they are approximate.

Point a benchmark at `out/pcam` (preset `pcam`), `out/lc25000` (`lc25000_lung`, `lc25000_colon`) or
`out/rsna_pneumonia` (`rsna_pneumonia`). Images are smaller than the real ones (LC25000 768 px,
RSNA 1024 px) to keep the demo fast. Same arguments, same bytes: HDF5 without timestamps, DICOM UIDs
and patient ids from the seed, no dates from the clock.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.random import Generator

from biomedclip.atomic_io import atomic_directory, check_replaceable
from biomedclip.console import progress
from biomedclip.demo.corpus import MARKER, write_marker
from biomedclip.demo.figures import render
from biomedclip.demo.plan import BENCHMARK_STREAM, new_seed, rng_for

# Spelled out here rather than imported from the readers, so the tests check the readers against
# the datasets' own names, not against themselves.
PCAM_KINDS = {"0": "he_histology", "1": "ihc"}  # normal lymph node, metastasis: two looks apart
PCAM_SPLIT_SIZES = {"train": 10, "valid": 1, "test": 1}  # patches per class, in units of per_class
PCAM_SIDE, PCAM_CHUNK = 96, 32
# LC25000 class folder -> (its set folder, file name prefix, demo kind). The demo has four
# microscopy kinds; the fifth class is drawn as clinical photographs.
LC25000_KINDS = {
    "lung_aca": ("lung_image_sets", "lungaca", "he_histology"),
    "lung_n": ("lung_image_sets", "lungn", "fluorescence"),
    "lung_scc": ("lung_image_sets", "lungscc", "ihc"),
    "colon_aca": ("colon_image_sets", "colonca", "electron_microscopy"),
    "colon_n": ("colon_image_sets", "colonn", "photograph"),
}
LC25000_SIDE = 256
PNEUMONIA_FINDINGS = ("right lower lobe consolidation", "bilateral interstitial opacities")
NORMAL_FINDING = "normal"
RSNA_SIDE = 256
MONOCHROME1_EVERY = 4  # patient 0, 4, 8... in draw order is stored MONOCHROME1
# Seed-sequence indices in BENCHMARK_STREAM: benchmark.py uses c * 1_000_000 + i for its 16
# classes, far below these.
PCAM_PART, LC25000_PART, RSNA_PART = 10**9, 10**9 + 100, 10**9 + 200
# Where a finding is drawn, as fractions of the side (x0, y0, x1, y1): see radiology.chest_xray.
CONSOLIDATION_BOX = (0.2, 0.55, 0.42, 0.8)
LUNG_BOXES = ((0.16, 0.14, 0.47, 0.85), (0.53, 0.14, 0.84, 0.85))


@dataclass(frozen=True)
class NativeReport:
    path: Path
    pcam: int  # patches, all splits
    lc25000: int  # JPEGs, both tasks
    rsna_pneumonia: int  # patients (one DICOM each)

    def summary(self) -> str:
        return (f"native benchmarks `{self.path}`: PCam {self.pcam} patches, LC25000 {self.lc25000} "
                f"images, RSNA Pneumonia {self.rsna_pneumonia} DICOMs")


@dataclass(frozen=True)
class RsnaPatient:
    patient_id: str
    seed: int  # render seed of the chest X-ray
    label: int
    finding: str
    view: str
    monochrome1: bool
    boxes: tuple[tuple[int, int, int, int], ...]  # (x, y, width, height) in pixels; () when 0
    sex: str
    age: int
    offset: int  # stored value of black (12-bit)
    gain: int  # stored values per 8-bit grey level


def _stream(seed: int, part: int) -> Generator:
    return rng_for(seed, BENCHMARK_STREAM, part)


def pcam_plan(seed: int, per_class: int, split: str) -> list[tuple[int, int]]:
    """(label, render seed) of each patch of a PCam split, in file order."""
    rng = _stream(seed, PCAM_PART + list(PCAM_SPLIT_SIZES).index(split))
    n = per_class * PCAM_SPLIT_SIZES[split]
    labels = rng.permutation(np.repeat([0, 1], n))
    return [(int(label), new_seed(rng)) for label in labels]


def lc25000_plan(seed: int, per_class: int, folder: str) -> list[int]:
    """Render seeds of one LC25000 class's images, file 1 first."""
    rng = _stream(seed, LC25000_PART + list(LC25000_KINDS).index(folder))
    return [new_seed(rng) for _ in range(per_class)]


def rsna_plan(seed: int, per_class: int) -> list[RsnaPatient]:
    """`per_class` patients of each Target, in the CSV's (shuffled) order. Render seeds are drawn
    until each class is full; a seed whose finding is neither normal nor an opacity is passed over."""
    rng = _stream(seed, RSNA_PART)
    wanted = {0: per_class, 1: per_class}
    patients: list[RsnaPatient] = []
    while any(wanted.values()):
        render_seed = new_seed(rng)
        attrs = render("chest_xray", render_seed, 16, 16)[1]  # the finding is drawn before any pixel
        label = 1 if attrs["finding"] in PNEUMONIA_FINDINGS else 0 if attrs["finding"] == NORMAL_FINDING else None
        if label is None or not wanted[label]:
            continue
        wanted[label] -= 1
        patients.append(RsnaPatient(
            patient_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)), seed=render_seed, label=label,
            finding=attrs["finding"], view=attrs["view"], monochrome1=len(patients) % MONOCHROME1_EVERY == 0,
            boxes=_boxes(rng, attrs["finding"]) if label else (), sex=str(rng.choice(["M", "F"])),
            age=int(rng.integers(18, 90)), offset=int(rng.integers(0, 512)), gain=int(rng.integers(8, 15))))
    return [patients[i] for i in rng.permutation(len(patients))]


def _boxes(rng: Generator, finding: str) -> tuple[tuple[int, int, int, int], ...]:
    """One box for a lobar consolidation; one per lung (2), or a lung split in two (3), for
    bilateral opacities: the 1-3 rows of a positive patient."""
    if finding == PNEUMONIA_FINDINGS[0]:
        fractions = [CONSOLIDATION_BOX]
    else:
        fractions = list(LUNG_BOXES)
        if rng.random() < 0.5:  # one lung's opacities boxed as upper and lower zones
            x0, y0, x1, y1 = fractions.pop(int(rng.integers(2)))
            middle = (y0 + y1) / 2
            fractions += [(x0, y0, x1, middle), (x0, middle, x1, y1)]
    side = RSNA_SIDE
    return tuple((round(x0 * side), round(y0 * side), round((x1 - x0) * side), round((y1 - y0) * side))
                 for x0, y0, x1, y1 in fractions)


def write_native(out: Path, *, seed: int, per_class: int, force: bool = False) -> NativeReport:
    """Write the three benchmarks under `out/` atomically; same arguments, same bytes. An existing
    `out` is replaced only if this command wrote it (its demo marker), or with `force`."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    check_replaceable(out, MARKER, force=force)
    with atomic_directory(out) as staging:
        write_marker(staging)
        patches = _write_pcam(staging / "pcam", seed, per_class)
        images = _write_lc25000(staging / "lc25000", seed, per_class)
        patients = _write_rsna(staging / "rsna_pneumonia", seed, per_class)
    return NativeReport(out, patches, images, patients)


def _write_pcam(root: Path, seed: int, per_class: int) -> int:
    import h5py

    root.mkdir()
    total = 0
    for split in PCAM_SPLIT_SIZES:
        plan = pcam_plan(seed, per_class, split)
        x = np.empty((len(plan), PCAM_SIDE, PCAM_SIDE, 3), dtype=np.uint8)
        for i, (label, render_seed) in enumerate(progress(plan, total=len(plan), description=f"PCam {split}")):
            x[i] = np.asarray(render(PCAM_KINDS[str(label)], render_seed, PCAM_SIDE, PCAM_SIDE)[0])
        y = np.array([label for label, _ in plan], dtype=np.uint8).reshape(-1, 1, 1, 1)
        for part, data in (("x", x), ("y", y)):
            # track_times=False: no modification time in the object header, so the bytes repeat
            with h5py.File(root / f"camelyonpatch_level_2_split_{split}_{part}.h5", "w") as handle:
                handle.create_dataset(part, data=data, chunks=(min(len(data), PCAM_CHUNK), *data.shape[1:]),
                                      track_times=False)
        total += len(plan)
    return total


def _write_lc25000(root: Path, seed: int, per_class: int) -> int:
    jobs = [(folder, i, render_seed) for folder in LC25000_KINDS
            for i, render_seed in enumerate(lc25000_plan(seed, per_class, folder), start=1)]
    for folder, i, render_seed in progress(jobs, total=len(jobs), description="LC25000 images"):
        image_set, prefix, kind = LC25000_KINDS[folder]
        target = root / "lung_colon_image_set" / image_set / folder
        target.mkdir(parents=True, exist_ok=True)
        render(kind, render_seed, LC25000_SIDE, LC25000_SIDE)[0].save(target / f"{prefix}{i}.jpeg",
                                                                       format="JPEG", quality=90)
    return len(jobs)


def _write_rsna(root: Path, seed: int, per_class: int) -> int:
    patients = rsna_plan(seed, per_class)
    images = root / "stage_2_train_images"
    images.mkdir(parents=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
    for patient in progress(patients, total=len(patients), description="RSNA DICOMs"):
        # the real file writes coordinates as floats ("264.0") and leaves a negative's box empty
        writer.writerows([[patient.patient_id, *(f"{v:.1f}" for v in box), 1] for box in patient.boxes]
                         or [[patient.patient_id, "", "", "", "", 0]])
        (images / f"{patient.patient_id}.dcm").write_bytes(rsna_dicom(patient))
    (root / "stage_2_train_labels.csv").write_text(buf.getvalue(), encoding="utf-8")
    return len(patients)


def rsna_dicom(patient: RsnaPatient) -> bytes:
    """The patient's chest X-ray as RSNA's DICOMs are tagged (secondary capture, CR, anonymised
    with the challenge's fixed 1901 date), 12 bits in 16 with a window that maps the stored values
    back to the drawn greys; MONOCHROME1 stores them inverted."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    image, attrs = render("chest_xray", patient.seed, RSNA_SIDE, RSNA_SIDE)
    if attrs["finding"] != patient.finding:  # rsna_plan read it from a thumbnail of the same seed
        raise RuntimeError(f"chest_xray drew {attrs['finding']!r} at full size, {patient.finding!r} small")
    grey = np.asarray(image.convert("L"), dtype=np.uint16)
    rng = np.random.default_rng([patient.seed, 1])  # sub-grey-level detector noise in the low bits
    drawn = 255 - grey if patient.monochrome1 else grey
    stored = patient.offset + patient.gain * drawn + rng.integers(0, patient.gain, drawn.shape, dtype=np.uint16)

    def uid(what: str) -> str:
        return generate_uid(entropy_srcs=["biomedclip demo rsna", patient.patient_id, what])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.Modality, ds.ConversionType = "CR", "WSD"
    ds.SeriesDescription = f"view: {'PA' if patient.view == 'posteroanterior' else 'AP'}"
    ds.PatientName = ds.PatientID = patient.patient_id
    ds.PatientSex, ds.PatientAge = patient.sex, f"{patient.age:03d}Y"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", ds.SeriesDescription.removeprefix("view: ")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if patient.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    # grey g is stored in [offset + gain*g, offset + gain*(g+1)): the window spans the 256 levels
    ds.WindowCenter, ds.WindowWidth = patient.offset + patient.gain * 128, patient.gain * 256
    ds.PixelData = stored.astype("<u2").tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
