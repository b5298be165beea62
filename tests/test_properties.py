"""Properties of the pure functions the data depends on, checked on inputs hypothesis draws.

- `split_of`: a function of the PMCID (and the split params) alone, so an article never moves as
  PMC grows; the fractions hold; a bigger train fraction only ever takes articles into train.
- dedup (`assemble._mark_rejected_pairs` on a real ingest state): the pairs dropped do not depend on
  the order articles were read, and of each group of duplicates the lowest PMCID's pair is kept.
- rank metrics: `match_ranks` / `rank_metrics` equal a naive full-matrix reference, exact ties
  included (integer-valued vectors), whatever the chunk size.
- pHash: the project's 64-bit DCT hash against `imagehash.phash` as the reference (test only: the
  project's own hash stays, so the data version does not change).

Draws are derandomized: every run checks the same examples, so a failure reproduces.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from biomedclip.evaluate.retrieval import match_ranks, rank_metrics
from biomedclip.ingest.assemble import _mark_rejected_pairs
from biomedclip.ingest.extract import ArticleResult
from biomedclip.ingest.images import phash
from biomedclip.ingest.params import DecontaminateParams, DedupParams, IngestParams, SplitParams
from biomedclip.ingest.split import SPLITS, split_of
from biomedclip.ingest.state import IngestState

pytestmark = pytest.mark.unit
EXAMPLES = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# (train, val) in thousandths: test is the rest.
fractions = st.integers(50, 900).flatmap(lambda train: st.tuples(st.just(train), st.integers(0, 1000 - train)))


def split_params(train: int, val: int, salt: str = "biomedclip-v1") -> SplitParams:
    return SplitParams(train=train / 1000, val=val / 1000, test=(1000 - train - val) / 1000, salt=salt)


# --- split_of ----------------------------------------------------------------------------------


@EXAMPLES
@given(st.lists(st.integers(1, 10**8), min_size=1, max_size=50, unique=True), fractions, st.text(max_size=12))
def test_an_articles_split_depends_on_its_pmcid_alone(numbers, split, salt):
    """The corpus around an article (others added, removed, reordered) never moves it."""
    params = split_params(*split, salt=salt)
    alone = {n: split_of(f"PMC{n}", params) for n in numbers}
    in_a_grown_corpus = {n: split_of(f"PMC{n}", SplitParams(**params.model_dump()))
                         for n in reversed(numbers + [n + 10**8 for n in numbers])}
    assert {n: in_a_grown_corpus[n] for n in numbers} == alone
    assert set(alone.values()) <= set(SPLITS)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(fractions, st.integers(1, 10**8))
def test_split_fractions_hold_over_many_articles(split, start):
    """20,000 consecutive PMCIDs: each split's share within 0.02 of its fraction (> 5 sigma)."""
    params = split_params(*split)
    n = 20_000
    counts = dict.fromkeys(SPLITS, 0)
    for number in range(start, start + n):
        counts[split_of(f"PMC{number}", params)] += 1
    for name in SPLITS:
        assert abs(counts[name] / n - getattr(params, name)) < 0.02, (name, counts, params)


@EXAMPLES
@given(fractions, st.integers(0, 500), st.lists(st.integers(1, 10**8), min_size=1, max_size=200, unique=True))
def test_a_bigger_train_fraction_only_takes_articles_into_train(split, more, numbers):
    train, val = split
    grown = min(1000, train + more)
    before, after = split_params(train, val), split_params(grown, max(0, train + val - grown))
    for number in numbers:
        old, new = split_of(f"PMC{number}", before), split_of(f"PMC{number}", after)
        assert old == new or new == "train", (number, old, new)


# --- dedup -------------------------------------------------------------------------------------

CAPTIONS = ("Axial CT of the chest.", "Western blot of lysates.", "Kaplan-Meier survival curves.")
PHASHES = (0, 0b111, 0b1111_1111, -(1 << 63))  # distances 3 and 5 from 0: near and not near (limit 4)


@st.composite
def corpora(draw):
    """Articles (PMCID number -> its pairs: (caption, image, phash)) with repeats across articles."""
    numbers = draw(st.lists(st.integers(11_000_000, 11_000_040), min_size=2, max_size=12, unique=True))
    pair = st.tuples(st.sampled_from(CAPTIONS), st.integers(0, 3), st.sampled_from(PHASHES))
    return {n: draw(st.lists(pair, min_size=1, max_size=3)) for n in numbers}


def article(number: int, pairs: list[tuple[str, int, int]]) -> ArticleResult:
    pmcid = f"PMC{number}"
    rows = [{"pair_id": f"{pmcid}-{i}", "pmcid": pmcid, "pmid": "", "version": 1, "fig_id": f"F{i}", "label": "",
             "caption": caption, "panels": 1, "image_key": f"{image:02d}.jpg", "image_sha256": f"{image:064d}",
             "width": 64, "height": 64, "phash": hash_, "license": "CC BY", "source_uri": f"s3://pmc/{pmcid}",
             "ordinal": i, "caption_sha256": f"{CAPTIONS.index(caption):064d}", "panel_status": None,
             "panel_detail": None, "year": 2024, "source_format": "PNG", "source_mode": "RGB", "source_width": 64,
             "source_height": 64}
            for i, (caption, image, hash_) in enumerate(pairs)]
    return ArticleResult(pmcid=pmcid, version=1, digest="d", source_uri=f"s3://pmc/{pmcid}", pairs=rows)


