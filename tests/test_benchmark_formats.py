"""The paper's benchmarks read in the formats users download them in (`evaluate.formats`), on files
the tests write the way the datasets ship them: PCam's HDF5 (and `.h5.gz`), LC25000's folders,
RSNA's CSV + DICOMs made from the real chest X-rays in ../shared/fixtures, TCGA-TIL's class
folders, and the split conventions of the generic formats."""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from biomedclip.evaluate.benchmarks import BenchmarkError, load_benchmark
from biomedclip.evaluate.formats import PRESETS, PcamImages, dicom_image
from biomedclip.evaluate.params import BenchmarkSpec

from .conftest import SHARED_FIXTURES

XRAYS = SHARED_FIXTURES / "images" / "nih_cxr14"


def write_pcam(root: Path, split: str, n: int, *, gz: bool = False) -> np.ndarray:
    """PCam's two files for a split, with its dataset names, dtypes and shapes."""
    import h5py

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
    root.mkdir(parents=True, exist_ok=True)
    for part, data in (("x", x), ("y", y)):
        path = root / f"camelyonpatch_level_2_split_{split}_{part}.h5"
        with h5py.File(path, "w") as handle:
            handle.create_dataset(part, data=data, chunks=(min(n, 32), *data.shape[1:]))
        if gz:
            with path.open("rb") as src, gzip.open(path.with_name(path.name + ".gz"), "wb") as out:
                shutil.copyfileobj(src, out)
            path.unlink()
    return x


@pytest.mark.unit
@pytest.mark.parametrize("gz", [False, True], ids=["h5", "h5.gz"])
def test_pcam_reads_the_split_in_chunks_with_the_papers_prompts(tmp_path, gz):
    x = write_pcam(tmp_path / "pcam", "test", 70, gz=gz)
    write_pcam(tmp_path / "pcam", "valid", 10, gz=gz)
    bench = load_benchmark("pcam", str(tmp_path / "pcam"), preset="pcam")
    assert bench.format == "pcam"  # detected
    assert bench.classes == ["normal lymph node", "lymph node metastasis"]
    assert bench.counts() == {"normal lymph node": 35, "lymph node metastasis": 35}
    bench.reader.chunk = 16  # several chunks, one open file
    images = list(bench.images())
    assert len(images) == 70 and [label for _, label in images[:4]] == [0, 1, 0, 1]
    assert np.array_equal(np.asarray(images[37][0]), x[37])
    val = load_benchmark("pcam", str(tmp_path / "pcam"), preset="pcam", split="val")
    assert len(val.examples) == 10


