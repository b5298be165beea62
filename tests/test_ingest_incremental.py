"""Incremental and crash-safe ingest: re-runs read only what changed, kill -9 loses nothing."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from biomedclip.demo.corpus import generate_corpus
from biomedclip.ingest.run import run_ingest

from .conftest import ingest_params, small_params


def outputs(params) -> tuple[pd.DataFrame, pd.DataFrame, set[str]]:
    images = {p.relative_to(params.outputs.images).as_posix()
              for p in params.outputs.images.rglob("*") if p.is_file()}
    return pd.read_parquet(params.outputs.pairs), pd.read_parquet(params.outputs.rejects), images


def assert_same_outputs(a, b) -> None:
    pairs_a, rejects_a, images_a = outputs(a)
    pairs_b, rejects_b, images_b = outputs(b)
    pd.testing.assert_frame_equal(pairs_a, pairs_b)
    pd.testing.assert_frame_equal(rejects_a, rejects_b)
    assert images_a == images_b


@pytest.mark.unit
def test_a_grown_corpus_is_read_incrementally_and_equals_a_run_from_scratch(tmp_path):
    corpus = tmp_path / "raw"
    generate_corpus(small_params(corpus, articles=20))
    incremental = ingest_params(corpus, tmp_path / "incremental")
    first = run_ingest(incremental)
    assert first["articles"]["processed"] == 20
    generate_corpus(small_params(corpus, articles=40))  # PMC grew: 20 new articles
    second = run_ingest(incremental)
    assert (second["articles"]["processed"], second["articles"]["unchanged"]) == (20, 20)
    scratch = ingest_params(corpus, tmp_path / "scratch")
    run_ingest(scratch)
    assert_same_outputs(incremental, scratch)
    # the metrics DVC tracks do not depend on the run history either
    assert incremental.outputs.report.read_bytes() == scratch.outputs.report.read_bytes()
    third = run_ingest(incremental)
    assert third["articles"]["processed"] == 0 and third["pairs"] == second["pairs"]


@pytest.mark.unit
def test_removed_articles_leave_the_manifest_and_their_images_the_store(tmp_path):
    corpus = tmp_path / "raw"
    generate_corpus(small_params(corpus, articles=12))
    params = ingest_params(corpus, tmp_path / "out")
    run_ingest(params)
    pairs = pd.read_parquet(params.outputs.pairs)
    gone = pairs.pmcid.iloc[0]
    for folder in corpus.glob(f"{gone}.*"):
        shutil.rmtree(folder)
    report = run_ingest(params)
    after = pd.read_parquet(params.outputs.pairs)
    assert gone not in set(after.pmcid)
    assert report["images"]["removed_unreferenced"] >= 1
    only_gone = set(pairs.image_key[pairs.pmcid == gone]) - set(after.image_key)
    assert not any((params.outputs.images / key).exists() for key in only_gone)


@pytest.mark.unit
def test_changed_params_reprocess_everything_and_lost_images_are_restored(tmp_path):
    corpus = tmp_path / "raw"
    generate_corpus(small_params(corpus, articles=8))
    params = ingest_params(corpus, tmp_path / "out")
    run_ingest(params)
    again = run_ingest(params.model_copy(update={"caption": params.caption.model_copy(update={"min_words": 6})}))
    assert again["articles"]["processed"] == 8 and again["articles"]["unchanged"] == 0
    run_ingest(params)
    pairs = pd.read_parquet(params.outputs.pairs)
    lost = params.outputs.images / pairs.image_key.iloc[0]
    lost.unlink()  # as `dvc checkout` of older outputs might
    report = run_ingest(params)
    assert lost.is_file() and report["articles"]["processed"] >= 1


@pytest.mark.integration
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_result(tmp_path):
    corpus = tmp_path / "raw"
    generate_corpus(small_params(corpus, articles=60), workers=2)
    killed = ingest_params(corpus, tmp_path / "killed", batch_size=2, workers=1)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"ingest": killed.model_dump(mode="json")}))
    script = Path(sys.executable).parent / "biomedclip"
    proc = subprocess.Popen([str(script), "--params", str(params_file), "ingest"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed.outputs.state
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists():
            try:
                with sqlite3.connect(state, timeout=1) as db:
                    stored = db.execute("SELECT COUNT(*) FROM articles").fetchone()[0]
            except sqlite3.Error:
                stored = 0
        if stored >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the ingest finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10 <= stored < 60
    resumed = run_ingest(killed)
    assert resumed["articles"]["unchanged"] >= 10  # work done before the kill was kept
    clean = ingest_params(corpus, tmp_path / "clean")
    run_ingest(clean)
    assert_same_outputs(killed, clean)
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.name.startswith(".")]
    assert not leftovers, leftovers


@pytest.mark.unit
@pytest.mark.parametrize("knob", ["workers", "batch_size"])
def test_fan_out_settings_do_not_change_the_result(tmp_path, noisy_corpus, ingested_noisy, knob):
    corpus, _ = noisy_corpus
    reference, _, _ = ingested_noisy
    other = ingest_params(corpus.out, tmp_path, **{knob: 1 if knob == "workers" else 5})
    run_ingest(other)
    assert_same_outputs(reference, other)


@pytest.mark.unit
def test_a_change_to_the_extraction_code_reprocesses_every_article(tmp_path, monkeypatch):
    """Editing the code under test is simulated by changing the digest of that code (the real
    digest is a hash of the extraction modules' source files)."""
    from biomedclip.ingest import state

    corpus = tmp_path / "raw"
    generate_corpus(small_params(corpus, articles=6))
    params = ingest_params(corpus, tmp_path / "out")
    run_ingest(params)
    assert run_ingest(params)["articles"]["processed"] == 0
    monkeypatch.setattr(state, "code_digest", lambda panels=False: "a different jats.py")
    assert run_ingest(params)["articles"]["processed"] == 6
