"""The quality gate (`biomedclip validate`) on a real ingest manifest and on variants of it built
to break one expectation each: the gate passes what ingest produces, stops on what it must not
ship, names the failing check and rows, and writes a deterministic result plus Data Docs."""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomedclip.ingest.params import IngestOutputs
from biomedclip.validate.checks import CHECKS, PANEL_CHECKS
from biomedclip.validate.gate import ValidationFailed, ValidationInputError, validate_manifest
from biomedclip.validate.params import ValidateOutputs, ValidateParams

pytestmark = pytest.mark.unit

ASSETS = ("pairs", "articles", "ingest_report")  # one GX suite/checkpoint each


def gate_params(out: Path, **changes) -> ValidateParams:
    # The noisy demo manifest holds ~90 articles (~280 pairs). At that size a hash split is
    # coarse (e.g. 0 val articles against a 5% target, one article = 1.1%), so the default
    # tolerance of 0.03 would fail the clean manifest; 0.1 still catches a manifest whose
    # val/test articles were all relabelled train (train = 1.0 > 0.85 + 0.1).
    base = ValidateParams(split_tolerance=0.1,
                          outputs=ValidateOutputs(result=out / "validate.json",
                                                  data_docs=out / "docs"))
    return base.model_copy(update=changes) if changes else base


def with_inputs(ingest, folder: Path):
    """The ingest params with the manifest and report read from `folder`."""
    return ingest.model_copy(update={"outputs": IngestOutputs(
        pairs=folder / "pairs.parquet", report=folder / "ingest.json")})


def failed_checks(result: dict) -> dict[str, set[str]]:
    """severity → names of the checks that failed."""
    failed = defaultdict(set)
    for row in result["checks"]:
        if not row["success"]:
            failed[row["severity"]].add(row["check"])
    return failed


@pytest.fixture(scope="module")
def clean(ingested_noisy, tmp_path_factory):
    """A copy of the real ingest output, validated once: (ingest params, validate params, result)."""
    ingest, _, _ = ingested_noisy
    folder = tmp_path_factory.mktemp("clean")
    shutil.copyfile(ingest.outputs.pairs, folder / "pairs.parquet")
    shutil.copyfile(ingest.outputs.report, folder / "ingest.json")
    ingest = with_inputs(ingest, folder)
    params = gate_params(folder / "gate")
    return ingest, params, validate_manifest(ingest, params)


@pytest.fixture
def variant(clean, tmp_path):
    """Write an edited copy of the clean manifest and report into tmp_path; returns its ingest
    params. `edit(rows, report)` edits the row dicts and the report dict in place; `drop` names a
    column to leave out of the manifest (the rest keep the real schema)."""
    ingest, _, _ = clean

    def build(edit, drop: str | None = None):
        table = pq.read_table(ingest.outputs.pairs)
        rows, schema = table.to_pylist(), table.schema
        report = json.loads(ingest.outputs.report.read_text())
        edit(rows, report)
        if drop:
            schema = schema.remove(schema.get_field_index(drop))
            rows = [{name: row[name] for name in schema.names} for row in rows]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "pairs.parquet")
        (tmp_path / "ingest.json").write_text(json.dumps(report))
        return with_inputs(ingest, tmp_path)

    return build


# --- the clean manifest -----------------------------------------------------------------------

def test_clean_manifest_passes_with_every_check_reported(clean):
    ingest, params, result = clean
    rows = pq.read_metadata(ingest.outputs.pairs).num_rows

    assert result["success"] is True
    assert (result["rows"], result["critical_failures"], result["warnings"]) == (rows, 0, 0)
    written = json.loads(params.outputs.result.read_text())
    assert written == result
    assert {row["check"] for row in written["checks"]} == set(CHECKS) - PANEL_CHECKS  # panels are off
    assert [row for row in written["checks"] if not row["success"]] == []
    assert all(row["severity"] == "critical" for row in written["checks"]
               if row["check"] not in params.warn_only)
    assert {row["severity"] for row in written["checks"] if row["check"] in params.warn_only} == {"warning"}
    (min_pairs,) = [row for row in written["checks"] if row["check"] == "min_pairs"]
    assert min_pairs["observed"] == rows


def test_clean_manifest_data_docs_render_every_suite(clean):
    _, params, _ = clean
    docs = params.outputs.data_docs
    index = (docs / "index.html").read_text()
    pages = set(re.findall(r"validations/[^'\"\\]+\.html", index))
    for asset in ASSETS:
        assert f"{asset}-suite" in index
        (page,) = [p for p in pages if p.startswith(f"validations/{asset}-suite/")]
        assert (docs / page).is_file(), page
    pairs_page = next((docs / p).read_text() for p in pages if "/pairs-suite/" in p)
    # The rendered expectations of the pairs suite: not-null, unique, between, in-set.
    for text in ("must never be null", "values must be unique", "caption_words", "license", "split"):
        assert text in pairs_page, text
    assert "Failed" not in re.findall(r"_validation_success_text': '(\w+)'", index)


def test_result_file_is_byte_identical_across_runs(clean, tmp_path):
    ingest, params, _ = clean
    again = params.model_copy(update={"outputs": ValidateOutputs(
        result=tmp_path / "validate.json", data_docs=tmp_path / "docs")})
    validate_manifest(ingest, again)
    assert again.outputs.result.read_bytes() == params.outputs.result.read_bytes()


# --- one violation per critical expectation ----------------------------------------------------

# Each edit breaks one expectation and returns the keys (pair_id / pmcid) of the rows it broke,
# which the failure message must show as samples.