@pytest.mark.unit
def test_pcam_never_holds_the_split_in_memory(tmp_path, monkeypatch):
    """The reader asks h5py for one chunk at a time, whatever the split's size."""
    import h5py

    write_pcam(tmp_path / "pcam", "test", 100)
    reads: list[int] = []
    original = h5py.Dataset.__getitem__

    def counting(self, index):
        value = original(self, index)
        reads.append(len(value) if isinstance(index, slice) else 1)
        return value

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    reader = PcamImages(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_x.h5", chunk=25)
    assert len(list(reader.read(str(i) for i in range(100)))) == 100
    assert reads == [25, 25, 25, 25]


@pytest.mark.unit
def test_pcam_with_the_wrong_shapes_or_a_missing_file_is_named(tmp_path):
    import h5py

    write_pcam(tmp_path / "pcam", "test", 8)
    (tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(BenchmarkError, match=r"camelyonpatch_level_2_split_test_y\.h5"):
        load_benchmark("pcam", str(tmp_path / "pcam"), format="pcam")
    with h5py.File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5", "w") as handle:
        handle.create_dataset("y", data=np.zeros((5, 1, 1, 1), dtype=np.uint8))
    with pytest.raises(BenchmarkError, match="one label per patch"):
        load_benchmark("pcam", str(tmp_path / "pcam"))


def write_lc25000(root: Path, per_class: int = 3) -> None:
    for folder, classes in (("lung_image_sets", ("lung_aca", "lung_n", "lung_scc")),
                            ("colon_image_sets", ("colon_aca", "colon_n"))):
        for i, name in enumerate(classes):
            target = root / "lung_colon_image_set" / folder / name
            target.mkdir(parents=True)
            for j in range(per_class):
                Image.new("RGB", (64, 64), (40 * i, 20 * j, 100)).save(target / f"{name}{j + 1}.jpeg")


@pytest.mark.unit
def test_lc25000_is_two_benchmarks_with_their_own_prompts_and_templates(tmp_path):
    write_lc25000(tmp_path / "lc")
    lung = load_benchmark("lung", str(tmp_path / "lc"), preset="lc25000_lung")
    colon = load_benchmark("colon", str(tmp_path / "lc"), preset="lc25000_colon")
    assert lung.format == colon.format == "lc25000"
    assert lung.classes == ["lung adenocarcinomas", "normal lung tissue", "lung squamous cell carcinomas"]
    assert colon.counts() == {"colon adenocarcinomas": 3, "normal colonic tissue": 3}
    assert PRESETS["lc25000_lung"].templates == ("this is an image of {}", "{} presented in image")
    assert PRESETS["lc25000_colon"].templates == ("a photo of {}", "{} presented in image")
    assert len(list(lung.images())) == 9
    with pytest.raises(BenchmarkError, match="lc25000_lung or lc25000_colon"):
        load_benchmark("lc", str(tmp_path / "lc"))
    with pytest.raises(ValueError, match="two tasks"):
        BenchmarkSpec(name="lc", path=str(tmp_path / "lc"), format="lc25000")


def dicom_bytes(pixels: np.ndarray, *, photometric: str = "MONOCHROME2", window: tuple[int, int] | None = None,
                patient: str = "p") -> bytes:
    """A DICOM file as RSNA's are written (one greyscale frame), with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = (meta.MediaStorageSOPClassUID,
                                                       meta.MediaStorageSOPInstanceUID, patient)
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.fixture
def xray() -> np.ndarray:
    if not XRAYS.is_dir():
        pytest.skip(f"{XRAYS} is absent (the shared fixtures live beside the project in this workplace only)")
    with Image.open(sorted(XRAYS.glob("*.png"))[0]) as image:
        return np.asarray(image.convert("L").resize((256, 256)))


@pytest.mark.unit
def test_dicom_monochrome1_is_inverted_and_high_bit_depths_windowed(xray):
    plain = np.asarray(dicom_image(dicom_bytes(xray)).convert("L"))
    assert np.array_equal(plain, xray) or np.abs(plain.astype(int) - xray).max() <= 1  # min-max of 0..255
    inverted = np.asarray(dicom_image(dicom_bytes(255 - xray, photometric="MONOCHROME1")).convert("L"))
    assert np.abs(inverted.astype(int) - plain).max() <= 1
    deep = (xray.astype(np.uint16) * 16)  # 12 bits stored in 16, windowed to 8
    windowed = np.asarray(dicom_image(dicom_bytes(deep, window=(2048, 4096))).convert("L"))
    assert windowed.dtype == np.uint8 and np.corrcoef(windowed.ravel(), xray.ravel())[0, 1] > 0.999
    with pytest.raises(ValueError, match="DICOM"):
        dicom_image(b"not a dicom file")


@pytest.mark.unit
def test_rsna_one_label_per_patient_from_several_rows_and_corrupt_files_counted(tmp_path, xray):
    root = tmp_path / "rsna"
    (root / "stage_2_train_images").mkdir(parents=True)
    rows = ["patientId,x,y,width,height,Target", "a,,,,,0", "b,10,20,30,40,1", "b,50,60,30,40,1", "c,,,,,0",
            "d,5,5,10,10,1"]
    (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
    for patient in "abc":
        (root / "stage_2_train_images" / f"{patient}.dcm").write_bytes(dicom_bytes(xray, patient=patient))
    (root / "stage_2_train_images" / "d.dcm").write_bytes(b"DICM but truncated")
    bench = load_benchmark("rsna", str(root), preset="rsna_pneumonia")
    assert bench.format == "rsna_pneumonia" and bench.classes == ["normal lung", "pneumonia"]
    assert sorted(bench.examples) == [("stage_2_train_images/a.dcm", 0), ("stage_2_train_images/b.dcm", 1),
                                      ("stage_2_train_images/c.dcm", 0), ("stage_2_train_images/d.dcm", 1)]
    images = list(bench.images())
    assert len(images) == 3 and images[0][0].mode == "RGB" and images[0][0].size == (256, 256)
    assert [s["key"] for s in bench.skipped] == ["stage_2_train_images/d.dcm"]
    (root / "stage_2_train_labels.csv").write_text("patientId,Target\na,2\n")
    with pytest.raises(BenchmarkError, match="line 2: Target '2'"):
        load_benchmark("rsna", str(root))


@pytest.mark.unit
def test_tcga_til_folders_map_to_the_papers_prompts_or_say_what_is_missing(tmp_path):
    for label in ("til-negative", "til-positive"):
        (tmp_path / "til" / label).mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "til" / label / "1.png")
    bench = load_benchmark("til", str(tmp_path / "til"), format="tcga_til", preset="tcga_til")
    assert bench.classes == ["none", "tumor infiltrating lymphocytes"]
    assert PRESETS["tcga_til"].headline == "auroc"
    (tmp_path / "til" / "til-positive").rename(tmp_path / "til" / "positive")
    with pytest.raises(BenchmarkError, match=r"labels \['positive'\] have no class prompt"):
        load_benchmark("til", str(tmp_path / "til"), preset="tcga_til")
    own = load_benchmark("til", str(tmp_path / "til"), classes={"til-negative": "none", "positive": "lymphocytes"})
    assert own.classes == ["none", "lymphocytes"]


@pytest.mark.unit
def test_generic_formats_take_the_split_from_a_column_or_sub_folders(tmp_path):
    csv_root = tmp_path / "csv"
    csv_root.mkdir()
    rows = ["path,label,split"]
    for i in range(6):
        Image.new("RGB", (16, 16)).save(csv_root / f"{i}.png")
        rows.append(f"{i}.png,{'ab'[i % 2]},{('train', 'valid', 'test')[i // 2]}")
    (csv_root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert [k for k, _ in load_benchmark("c", str(csv_root)).examples] == ["4.png", "5.png"]
    assert [k for k, _ in load_benchmark("c", str(csv_root), split="val").examples] == ["2.png", "3.png"]
    folders = tmp_path / "folders"
    for split in ("train", "test"):
        for label in ("a", "b"):
            (folders / split / label).mkdir(parents=True)
            Image.new("RGB", (16, 16)).save(folders / split / label / f"{split}.png")
    bench = load_benchmark("f", str(folders))
    assert bench.format == "class_folders"
    assert sorted(k for k, _ in bench.examples) == ["test/a/test.png", "test/b/test.png"]


@pytest.mark.integration
def test_pcam_gz_from_s3_is_streamed_to_a_temporary_file_and_removed_after(tmp_path, moto_url):
    """moto's S3 server on loopback: the `.h5.gz` objects download (boto3's managed transfer) and
    decompress to a scratch folder that goes with the benchmark."""
    import boto3

    from biomedclip.config import S3Params

    x = write_pcam(tmp_path / "pcam", "test", 20, gz=True)
    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket="benchmarks")
    for path in (tmp_path / "pcam").iterdir():
        client.upload_file(str(path), "benchmarks", f"pcam/{path.name}")
    bench = load_benchmark("pcam", "s3://benchmarks/pcam", preset="pcam", s3=S3Params(endpoint_url=moto_url))
    scratch = bench.reader.path.parent
    images = list(bench.images())
    assert len(images) == 20 and np.array_equal(np.asarray(images[5][0]), x[5])
    assert scratch.is_dir() and not list(scratch.glob("*.gz"))
    del bench, images
    import gc

    gc.collect()
    assert not scratch.exists()
