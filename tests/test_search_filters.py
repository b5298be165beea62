"""Search filters, index families and recall against exact search: pure functions, no model.

1. Filters parse strictly: the issue's three examples, quoting, canonical round trips (hypothesis),
   any other text a FilterError naming the filter (never another exception), and the vectorised
   mask equal to a row-by-row reference over random facets.
2. The family follows autofaiss's rules: exact below the threshold, HNSW when it fits the memory
   budget, IVF-PQ (re-ranked when that fits) when it does not, an impossible budget named.
3. Recall: streamed exact search equals a one-shot brute force; HNSW and IVF-PQ tuned to a target
   reach it on held-out queries, measured against that brute force on clustered vectors.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomedclip.ingest.licenses import CODES
from biomedclip.ingest.split import SPLITS
from biomedclip.search import families
from biomedclip.search.facets import Facets, mask, value_at
from biomedclip.search.filters import KINDS, Filter, FilterError, parse_filter

pytestmark = pytest.mark.unit


def test_the_issues_examples_parse():
    assert parse_filter("license in (CC BY, CC0)") == Filter("license", "in", ("CC BY", "CC0"))
    assert parse_filter("year >= 2020") == Filter("year", ">=", (2020,))
    assert parse_filter("type = radiology") == Filter("type", "=", ("radiology",))
    assert (parse_filter("  LICENSE  not   in ('cc by-nc', \"CC BY\")")
            == Filter("license", "not in", ("CC BY-NC", "CC BY")))
    assert parse_filter('type = "generic illustration"') == Filter("type", "=", ("generic illustration",))
    assert parse_filter("split == test") == Filter("split", "=", ("test",))


@pytest.mark.parametrize(("text", "names"), [
    ("yaer >= 2020", "unknown field 'yaer'"),
    ("year >= twenty", "not a four-digit year"),
    ("license = CC BY-XX", "unknown licence 'CC BY-XX'"),
    ("license > CC0", "compares years only"),
    ("license in CC0", "takes a list in brackets"),
    ("license = (CC0)", "a list needs 'in'"),
    ("license in ()", "an empty list"),
    ("license in (CC0,, CC BY)", "an empty item"),
    ("split = holdout", "unknown split 'holdout'"),
    ("kind = table", "unknown kind 'table'"),
    ("year >=", "no value"),
    ("year", "not FIELD OP VALUE"),
    ("", "empty filter"),
    ("type = a'b", "quote it whole"),
])
def test_a_bad_filter_is_named(text, names):
    with pytest.raises(FilterError) as caught:
        parse_filter(text)
    assert names in str(caught.value)
    if text:
        assert repr(text) in str(caught.value) or text.split()[0] in str(caught.value)


values = {"license": st.sampled_from(CODES), "year": st.integers(1000, 9999), "split": st.sampled_from(SPLITS),
          "kind": st.sampled_from(KINDS),
          "type": st.text(string.ascii_lowercase + " -", min_size=1, max_size=12).filter(
              lambda s: s.strip() == s and "  " not in s and s not in ("in", "not"))}


@st.composite
def filters(draw):
    field = draw(st.sampled_from(sorted(values)))
    op = draw(st.sampled_from(["=", "!=", "in", "not in", *(["<", "<=", ">", ">="] if field == "year" else [])]))
    count = draw(st.integers(1, 4)) if op in ("in", "not in") else 1
    chosen = tuple(dict.fromkeys(draw(values[field]) for _ in range(count)))
    return Filter(field, op, chosen)


@given(filters())
def test_canonical_text_parses_back_to_the_same_filter(condition):
    assert parse_filter(str(condition)) == condition


@given(st.text(max_size=60))
@settings(max_examples=300)
def test_any_text_parses_or_is_a_filter_error(text):
    try:
        parse_filter(text)
    except FilterError as exc:
        assert str(exc)


CLASSES = (("DRXR", "x-ray radiography"), ("DRCT", "computed tomography"), ("DMLI", "light microscopy"))


def _facets(seed: int, n: int = 200) -> Facets:
    rng = np.random.default_rng(seed)
    def pick(count: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.1, 255, rng.integers(0, count, n)).astype(np.uint8)
    years = np.where(rng.random(n) < 0.1, 0, rng.integers(2015, 2027, n)).astype(np.int16)
    return Facets(pick(len(CODES)), years, pick(len(SPLITS)), pick(len(KINDS)), pick(len(CLASSES)), CLASSES)


@given(st.lists(filters().filter(lambda f: f.field != "type"), min_size=1, max_size=3), st.integers(0, 50))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_the_mask_is_the_row_by_row_reference(conditions, seed):
    facets = _facets(seed)
    expected = [all(c.accepts(value_at(facets, c.field, i)) for c in conditions) for i in range(len(facets))]
    assert mask(facets, conditions).tolist() == expected


def test_type_filters_match_the_branch_a_code_or_a_class_name():
    facets = _facets(3)
    radiology = mask(facets, [parse_filter("type = radiology")])
    assert radiology.tolist() == [t in (0, 1) for t in facets.type.tolist()]
    assert mask(facets, [parse_filter("type in (DRCT, light microscopy)")]).tolist() == \
        [t in (1, 2) for t in facets.type.tolist()]
    with pytest.raises(FilterError, match=r"unknown figure type 'histology'.*radiology"):
        mask(facets, [parse_filter("type = histology")])
    untyped = Facets(facets.license, facets.year, facets.split, facets.kind, facets.type, ())
    with pytest.raises(FilterError, match="no figure types"):
        mask(untyped, [parse_filter("type = radiology")])


# -- families --------------------------------------------------------------------------------------
def test_the_family_follows_size_and_memory_budget():
    assert families.plan_index(49_999, 512).family == "flat"
    hnsw = families.plan_index(1_000_000, 512, memory_budget_mb=4096)
    assert (hnsw.family, hnsw.factory) == ("hnsw", "HNSW32") and hnsw.memory_bytes <= 4096 * 2**20
    big = families.plan_index(5_000_000, 512, memory_budget_mb=4096)
    assert big.family == "ivfpq" and big.factory == "IVF8192_HNSW32,PQ64np,Refine(SQ8)", big
    assert big.memory_bytes <= 4096 * 2**20 and "HNSW would need" in big.reason
    tight = families.plan_index(24_000_000, 512, memory_budget_mb=4096)
    assert "Refine" not in tight.factory and tight.memory_bytes <= 4096 * 2**20
    assert families.plan_index(24_000_000, 512, memory_budget_mb=12_000).factory.endswith("Refine(SQ4)")
    with pytest.raises(ValueError, match=r"fits index\.memory_budget_mb = 100"):
        families.plan_index(24_000_000, 512, memory_budget_mb=100)
    assert families.plan_index(10, 512, family="hnsw").family == "hnsw"  # asked for, whatever the size


@given(st.integers(50_000, 10**9), st.sampled_from([128, 256, 512, 768]), st.integers(64, 10**6))
def test_an_automatic_choice_fits_its_budget(vectors, dim, budget_mb):
    try:
        plan = families.plan_index(vectors, dim, memory_budget_mb=budget_mb)
    except ValueError as exc:
        assert "memory_budget_mb" in str(exc)
        return
    assert plan.memory_bytes <= budget_mb * 2**20 and plan.family in ("hnsw", "ivfpq")
    if plan.family == "ivfpq":
        assert 1 <= plan.nlist <= max(1, vectors // 39)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 centres in a 16-d subspace plus noise: neighbours that mean something,
    as embeddings have (uniform random vectors have none)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 16)))[0].T  # (16, dim)
    centres = rng.normal(size=(50, 16))
    x = (centres[rng.integers(0, 50, n)] + 0.35 * rng.normal(size=(n, 16))) @ basis + 0.05 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_streamed_exact_search_is_brute_force():
    data, queries = clustered(3000, 32, 0), clustered(40, 32, 1)
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    streamed = families.exact_neighbours(queries, families.blocks_of(data, 700))
    scores = queries @ data.T
    assert np.allclose(np.take_along_axis(scores, streamed, 1), np.take_along_axis(scores, truth, 1), atol=1e-6)
    assert families.recall_at(streamed, truth) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("family", ["hnsw", "ivfpq"])
def test_approximate_families_reach_the_target_recall_against_brute_force(family):
    import faiss

    faiss.omp_set_num_threads(1)
    data, queries = clustered(20_000, 64, 2), clustered(200, 64, 3)
    plan = families.plan_index(len(data), 64, family=family, hnsw_m=16)
    index = families.new_index(plan)
    if plan.needs_training:
        index.train(data)
    index.add(data)
    truth = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]  # brute force, not FAISS
    effort, tuned, held_out, tried = families.tune(index, plan, queries, truth, target=0.95)
    assert tuned >= 0.95 and held_out >= 0.93, (effort, tried)
    assert [t["recall_at_10"] for t in tried][:-1] == sorted(t["recall_at_10"] for t in tried[:-1])
    assert all(t["recall_at_10"] < 0.95 for t in tried[:-1])  # the cheapest effort that reaches it
    _, found = families.search(index, queries[100:], 10, effort)
    assert families.recall_at(found, truth[100:]) == pytest.approx(held_out)