def dropped(folder: Path, corpus: dict[int, list], order: list[int]) -> dict[str, tuple[str, str]]:
    """{pair dropped: (reason, pair kept instead)} after reading the articles in `order`."""
    state = IngestState(folder / "state.sqlite", "digest")
    try:
        for number in order:
            state.record([article(number, corpus[number])])
        _mark_rejected_pairs(state, IngestParams(dedup=DedupParams(near=True, max_distance=4),
                                                  decontaminate=DecontaminateParams(enabled=False)))
        rows = state.db.execute("SELECT pair_id, reason, detail FROM temp.dup")
        return {pair: (reason, detail.removeprefix("same image and caption as pair ")) for pair, reason, detail in rows}
    finally:
        state.close()


def rank(pair_id: str) -> tuple[int, int]:
    pmcid, _, ordinal = pair_id.partition("-")
    return int(pmcid[3:]), int(ordinal)


@EXAMPLES
@given(corpora(), st.randoms(use_true_random=False))
def test_dedup_is_independent_of_reading_order_and_keeps_the_lowest_pmcid(tmp_path_factory, corpus, random):
    order = sorted(corpus)
    shuffled = order[:]
    random.shuffle(shuffled)
    first = dropped(tmp_path_factory.mktemp("a"), corpus, order)
    assert dropped(tmp_path_factory.mktemp("b"), corpus, shuffled) == first
    pairs = {f"PMC{n}-{i}": p for n, ps in corpus.items() for i, p in enumerate(ps)}
    for pair, (reason, of) in first.items():
        # Dropped as the duplicate of an earlier pair (lower PMCID, then earlier figure), which
        # it really duplicates: the same caption, and the same image or one within 4 pHash bits.
        assert rank(of) < rank(pair), (pair, of)
        (caption, image, hash_), (of_caption, of_image, of_hash) = pairs[pair], pairs[of]
        assert caption == of_caption
        if reason == "duplicate_exact":
            assert image == of_image
        else:
            assert reason == "duplicate_near" and ((hash_ ^ of_hash) & (2**64 - 1)).bit_count() <= 4
    by_caption: dict[str, list[str]] = {}
    for pair, (caption, image, _) in pairs.items():
        by_caption.setdefault(caption, []).append(pair)
        if any(pairs[other][:2] == (caption, image) and rank(other) < rank(pair) for other in pairs):
            assert pair in first, f"{pair} repeats an earlier pair's image and caption but is kept"
    for caption, group in by_caption.items():
        assert min(group, key=rank) not in first, f"the lowest PMCID's pair with caption {caption!r} is dropped"


# --- rank metrics ------------------------------------------------------------------------------


@st.composite
def aligned_pairs(draw):
    n, d = draw(st.integers(2, 14)), draw(st.integers(1, 4))
    vector = st.lists(st.integers(-2, 2), min_size=d, max_size=d)
    images = draw(st.lists(vector, min_size=n, max_size=n))
    texts = draw(st.lists(vector, min_size=n, max_size=n))
    return torch.tensor(images, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32)


@EXAMPLES
@given(aligned_pairs(), st.integers(1, 16))
def test_ranks_and_rank_metrics_equal_the_full_matrix_reference(pairs, chunk):
    queries, candidates = pairs
    sims = [[float(sum(a * b for a, b in zip(q, c, strict=True))) for c in candidates.tolist()]
            for q in queries.tolist()]
    naive = [sum(s > row[i] for s in row) for i, row in enumerate(sims)]  # ties count for the query
    assert match_ranks(queries, candidates, chunk=chunk).tolist() == naive
    got = rank_metrics(torch.tensor(naive), ks=(1, 2, 5))
    assert got == pytest.approx({**{f"recall_at_{k}": sum(r < k for r in naive) / len(naive) for k in (1, 2, 5)},
                                 "mean_rank": statistics.fmean(naive) + 1,
                                 "median_rank": statistics.median(naive) + 1}, abs=1e-12)


# --- pHash -------------------------------------------------------------------------------------


@st.composite
def images(draw):
    """Photos (noise), charts (bands) and drawings (flat shapes on a background), any size."""
    width, height = draw(st.integers(8, 160)), draw(st.integers(8, 160))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(("noise", "bands", "shapes")))
    if kind == "noise":
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif kind == "bands":
        pixels = np.repeat(rng.integers(0, 256, (1, width, 3), dtype=np.uint8), height, axis=0)
    else:
        pixels = np.full((height, width, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        for _ in range(draw(st.integers(1, 5))):
            x0, y0 = rng.integers(0, width), rng.integers(0, height)
            pixels[y0:y0 + rng.integers(1, height + 1), x0:x0 + rng.integers(1, width + 1)] = rng.integers(0, 256, 3)
    return Image.fromarray(pixels)


@EXAMPLES
@given(images())
def test_phash_equals_imagehash_but_where_the_medians_differ(image):
    """The same 32x32 LANCZOS grey image and 2-D DCT-II, each low frequency against a median:
    imagehash's is the median of all 64, the project's of the 63 without the DC term. A bit may
    differ only for a coefficient between (or, with float noise, at) the two medians: flat rows
    or columns make exact-zero coefficients whose sign is rounding noise in either DCT."""
    imagehash = pytest.importorskip("imagehash")
    from scipy.fftpack import dct

    reference = imagehash.phash(image).hash.flatten()
    ours = phash(image) & (2**64 - 1)
    bits = np.array([(ours >> i) & 1 for i in range(64)], dtype=bool)
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dct(dct(grey, axis=0), axis=1)[:8, :8].flatten() / 2  # scipy's DCT-II is twice the project's
    lowest, highest = sorted((float(np.median(low)), float(np.median(low[1:]))))
    noise = 1e-9 * max(1.0, float(np.abs(low).max()))
    differing = np.flatnonzero(bits != reference)
    assert all(lowest - noise <= low[i] <= highest + noise for i in differing), \
        [(int(i), float(low[i])) for i in differing]
    if len(set(np.round(low / noise))) == 64:  # no coefficient at noise level of another: equal
        assert len(differing) <= 1