def _null_captions(rows, report, ingest):
    for row in rows[3:6]:
        row["caption"] = None
    return [row["pair_id"] for row in rows[3:6]]


def _duplicate_pair_id(rows, report, ingest):
    rows[7]["pair_id"] = rows[2]["pair_id"]
    return [rows[2]["pair_id"]]


def _leaky_article(rows, report, ingest):
    """One figure of a train article (with 2+ figures) relabelled test."""
    figures = defaultdict(list)
    for row in rows:
        figures[row["pmcid"]].append(row)
    pmcid, same = next((p, f) for p, f in sorted(figures.items())
                       if len(f) >= 2 and {r["split"] for r in f} == {"train"})
    same[-1]["split"] = "test"
    return [pmcid]


def _too_narrow(rows, report, ingest):
    rows[10]["width"] = ingest.image.min_side - 1
    return [rows[10]["pair_id"]]


def _all_train(rows, report, ingest):
    assert {row["split"] for row in rows} != {"train"}
    for row in rows:
        row["split"] = "train"
    return []


def _unchanged(rows, report, ingest):
    return []


def _non_commercial(rows, report, ingest):
    rows[4]["license"] = "CC BY-NC"
    return [rows[4]["pair_id"]]


def _high_reject_rate(rows, report, ingest):
    report["reject_rate"] = 0.6
    return []


VIOLATIONS = {
    # id: (edit, column dropped, the critical checks expected to fail)
    "null-captions": (_null_captions, None, {"not_null"}),
    "duplicate-pair-id": (_duplicate_pair_id, None, {"unique_pair_id"}),
    "split-leakage": (_leaky_article, None, {"split_leakage"}),
    "width-below-min-side": (_too_narrow, None, {"image_size"}),
    "wrong-split-ratios": (_all_train, None, {"split_fractions"}),
    # A missing column also fails its own type and not-null checks.
    "missing-required-column": (_unchanged, "source_uri",
                                {"required_columns", "column_types", "not_null"}),
    "licence-not-allowed": (_non_commercial, None, {"license_allowed"}),
    "reject-rate-above-ceiling": (_high_reject_rate, None, {"reject_rate"}),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_critical_violation_stops_the_gate(name, clean, variant, tmp_path):
    edit, drop, expected = VIOLATIONS[name]
    shown: list[str] = []
    ingest = variant(lambda rows, report: shown.extend(edit(rows, report, clean[0])), drop)
    if drop:
        shown.append(drop)  # the message names the missing column
    params = gate_params(tmp_path / "gate")
    with pytest.raises(ValidationFailed) as caught:
        validate_manifest(ingest, params)

    result, message = caught.value.result, str(caught.value)
    assert result["success"] is False
    assert failed_checks(result)["critical"] == expected
    assert result["critical_failures"] == sum(
        1 for row in result["checks"] if not row["success"] and row["severity"] == "critical")
    # The result and the Data Docs are written before the stage stops.
    assert json.loads(params.outputs.result.read_text()) == result
    assert (params.outputs.data_docs / "index.html").is_file()
    for check in expected:
        assert f"  {check}: " in message, (check, message)
    for key in shown:
        assert key in message, (key, message)


def test_truncated_captions_warn_by_default_and_fail_when_critical(clean, variant, tmp_path):
    """A parser that cuts every caption to the minimum length passes the per-row bound but not
    the median: by default that is reported as a warning; made critical, it stops the gate."""
    min_words = clean[0].caption.min_words

    def truncate(rows, report):
        for row in rows:
            row["caption"] = " ".join(row["caption"].split()[:min_words])

    ingest = variant(truncate)

    params = gate_params(tmp_path / "warn")
    assert "caption_words_median" in params.warn_only
    result = validate_manifest(ingest, params)
    assert result["success"] is True
    assert result["warnings"] >= 1
    (row,) = [r for r in result["checks"] if r["check"] == "caption_words_median"]
    assert (row["severity"], row["success"], row["observed"]) == ("warning", False, min_words)
    assert failed_checks(result) == {"warning": {"caption_words_median"}}  # per-row bound holds
    assert json.loads(params.outputs.result.read_text())["warnings"] == result["warnings"]

    strict = gate_params(tmp_path / "strict", warn_only=())
    with pytest.raises(ValidationFailed) as caught:
        validate_manifest(ingest, strict)
    assert failed_checks(caught.value.result)["critical"] == {"caption_words_median"}
    assert "  caption_words_median: " in str(caught.value)


# --- unreadable inputs -------------------------------------------------------------------------

def test_non_parquet_manifest_is_an_input_error(clean, tmp_path):
    ingest, _, _ = clean
    bad = tmp_path / "pairs.parquet"
    bad.write_text("pair_id,caption\nabc,not parquet at all\n")
    shutil.copyfile(ingest.outputs.report, tmp_path / "ingest.json")
    with pytest.raises(ValidationInputError) as caught:
        validate_manifest(with_inputs(ingest, tmp_path), gate_params(tmp_path / "gate"))
    assert str(bad) in str(caught.value)


def test_report_without_reject_rate_is_an_input_error(clean, tmp_path):
    ingest, _, _ = clean
    shutil.copyfile(ingest.outputs.pairs, tmp_path / "pairs.parquet")
    report = json.loads(ingest.outputs.report.read_text())
    del report["reject_rate"]
    (tmp_path / "ingest.json").write_text(json.dumps(report))
    with pytest.raises(ValidationInputError) as caught:
        validate_manifest(with_inputs(ingest, tmp_path), gate_params(tmp_path / "gate"))
    assert str(tmp_path / "ingest.json") in str(caught.value)
    assert "reject_rate" in str(caught.value)
