"""Batch embeddings (`biomedclip.embed`): the corpus, a user's folder and table, bounded, resumable.

1. The ingested noisy demo corpus embedded by the session's trained tiny model: one row per pair,
   float16 unit vectors of the model's width, the model's digest on every row, and the same
   vectors (to float16 precision) as the evaluation's own embedding path gives.
2. A user's CSV of image paths and texts: a missing image, a text-only row, an image under the
   ingest's minimum side, a file that is not an image: rejected with the ingest's reason codes,
   counted, named; the rest embedded.
3. Bounded memory: the input is read at most a window of chunks ahead of what is on disk.
4. A finished output for the same input and model is not redone.
5. (integration) Killed mid-way (SIGKILL, 2 CPU worker processes) and re-run: the chunks already
   written are kept, and the output is byte-identical to an uninterrupted in-process run's.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from biomedclip.embed.inputs import EmbedInput, EmbedRow, StoreImages, corpus_input, open_input
from biomedclip.embed.run import embed, partial_dir, read_metadata, rejects_path

from .conftest import REPO


def _vectors(table, column: str) -> np.ndarray:
    values = table.column(column).combine_chunks()
    return np.asarray(values.flatten().to_numpy(zero_copy_only=False)).reshape(len(values), -1)


@pytest.fixture(scope="module")
def corpus(ingested_noisy):
    params, _, _ = ingested_noisy
    return params.outputs


@pytest.fixture(scope="module")
def model(tiny_world) -> str:
    return str(tiny_world.trained["model_dir"])


@pytest.fixture(scope="module")
def embedded(corpus, model, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("embed") / "embeddings.parquet"
    summary = embed(corpus_input(corpus.pairs, None, corpus.images), out, model=model, batch_size=16,
                    chunk_rows=64)
    return out, summary


@pytest.mark.unit
def test_the_corpus_is_embedded_as_the_evaluation_embeds(embedded, corpus, model):
    from biomedclip.evaluate.embedding import decode, embed_images, embed_texts
    from biomedclip.models import load_model

    out, summary = embedded
    table = pq.read_table(out)
    pairs = pq.read_table(corpus.pairs, columns=["pair_id", "image_key", "caption"]).to_pylist()
    assert table.column("id").to_pylist() == [p["pair_id"] for p in pairs]  # every pair, in order
    assert set(table.column("kind").to_pylist()) == {"figure"}
    assert summary["rows"] == len(pairs) and summary["rejected"] == 0
    loaded = load_model(model)
    assert set(table.column("model_sha256").to_pylist()) == {loaded.digest}
    images, texts = _vectors(table, "image_embedding"), _vectors(table, "text_embedding")
    assert images.dtype == np.float16 and images.shape == (len(pairs), summary["dim"])
    assert np.allclose(np.linalg.norm(images.astype(np.float32), axis=1), 1, atol=2e-3)
    sample = pairs[:: max(1, len(pairs) // 12)]
    store = corpus.images
    expected_images = embed_images(loaded, [decode((store / p["image_key"]).read_bytes()) for p in sample], 8)
    expected_texts = embed_texts(loaded, [p["caption"] for p in sample], 8)
    rows = [i for i in range(0, len(pairs), max(1, len(pairs) // 12))]
    assert torch.allclose(torch.from_numpy(images[rows].astype(np.float32)), expected_images, atol=2e-3)
    assert torch.allclose(torch.from_numpy(texts[rows].astype(np.float32)), expected_texts, atol=2e-3)
    meta = read_metadata(out)
    assert meta["model_sha256"] == loaded.digest and meta["input_sha256"]
    assert pq.read_table(rejects_path(out)).num_rows == 0
    assert not partial_dir(out).exists()  # the chunks are gone once merged


@pytest.mark.unit
def test_a_users_table_bad_rows_are_rejected_named_and_counted(tmp_path, corpus, model):
    images = sorted(corpus.images.rglob("*.jpg"))[:3]
    folder = tmp_path / "mine"
    folder.mkdir()
    for i, path in enumerate(images):
        (folder / f"figure{i}.jpg").write_bytes(path.read_bytes())
    Image.new("RGB", (20, 20), "white").save(folder / "tiny.png")
    (folder / "notes.jpg").write_text("not an image")
    table = tmp_path / "rows.csv"
    with table.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "image", "text"])
        writer.writerow(["a", "mine/figure0.jpg", "chest radiograph"])
        writer.writerow(["b", "mine/figure1.jpg", ""])
        writer.writerow(["c", "", "histology of the colon"])
        writer.writerow(["d", "mine/absent.jpg", "whatever"])
        writer.writerow(["e", "mine/tiny.png", ""])
        writer.writerow(["f", "mine/notes.jpg", ""])
        writer.writerow(["g", "", ""])
    out = tmp_path / "out.parquet"
    summary = embed(open_input(table), out, model=model, batch_size=2, chunk_rows=3)
    result = pq.read_table(out)
    assert result.column("id").to_pylist() == ["a", "b", "c"]
    assert result.column("kind").to_pylist() == ["image", "image", "text"]
    assert result.column("text_embedding").is_null().to_pylist() == [False, True, False]
    assert result.column("image_embedding").is_null().to_pylist() == [False, False, True]
    rejects = {r["id"]: r for r in pq.read_table(rejects_path(out)).to_pylist()}
    assert {k: r["reason"] for k, r in rejects.items()} == {
        "d": "media_missing", "e": "image_too_small", "f": "image_unreadable", "g": "media_missing"}
    assert "absent.jpg" in rejects["d"]["detail"] and "20x20" in rejects["e"]["detail"]
    assert summary["rejected"] == 4 and summary["rejected_by_reason"] == {
        "image_too_small": 1, "image_unreadable": 1, "media_missing": 2}
    folder_summary = embed(open_input(folder), tmp_path / "folder.parquet", model=model, batch_size=4)
    ids = pq.read_table(tmp_path / "folder.parquet").column("id").to_pylist()
    assert ids == ["figure0.jpg", "figure1.jpg", "figure2.jpg"] and folder_summary["rejected"] == 2


@pytest.mark.unit
def test_memory_is_bounded_by_a_window_of_chunks(corpus, model, tmp_path):
    """The input is read lazily: rows pulled from it never run more than a window of chunks ahead
    of the rows already written to disk (what a 15M-row input needs to stay flat)."""
    source = corpus_input(corpus.pairs, None, corpus.images)
    out = tmp_path / "bounded.parquet"
    chunk = 16
    ahead: list[int] = []

    def watched_rows():
        for pulled, row in enumerate(source.rows(), start=1):
            written = chunk * len(list(partial_dir(out).glob("chunk-*.parquet")))  # no rejects: all full
            ahead.append(pulled - written)
            yield row

    watched = EmbedInput(source.describe, watched_rows, source.images, source.digest, source.total)
    summary = embed(watched, out, model=model, batch_size=16, chunk_rows=chunk)
    assert summary["rows"] > 10 * chunk and summary["rejected"] == 0  # a stream many chunks long
    assert max(ahead) <= 2 * chunk, max(ahead)  # the chunk being embedded and the one being read


@pytest.mark.unit
def test_a_finished_output_is_not_redone(embedded, corpus, model, caplog):
    out, summary = embedded
    before = out.stat().st_mtime_ns
    again = embed(corpus_input(corpus.pairs, None, corpus.images), out, model=model, batch_size=16,
                  chunk_rows=64)
    assert again["up_to_date"] and out.stat().st_mtime_ns == before
    assert again["rows"] == summary["rows"]


@pytest.mark.unit
def test_store_keys_cannot_escape_the_store(corpus):
    from biomedclip.embed.inputs import RowRejected

    with pytest.raises(RowRejected) as caught:
        StoreImages(corpus.images).load("../pairs.parquet")
    assert caught.value.reason == "media_name_unsafe"
    assert EmbedRow("x", "figure", None, "t").text == "t"


CHILD = """
import sys
from pathlib import Path
from biomedclip.embed.inputs import corpus_input
from biomedclip.embed.run import embed
pairs, images, out, model = sys.argv[1:5]
embed(corpus_input(Path(pairs), None, Path(images)), Path(out), model=model, batch_size=4, chunk_rows=16,
      workers=2, device="cpu")
