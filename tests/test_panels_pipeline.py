"""Panel pairs through the pipeline (`ingest.panels.enabled`, `shard.unit`): the ingest cuts split
figures into crops in the image store and `panels.parquet`, counts what stayed whole and why, and
writes a page of examples; the decontamination sees panels; the gate checks the panel table; the
shards carry figures, panels or both, each panel in its figure's split; and the same inputs give
byte-identical panels and shards.

All on the session's noisy demo corpus (real JATS and images the demo writes), in process."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from biomedclip.ingest.decontaminate import HASHES_SCHEMA
from biomedclip.ingest.panels import OUTCOMES, SPLIT, panel_text, pixel_box
from biomedclip.ingest.params import DecontaminateParams, PanelParams
from biomedclip.ingest.run import run_ingest
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.shard.writer import write_shards
from biomedclip.validate.gate import ValidationFailed, validate_manifest
from biomedclip.validate.params import ValidateOutputs, ValidateParams

from .conftest import ingest_params

pytestmark = pytest.mark.unit


def ingested(corpus: Path, out: Path, **changes):
    params = ingest_params(corpus, out, **({"panels": PanelParams(enabled=True)} | changes))
    return params, run_ingest(params)


@pytest.fixture(scope="module")
def split_corpus(noisy_corpus, tmp_path_factory):
    """The noisy corpus ingested with panels on: (params, report, pairs, panels)."""
    corpus, _ = noisy_corpus
    params, report = ingested(corpus.out, tmp_path_factory.mktemp("panels"))
    return params, report, pd.read_parquet(params.outputs.pairs), pd.read_parquet(params.outputs.panels)


def shard(params, root: Path, unit: str) -> dict:
    return write_shards(params, ShardParams(samples_per_shard=40, unit=unit, outputs=ShardOutputs(
        shards=root, manifest=root / "manifest.json", report=root.parent / f"{root.name}.json")))


def test_split_figures_become_panel_rows_with_crops_of_their_own_pixels(split_corpus):
    params, report, pairs, panels = split_corpus
    counts = report["panels"]
    assert counts["split"] >= 5 and len(panels) == counts["panels"] >= 2 * counts["split"]
    assert counts["split"] + sum(counts["kept_whole"].values()) == counts["figures"] == len(pairs)
    assert set(counts["kept_whole"]) == set(OUTCOMES) - {SPLIT}
    figures = pairs.set_index("pair_id")
    assert set(panels.pair_id) <= set(figures.index)  # panels only of kept figures
    assert panels.panel_id.is_unique and (panels.subcaption.str.len() > 0).all()
    for pair_id, group in panels.groupby("pair_id", sort=False):
        figure = figures.loc[pair_id]
        assert (group.split == figure.split).all()  # the figure's split: by article
        assert list(group.panel_index) == list(range(len(group)))
        assert list(group.letter) == [chr(ord("A") + i) for i in range(len(group))] or group.letter.is_unique
        for row in group.itertuples():
            assert 0 <= row.x0 < row.x1 <= 1 and 0 <= row.y0 < row.y1 <= 1
            assert row.text.endswith(row.subcaption)
            stored = params.outputs.images / row.image_key
            crop = Image.open(stored)
            assert hashlib.sha256(stored.read_bytes()).hexdigest() == row.image_sha256
            assert crop.size == (row.width, row.height)
            # Cut from the figure at its own resolution: the crop's shape is the box's shape.
            assert abs(crop.width / crop.height
                       - (row.x1 - row.x0) * figure.width / ((row.y1 - row.y0) * figure.height)) < 0.15


def test_the_report_and_the_examples_page_show_the_splits_offline(split_corpus):
    params, report, _, panels = split_corpus
    page = (params.outputs.panel_examples / "index.html").read_text()
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert shown and all((params.outputs.panel_examples / name).is_file() for name in shown)
    assert "http" not in page  # no CDN: it renders the same offline
    assert f"<td>panel pairs</td><td class=\"n\">{report['panels']['panels']:,}</td>" in page
    assert any(f"{some.letter}</span> {some.text[:40]}" in page for some in panels.itertuples())
    written = json.loads(params.outputs.report.read_text())
    assert written["panels"] == report["panels"]


def test_panels_change_no_figure_pair_and_off_means_an_empty_table(noisy_corpus, split_corpus, tmp_path):
    corpus, _ = noisy_corpus
    params, _ = ingested(corpus.out, tmp_path, panels=PanelParams(enabled=False))
    pd.testing.assert_frame_equal(pd.read_parquet(params.outputs.pairs), split_corpus[2])
    assert pq.read_metadata(params.outputs.panels).num_rows == 0
    assert json.loads(params.outputs.report.read_text())["panels"] == {"enabled": False}


def test_same_inputs_give_byte_identical_panels_and_shards(noisy_corpus, split_corpus, tmp_path):
    corpus, _ = noisy_corpus
    params, _ = ingested(corpus.out, tmp_path / "again")
    first = split_corpus[0].outputs
    for name in ("pairs", "panels", "rejects"):
        assert getattr(params.outputs, name).read_bytes() == getattr(first, name).read_bytes(), name
    assert (params.outputs.panel_examples / "index.html").read_bytes() == \
        (first.panel_examples / "index.html").read_bytes()
    one, two = shard(params, tmp_path / "one", "both"), shard(split_corpus[0], tmp_path / "two", "both")
    assert one["manifest_sha256"] == two["manifest_sha256"]
    tars = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.tar"))
    assert tars and all((tmp_path / "one" / t).read_bytes() == (tmp_path / "two" / t).read_bytes() for t in tars)
    # A run killed while writing left its temp files; the next run (over the state: it reads
    # nothing again) clears them and writes the same panels.
    stale = [params.outputs.panels.with_name(".panels.parquet.tmp-999"),
             params.outputs.panel_examples.with_name(f".{params.outputs.panel_examples.name}.partial-999")]
    stale[0].write_bytes(b"half a parquet")
    stale[1].mkdir()
    again = run_ingest(params)
    assert again["articles"]["processed"] == 0 and not any(p.exists() for p in stale)
    assert params.outputs.panels.read_bytes() == first.panels.read_bytes()


def samples(root: Path) -> dict[str, dict]:
    found = {}
    for tar in sorted(root.rglob("*.tar")):
        for sample in wds.WebDataset([str(tar)], shardshuffle=False):
            found[sample["__key__"]] = {"split": tar.parent.name, "text": sample["txt"].decode(),
                                        "meta": json.loads(sample["json"]), "jpg": sample["jpg"]}
    return found


@pytest.mark.parametrize("unit", ["figure", "panel", "both"])
def test_the_shard_unit_decides_what_a_sample_is(split_corpus, tmp_path, unit):
    params, _, pairs, panels = split_corpus
    report = shard(params, tmp_path / unit, unit)
    found = samples(tmp_path / unit)
    split_figures = set(panels.pair_id)
    expected = {
        "figure": set(pairs.pair_id),
        "panel": (set(pairs.pair_id) - split_figures) | set(panels.panel_id),
        "both": set(pairs.pair_id) | set(panels.panel_id),
    }[unit]
    assert set(found) == expected
    assert sum(report[s]["panels"] for s in ("train", "val", "test")) == (0 if unit == "figure" else len(panels))
    for row in panels.itertuples() if unit != "figure" else ():
        sample = found[row.panel_id]
        assert sample["split"] == row.split and sample["text"] == row.text
        assert sample["jpg"] == (params.outputs.images / row.image_key).read_bytes()
        meta = sample["meta"]
        assert (meta["pair_id"], meta["letter"], meta["box"]) == (
            row.pair_id, row.letter, [round(float(v), 6) for v in (row.x0, row.y0, row.x1, row.y1)])
        assert meta["license"] == pairs.set_index("pair_id").loc[row.pair_id, "license"]


def test_a_benchmark_image_shown_as_a_panel_takes_its_figure_out(noisy_corpus, split_corpus, tmp_path):
    """The decontamination matches panel crops too: plant one panel's pHash as a benchmark image."""
    corpus, _ = noisy_corpus
    _, _, _, panels = split_corpus
    planted = panels.iloc[len(panels) // 2]
    hashes = tmp_path / "hashes.parquet"
    pq.write_table(pa.table({"benchmark": ["bench"], "split": ["test"], "key": ["img-1"],
                             "phash": [int(planted.phash)]}, schema=HASHES_SCHEMA), hashes)
    params, report = ingested(corpus.out, tmp_path / "out", decontaminate=DecontaminateParams(
        enabled=True, max_distance=0, hashes=hashes, cache=tmp_path / "cache"))
    rejects = pd.read_parquet(params.outputs.rejects)
    overlap = rejects[rejects.reason == "benchmark_overlap"]
    assert len(overlap) >= 1 and report["decontamination"]["overlaps"] == {"bench": len(overlap)}
    assert f"panel {planted.letter}: pHash within 0 bits of bench image 'img-1' (test split)" in set(overlap.detail)
    assert planted.pair_id not in set(pd.read_parquet(params.outputs.pairs).pair_id)
    assert planted.pair_id not in set(pd.read_parquet(params.outputs.panels).pair_id)


def test_the_gate_checks_the_panel_table(split_corpus, tmp_path):
    params, _, _, panels = split_corpus
    gate = ValidateParams(min_pairs=10, split_tolerance=0.5, max_reject_rate=0.9,
                          outputs=ValidateOutputs(result=tmp_path / "ok.json", data_docs=tmp_path / "docs"))
    result = validate_manifest(params, gate)
    checked = {row["check"] for row in result["checks"]}
    assert {"panel_boxes", "panel_overlap", "panel_subcaption", "panels_per_figure", "panel_figure"} <= checked
    assert result["success"]

    broken = panels.copy()
    broken.loc[0, "x1"] = 1.4  # outside the figure
    broken.loc[1, "subcaption"] = ""  # nothing said of it
    second = broken[broken.pair_id == broken.pair_id.iloc[0]].index[-1]
    broken.loc[second, ["x0", "y0", "x1", "y1"]] = broken.loc[0, ["x0", "y0", "x1", "y1"]].clip(upper=1.0)
    orphan = broken.iloc[[2]].assign(pair_id="not-a-pair", panel_id="orphan")
    broken = pd.concat([broken, orphan], ignore_index=True)
    path = tmp_path / "broken.parquet"
    pq.write_table(pa.Table.from_pandas(broken, preserve_index=False), path)
    bad = params.model_copy(update={"outputs": params.outputs.model_copy(update={"panels": path})})
    with pytest.raises(ValidationFailed) as exc:
        validate_manifest(bad, gate.model_copy(update={"outputs": ValidateOutputs(
            result=tmp_path / "bad.json", data_docs=tmp_path / "bad-docs")}))
    failed = {row["check"] for row in exc.value.result["checks"] if not row["success"]}
    # The orphan is also a "figure" of one panel.
    assert failed == {"panel_boxes", "panel_subcaption", "panel_overlap", "panel_figure", "panels_per_figure"}
    assert broken.panel_id[0] in str(exc.value) and "not-a-pair" in str(exc.value)


def test_panel_text_keeps_the_subcaption_whole_and_boxes_stay_inside():
    shared = " ".join(f"w{i}" for i in range(50))
    text = panel_text(shared, "the panel's own words here", max_words=20)
    assert text.endswith("the panel's own words here") and len(text.split()) == 20 and "…" in text
    assert panel_text("Title.", "Own.", 20) == "Title. Own."
    assert pixel_box((0.0, 0.25, 1.0, 0.75), 101, 99) == (0, 24, 101, 75)
    assert pixel_box((0.5, 0.0, 1.0000001, 1.0), 10, 10) == (5, 0, 10, 10)


def test_inspect_decides_every_figure_of_the_corpus_as_the_ingest_did(noisy_corpus, split_corpus):
    """`biomedclip inspect ARTICLE --panels FIGURE` on each figure image the ingest kept: the same
    outcome (split, or kept whole for the same reason), the same panels and boxes."""
    import sqlite3

    from biomedclip.ingest.jats import parse_article
    from biomedclip.panels.inspect import inspect_panels

    corpus, _ = noisy_corpus
    params = split_corpus[0]
    with sqlite3.connect(params.outputs.state) as db:
        figures = db.execute("SELECT pair_id, pmcid, version, caption, source_uri, panel_status FROM pairs").fetchall()
        boxes: dict[str, list[tuple]] = {}
        for pair, *box in db.execute("SELECT pair_id, x0, y0, x1, y1 FROM panels ORDER BY pair_id, panel_index"):
            boxes.setdefault(pair, []).append(tuple(box))
    articles: dict[str, object] = {}
    seen = set()
    for pair, pmcid, version, caption, uri, status in figures:
        folder = corpus.out / f"{pmcid}.{version}"
        article = articles.get(pmcid) or articles.setdefault(
            pmcid, parse_article((folder / f"{pmcid}.{version}.xml").read_bytes()))
        found = inspect_panels(article, Path(uri), params)  # the media file the ingest read
        assert found.figure.caption == caption, (pair, found.file)
        assert found.decision.status == status, (pair, found.file, found.decision.detail)
        assert [tuple(round(v, 6) for v in p.box) for p in found.decision.split.panels] == boxes.get(pair, []), pair
        seen.add(status)
    # Every figure read (before the dedup), and kept whole by the image as well as by the caption.
    assert len(figures) >= split_corpus[1]["panels"]["figures"]
    assert {"split", "no_panel_markers"} < seen and seen & {"one_panel", "count_mismatch", "low_confidence"}
