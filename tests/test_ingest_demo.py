"""Ingest of the demo corpus against what the generator knows it put there."""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter

import pandas as pd
import pytest
from PIL import Image

from biomedclip.ingest.run import run_ingest
from biomedclip.ingest.split import split_of

from .conftest import ingest_params

pytestmark = pytest.mark.unit

ALLOWED = {"CC BY", "CC0", "CC BY-SA", "CC BY-ND"}
CONDITION_REASON = {"missing_media": "media_missing", "corrupt_image": "image_unreadable",
                    "tiny_image": "image_too_small", "huge_image": "image_too_large"}


def expected_outcomes(truth):
    """(pmcid, href) → "pair" or the reject reason, from the generator's records alone."""
    by_index = {a["index"]: a for a in truth.truth}

    def identity(article, graphic):
        if graphic["duplicate_of"] is None:
            return (article["pmcid"], graphic["href"])
        src_index, src_fig = graphic["duplicate_of"]
        source = by_index[src_index]
        return identity(source, next(g for g in source["graphics"] if g["figure"] == src_fig))

    outcomes, seen = {}, set()
    for article in sorted(truth.truth, key=lambda a: int(a["pmcid"][3:])):
        if article["retracted"] or article["license_code"] not in ALLOWED:
            continue
        for g in article["graphics"]:
            key = (article["pmcid"], g["href"])
            if g["caption"] is None:
                outcomes[key] = "caption_missing"
            elif g["condition"] != "ok":
                outcomes[key] = CONDITION_REASON[g["condition"]]
            elif (identity(article, g), g["caption"]) in seen:
                outcomes[key] = "duplicate_exact"
            else:
                seen.add((identity(article, g), g["caption"]))
                outcomes[key] = "pair"
    return outcomes


def test_pairs_are_exactly_the_figures_a_careful_reader_would_keep(ingested_noisy):
    params, report, truth = ingested_noisy
    pairs = pd.read_parquet(params.outputs.pairs)
    rejects = pd.read_parquet(params.outputs.rejects)
    expected = expected_outcomes(truth)
    got = {(r.pmcid, r.source_uri.rsplit("/", 1)[1].rsplit(".", 1)[0]) for r in pairs.itertuples()}
    wanted = {k for k, v in expected.items() if v == "pair"}
    near = set(zip(rejects.pmcid[rejects.reason == "duplicate_near"],
                   rejects.source_uri[rejects.reason == "duplicate_near"].str.rsplit("/", n=1).str[1]
                   .str.rsplit(".", n=1).str[0], strict=True))
    assert got <= wanted
    assert wanted - got <= near, "only perceptual duplicates may be missing"
    assert len(near) <= 0.02 * len(wanted)
    assert report["pairs"]["total"] == len(pairs) == len(got)


def test_captions_are_the_generators_captions_exactly(ingested_noisy):
    params, _, truth = ingested_noisy
    captions = {(a["pmcid"], g["fig_id"]): g["caption"] for a in truth.truth for g in a["graphics"]}
    pairs = pd.read_parquet(params.outputs.pairs)
    for row in pairs.itertuples():
        assert row.caption == captions[(row.pmcid, row.fig_id)]


def test_every_reject_reason_is_counted_as_the_truth_predicts(ingested_noisy):
    params, report, truth = ingested_noisy
    rejects = pd.read_parquet(params.outputs.rejects)
    counts = Counter(rejects.reason)
    outcomes = expected_outcomes(truth)
    expected = Counter(v for v in outcomes.values() if v not in ("pair", "caption_missing"))
    articles = truth.truth
    eligible = [a for a in articles if not a["retracted"] and a["license_code"] in ALLOWED]
    expected["caption_missing"] = sum(  # one per figure (not per graphic), graphical abstracts too
        len({g["figure"] for g in a["graphics"] if g["caption"] is None})
        + ("graphical_abstract" in a["noise"]) for a in eligible)
    expected["retracted"] = sum(a["retracted"] for a in articles)
    expected["license_not_allowed"] = sum(not a["retracted"] and a["license_code"] not in ALLOWED
                                          for a in articles)
    expected["superseded_version"] = sum(a["version"] - 1 for a in articles)
    expected["no_figures"] = sum(not a["graphics"] and "graphical_abstract" not in a["noise"]
                                 for a in eligible)
    for reason in ("caption_missing", "media_missing", "image_unreadable", "image_too_small",
                   "image_too_large", "retracted", "license_not_allowed", "superseded_version",
                   "no_figures"):
        assert counts[reason] == expected[reason], reason
    assert counts["duplicate_exact"] + counts["duplicate_near"] >= expected["duplicate_exact"] > 0
    assert report["rejects"]["by_reason"] == {r: counts.get(r, 0) for r in report["rejects"]["by_reason"]}
    assert rejects.detail.str.len().min() > 0


