"""Decontamination: corpus pairs whose image is (nearly) a benchmark image leave the corpus.

Benchmark images are planted into demo articles the way PMC papers reproduce them (resized,
re-encoded, in the figure's own file format); the real ingest must reject every one of them as
`benchmark_overlap`, naming the benchmark image, and keep every other pair. The band index is
checked against a brute-force scan."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from biomedclip.config import S3Params
from biomedclip.demo.benchmark import generate_benchmark
from biomedclip.demo.corpus import generate_corpus
from biomedclip.demo.params import BenchmarkParams
from biomedclip.evaluate.params import BenchmarkSpec
from biomedclip.ingest import decontaminate
from biomedclip.ingest.decontaminate import BenchmarkIndex, HashesMissing, hash_benchmarks
from biomedclip.ingest.params import DecontaminateParams
from biomedclip.ingest.run import run_ingest

from .conftest import ingest_params, small_params

pytestmark = pytest.mark.unit

ALLOWED = {"CC BY", "CC0", "CC BY-SA", "CC BY-ND"}


def brute_force(index_hashes: np.ndarray, queries: np.ndarray, max_distance: int) -> tuple[list[int], list[int]]:
    rows, distances = [], []
    for q in queries.tolist():
        d = [((q ^ h) & (2**64 - 1)).bit_count() for h in index_hashes.tolist()]
        best = min(range(len(d)), key=lambda i: (d[i], i))
        rows.append(best if d[best] <= max_distance else -1)
        distances.append(d[best] if d[best] <= max_distance else -1)
    return rows, distances


@pytest.mark.parametrize("max_distance", [0, 1, 4, 9])
def test_band_index_finds_exactly_what_a_pairwise_scan_finds(max_distance):
    rng = np.random.default_rng(max_distance)
    hashes = rng.integers(-(2**63), 2**63 - 1, size=300, dtype=np.int64)
    hashes[7] = hashes[3]  # a benchmark with a repeated image: the lower row wins
    near = hashes[:60].view(np.uint64).copy()
    for i in range(60):  # 0 to max_distance + 2 bits flipped: some in reach, some just out
        for bit in rng.choice(64, size=i % (max_distance + 3), replace=False):
            near[i] ^= np.uint64(1) << np.uint64(int(bit))
    queries = np.concatenate([near.view(np.int64), rng.integers(-(2**63), 2**63 - 1, size=100, dtype=np.int64)])
    rows, distances = BenchmarkIndex(hashes, max_distance).nearest(queries)
    expected_rows, expected_distances = brute_force(hashes, queries, max_distance)
    assert rows.tolist() == expected_rows and distances.tolist() == expected_distances
    assert (rows[:60] >= 0).sum() > 0  # the planted ones are there to be found


def test_an_empty_index_matches_nothing():
    rows, distances = BenchmarkIndex(np.array([], dtype=np.int64), 4).nearest(np.arange(5, dtype=np.int64))
    assert rows.tolist() == [-1] * 5 and distances.tolist() == [-1] * 5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 40-article demo corpus, the demo benchmark (3 images a class) and its hash file."""
    root = tmp_path_factory.mktemp("decontaminate")
    params = small_params(root / "pristine", articles=40)
    truth = generate_corpus(params, workers=1)
    bench = generate_benchmark(BenchmarkParams(out=root / "benchmarks", per_class=3)).path
    spec = BenchmarkSpec(name="figure-types", path=str(bench))
    summary = hash_benchmarks([spec], S3Params(), root / "hashes.parquet", root / "cache")
    return root, params.out, truth, bench, spec, summary


def plant(corpus: Path, truth, bench: Path, n: int) -> dict[tuple[str, str], str]:
    """Replace `n` single-panel figure images with benchmark images, resized and re-encoded in
    the figure's own format. Returns {(pmcid, fig_id): benchmark key}."""
    labels = pd.read_csv(bench / "labels.csv")
    planted = {}
    rng = np.random.default_rng(0)
    candidates = [(a, g) for a in truth.truth if not a["retracted"] and a["license_code"] in ALLOWED
                  for g in a["graphics"] if g["condition"] == "ok" and g["panels"] == 1 and g["duplicate_of"] is None
                  and g["encoding"] in ("jpeg", "png") and not g["noise"]]
    for (article, graphic), key in zip(candidates[:n], labels["path"].iloc[::5], strict=False):
        target = corpus / f"{article['pmcid']}.{article['version']}" / graphic["media_file"]
        image = Image.open(bench / key).convert("RGB")
        scale = rng.uniform(0.6, 1.5)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG" if graphic["encoding"] == "jpeg" else "PNG", quality=int(rng.integers(60, 90)))
        target.write_bytes(buffer.getvalue())
        planted[(article["pmcid"], graphic["fig_id"])] = key
    assert len(planted) == n, f"the corpus has only {len(planted)} plain figures to plant into"
    return planted