"""


@pytest.mark.integration
def test_killed_mid_way_and_rerun_gives_the_same_bytes(corpus, model, tmp_path, caplog):
    reference = tmp_path / "reference.parquet"
    embed(corpus_input(corpus.pairs, None, corpus.images), reference, model=model, batch_size=4, chunk_rows=16,
          device="cpu")
    out = tmp_path / "killed.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(corpus.pairs), str(corpus.images), str(out), model],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(partial_dir(out).glob("chunk-*.parquet"))) < 3:
        assert child.poll() is None, child.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no chunk written in 300 s"
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)  # the run and its worker processes, mid-way
    child.wait(timeout=60)
    child.stderr.close()
    written = len(list(partial_dir(out).glob("chunk-*.parquet")))
    assert not out.exists() and written >= 3
    total = -(-pq.ParquetFile(corpus.pairs).metadata.num_rows // 16)
    assert written < total, "the child finished before it was killed: nothing was resumed"
    caplog.set_level("INFO", logger="biomedclip.embed.run")
    embed(corpus_input(corpus.pairs, None, corpus.images), out, model=model, batch_size=4, chunk_rows=16,
          device="cpu")
    assert any(f"resuming: {written} chunks" in r.getMessage() for r in caplog.records)
    assert out.read_bytes() == reference.read_bytes()
    assert rejects_path(out).read_bytes() == rejects_path(reference).read_bytes()