def test_splits_are_by_article_and_follow_the_hash(ingested_noisy):
    params, report, _ = ingested_noisy
    pairs = pd.read_parquet(params.outputs.pairs)
    assert (pairs.groupby("pmcid").split.nunique() == 1).all(), "an article spans two splits"
    assert all(split_of(p, params.split) == s for p, s in zip(pairs.pmcid, pairs.split, strict=True))
    assert "train" in set(pairs.split) <= {"train", "val", "test"}
    counts = Counter(pairs.split)
    assert {s: report["pairs"][s] for s in ("train", "val", "test")} == {s: counts[s] for s in ("train", "val", "test")}


def test_stored_images_are_verified_rgb_jpegs_named_by_their_hash(ingested_noisy):
    params, report, _ = ingested_noisy
    pairs = pd.read_parquet(params.outputs.pairs)
    assert pairs.pair_id.is_unique
    for row in pairs.itertuples():
        data = (params.outputs.images / row.image_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.image_sha256
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (row.width, row.height))
        assert max(img.size) <= params.image.max_side and min(img.size) >= 1
    stored = {p.relative_to(params.outputs.images).as_posix() for p in params.outputs.images.rglob("*.jpg")}
    assert set(pairs.image_key) <= stored
    assert len(stored) == report["images"]["stored"]


def test_manifest_has_the_contract_columns(ingested_noisy):
    params, _, _ = ingested_noisy
    columns = set(pd.read_parquet(params.outputs.pairs).columns)
    assert {"pair_id", "pmcid", "pmid", "fig_id", "label", "caption", "image_key", "image_sha256",
            "width", "height", "license", "split", "source_uri"} <= columns


@pytest.mark.parametrize("variant", ["legacy", "inventory"])
def test_legacy_tarballs_and_inventory_listing_give_the_same_pairs(ingested_noisy, noisy_corpus,
                                                                   tmp_path, variant):
    params, _, truth = ingested_noisy
    corpus, _ = noisy_corpus
    retracted: set[str] = set()
    if variant == "legacy":  # the FTP file list never said which articles were retracted
        other = ingest_params(corpus.legacy_out, tmp_path, layout="legacy")
        retracted = {a["pmcid"] for a in truth.truth if a["retracted"]}
    else:
        other = ingest_params(corpus.out, tmp_path, listing="inventory")
    run_ingest(other)
    columns = ["pair_id", "pmcid", "caption", "image_sha256", "split", "license"]
    mine = pd.read_parquet(params.outputs.pairs)[columns]
    theirs = pd.read_parquet(other.outputs.pairs)[columns]
    theirs = theirs[~theirs.pmcid.isin(retracted)].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)


# The image as the generator encoded it: (format, mode) Pillow reports on opening it.
AS_PUBLISHED = {"jpeg": ("JPEG", "RGB"), "cmyk_jpeg": ("JPEG", "CMYK"), "greyscale": ("JPEG", "L"),
                "png": ("PNG", "RGB"), "palette_png": ("PNG", "P"), "png16": ("PNG", "I;16"),
                "rgba_png": ("PNG", "RGBA"), "tiff": ("TIFF", "RGB"), "gif": ("GIF", "P")}


def test_each_pair_records_its_image_and_year_as_published(ingested_noisy, noisy_corpus):
    """What the dataset card reads: the format, colour mode and size before normalisation, and
    the article's year of publication."""
    params, _, truth = ingested_noisy
    corpus, _ = noisy_corpus
    pairs = pd.read_parquet(params.outputs.pairs)
    by_href = {(a["pmcid"], g["href"]): g for a in truth.truth for g in a["graphics"]}
    for row in pairs.itertuples():
        graphic = by_href[(row.pmcid, row.source_uri.rsplit("/", 1)[1].rsplit(".", 1)[0])]
        assert (row.source_format, row.source_mode) == AS_PUBLISHED[graphic["encoding"]], row.source_uri
        with Image.open(row.source_uri) as published:
            assert (row.source_width, row.source_height) == published.size
        assert max(row.width, row.height) == min(params.image.max_side, max(published.size))
    # The year of the article's electronic publication, as the JATS <pub-date pub-type="epub"> says.
    xml = {a["pmcid"]: (corpus.out / f"{a['pmcid']}.{a['version']}" / f"{a['pmcid']}.{a['version']}.xml")
           for a in truth.truth}
    for pmcid, year in pairs.groupby("pmcid").year.first().items():
        found = re.search(r'<pub-date[^>]*pub-type="epub"[^>]*>.*?<year>(\d{4})</year>', xml[pmcid].read_text(), re.S)
        assert found and int(found.group(1)) == year, pmcid