def test_every_planted_benchmark_image_is_caught_and_nothing_else(world, tmp_path):
    root, pristine, truth, bench, _, summary = world
    assert summary == {"figure-types": {"all": 48}}  # 16 classes x 3: the demo benchmark has no splits
    corpus = tmp_path / "raw"
    shutil.copytree(pristine, corpus)
    planted = plant(corpus, truth, bench, 8)
    params = ingest_params(corpus, tmp_path / "out", decontaminate=DecontaminateParams(
        enabled=True, max_distance=4, hashes=root / "hashes.parquet", cache=root / "cache"))
    report = run_ingest(params)

    rejects = pd.read_parquet(params.outputs.rejects)
    overlaps = rejects[rejects.reason == "benchmark_overlap"]
    caught = {(r.pmcid, r.fig_id): r.detail for r in overlaps.itertuples()}
    assert set(caught) == set(planted)  # every planted image, and no unrelated one
    for figure, key in planted.items():
        assert f"figure-types image {key!r}" in caught[figure], caught[figure]
    assert (overlaps.level == "corpus").all()
    pairs = pd.read_parquet(params.outputs.pairs)
    assert not set(planted) & set(zip(pairs.pmcid, pairs.fig_id, strict=True))
    clean = report["decontamination"]
    assert clean == {"enabled": True, "max_distance": 4, "benchmark_images": {"figure-types": 48},
                     "overlaps": {"figure-types": 8}}
    assert report["rejects"]["by_reason"]["benchmark_overlap"] == 8


def test_without_decontamination_the_planted_pairs_stay(world, tmp_path):
    _, pristine, truth, bench, _, _ = world
    corpus = tmp_path / "raw"
    shutil.copytree(pristine, corpus)
    planted = plant(corpus, truth, bench, 3)
    params = ingest_params(corpus, tmp_path / "out")
    report = run_ingest(params)
    pairs = pd.read_parquet(params.outputs.pairs)
    assert set(planted) <= set(zip(pairs.pmcid, pairs.fig_id, strict=True))
    assert report["decontamination"] == {"enabled": False}


def test_a_missing_hash_file_stops_the_ingest_naming_it(world, tmp_path):
    _, pristine, _, _, _, _ = world
    params = ingest_params(pristine, tmp_path / "out", decontaminate=DecontaminateParams(
        enabled=True, hashes=tmp_path / "nowhere.parquet"))
    with pytest.raises(HashesMissing, match=r"nowhere\.parquet.*benchmark-hashes"):
        run_ingest(params)


def test_hashes_are_cached_per_benchmark_version(world, tmp_path, monkeypatch):
    _, _, _, bench, spec, _ = world
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    spec = spec.model_copy(update={"path": str(copy)})
    cache = tmp_path / "cache"
    first = hash_benchmarks([spec], S3Params(), tmp_path / "a.parquet", cache)

    def no_decoding(image):
        raise AssertionError("an unchanged benchmark was hashed again")

    monkeypatch.setattr(decontaminate, "phash", no_decoding)
    assert hash_benchmarks([spec], S3Params(), tmp_path / "b.parquet", cache) == first
    assert pd.read_parquet(tmp_path / "a.parquet").equals(pd.read_parquet(tmp_path / "b.parquet"))

    # A changed benchmark (one image more) is a new version: hashed again, the new image in.
    monkeypatch.undo()
    labels = copy / "labels.csv"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(copy / "images" / "extra.jpg")
    labels.write_text(labels.read_text() + f"images/extra.jpg,{pd.read_csv(labels).label[0]}\n")
    again = hash_benchmarks([spec], S3Params(), tmp_path / "c.parquet", cache)
    assert again == {"figure-types": {"all": 49}}
    assert "images/extra.jpg" in set(pd.read_parquet(tmp_path / "c.parquet").key)


def test_every_split_of_a_benchmark_is_hashed_train_included(tmp_path):
    """Train images leak into scores as surely as test ones (the probes train on them): PCam's
    three HDF5 splits are all hashed, keyed by patch index."""
    from biomedclip.demo.native import write_native

    write_native(tmp_path / "native", seed=0, per_class=2)
    spec = BenchmarkSpec(name="pcam", path=str(tmp_path / "native" / "pcam"), preset="pcam")
    summary = hash_benchmarks([spec], S3Params(), tmp_path / "hashes.parquet", tmp_path / "cache")
    assert summary == {"pcam": {"test": 4, "val": 4, "train": 40}}
    table = pd.read_parquet(tmp_path / "hashes.parquet")
    assert sorted(table[table.split == "train"].key.astype(int)) == list(range(40))
