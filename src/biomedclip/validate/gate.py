"""Run the gate: stage the manifest, validate it with a Great Expectations Checkpoint per data
asset, write the result JSON and the Data Docs, and stop on critical failures.

GX Core 1.x API throughout: an ephemeral context, a SQLite data source with table and query
assets, one ExpectationSuite, ValidationDefinition and Checkpoint per asset (each asset names
its failing rows by its own key: `pair_id` or `pmcid`), and an UpdateDataDocsAction. The Data Docs
then load their scripts, styles and fonts from copies inside their folder
(`biomedclip.offline_pages.localize_site`), so they open on a machine without a network.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes
from biomedclip.ingest.params import IngestParams
from biomedclip.offline_pages import localize_site
from biomedclip.validate.checks import observed_text
from biomedclip.validate.params import ValidateParams
from biomedclip.validate.staging import (
    ARTICLES_QUERY,
    PAIRS_TABLE,
    PANEL_FIGURES_QUERY,
    PANELS_TABLE,
    REPORT_TABLE,
    ValidationInputError,
    stage_manifest,
)
from biomedclip.validate.suite import ARTICLES, INGEST, PAIRS, PANEL_FIGURES, PANELS, Check, checks

log = logging.getLogger(__name__)

ROW_KEYS = {PAIRS: "pair_id", ARTICLES: "pmcid", INGEST: None, PANELS: "panel_id", PANEL_FIGURES: "pair_id"}
# What a failing row of each asset shows (its key and the columns a person needs to find it).
SAMPLE_QUERIES = {
    PAIRS: f"SELECT pair_id, pmcid, split, width, height, substr(caption, 1, 80) AS caption FROM {PAIRS_TABLE}",
    ARTICLES: f"SELECT * FROM ({ARTICLES_QUERY})",
    PANELS: f"SELECT panel_id, pair_id, letter, x0, y0, x1, y1, substr(subcaption, 1, 80) AS subcaption "
            f"FROM {PANELS_TABLE}",
    PANEL_FIGURES: f"SELECT * FROM ({PANEL_FIGURES_QUERY})",
}
SAMPLE_ROWS = 5
__all__ = ["ValidationFailed", "ValidationInputError", "observed_text", "summary_markdown",
           "validate_manifest"]


class ValidationFailed(RuntimeError):
    """Critical expectations failed; the message names each with sample rows."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result
        self.report: Any = None  # the stage's report of the failed run, shown all the same


def _context(docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in context.get_site_names():  # the default site would leave a folder in /tmp per run
        context.delete_data_docs_site(site)
    context.add_data_docs_site(site_name="local", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def _run_checkpoints(db_path: Path, found: list[Check], docs_dir: Path) -> dict[int, Any]:
    """Validate every check; returns GX's result per check (by position in `found`)."""
    import great_expectations as gx

    context = _context(docs_dir)
    source = context.data_sources.add_sqlite("manifest", connection_string=f"sqlite:///{db_path}")
    assets = {PAIRS: lambda: source.add_table_asset(PAIRS, table_name=PAIRS_TABLE),
              ARTICLES: lambda: source.add_query_asset(ARTICLES, query=ARTICLES_QUERY),
              INGEST: lambda: source.add_table_asset(INGEST, table_name=REPORT_TABLE),
              PANELS: lambda: source.add_table_asset(PANELS, table_name=PANELS_TABLE),
              PANEL_FIGURES: lambda: source.add_query_asset(PANEL_FIGURES, query=PANEL_FIGURES_QUERY)}
    results: dict[int, Any] = {}
    for name, make_asset in assets.items():
        if not any(check.asset == name for check in found):
            continue  # no panel checks: the panel tables are not staged
        asset = make_asset()
        suite = context.suites.add(gx.ExpectationSuite(name=f"{name}-suite"))
        positions = []
        for i, check in enumerate(found):
            if check.asset == name:
                suite.add_expectation(check.expectation)
                positions.append(i)
        definition = context.validation_definitions.add(gx.ValidationDefinition(
            name=f"{name}-validation", data=asset.add_batch_definition_whole_table("all"), suite=suite))
        result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_ROWS}
        if ROW_KEYS[name]:
            result_format["unexpected_index_column_names"] = [ROW_KEYS[name]]
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{name}-checkpoint", validation_definitions=[definition], result_format=result_format))
        run = checkpoint.run()
        (validation,) = run.run_results.values()
        by_id = {r.expectation_config.id: r for r in validation.results}
        for i in positions:
            results[i] = by_id[found[i].expectation.id]
    # The Data Docs once, of every result (a checkpoint's UpdateDataDocsAction would render the
    # whole site again after each of the five: 5 s of Jinja on 2 cores).
    context.build_data_docs()
    return results


def _number(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _samples(db: sqlite3.Connection, asset: str, gx_result: dict[str, Any],
             gx_result_column: str | None) -> list[dict[str, Any]]:
    key = ROW_KEYS[asset]
    keys = [row.get(key) for row in gx_result.get("partial_unexpected_index_list") or []
            if isinstance(row, dict)][:SAMPLE_ROWS]
    if not key:  # a one-row table: the offending values are the sample
        return [{gx_result_column: value} for value in (gx_result.get("partial_unexpected_list") or [])]
    if not keys:
        return []
    query = f"SELECT * FROM ({SAMPLE_QUERIES[asset]}) WHERE {key} IN ({', '.join('?' * len(keys))}) LIMIT {SAMPLE_ROWS}"
    try:
        cursor = db.execute(query, keys)
    except sqlite3.Error:  # the manifest lacks a column the sample shows; the check says which
        return [{key: k} for k in keys]
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def _row(check: Check, outcome: Any, db: sqlite3.Connection, present: set[str]) -> dict[str, Any]:
    config = outcome.expectation_config
    result = outcome.result or {}
    row: dict[str, Any] = {
        "check": check.name,
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "severity": "warning" if str(check.expectation.severity).lower().endswith("warning") else "critical",
        "success": bool(outcome.success),
    }
    if "observed_value" in result:
        observed = result["observed_value"]
        row["observed"] = sorted(observed) if isinstance(observed, list) else _number(observed)
    if "unexpected_count" in result:
        row["unexpected_count"] = result["unexpected_count"]
        row["unexpected_percent"] = _number(result.get("unexpected_percent") or 0.0)
    bounds = {k: _number(config.kwargs[k]) for k in ("min_value", "max_value")
              if config.kwargs.get(k) is not None}
    if bounds:
        row["expected"] = bounds
    if check.name == "required_columns" and isinstance(result.get("observed_value"), list):
        row["missing"] = sorted(set(config.kwargs["column_set"]) - set(result["observed_value"]))
    if row["column"] and check.asset == PAIRS and row["column"] not in present:
        row["error"] = f"column {row['column']} is missing from the manifest"
        row["success"] = False
    elif outcome.exception_info and outcome.exception_info.get("raised_exception"):
        message = str(outcome.exception_info.get("exception_message") or "").splitlines()
        row["error"] = message[0] if message else "the expectation raised"
        row["success"] = False
    if not row["success"] and "error" not in row:
        row["sample"] = _samples(db, check.asset, result, row["column"])
    return row


def _describe(row: dict[str, Any]) -> str:
    target = f"({row['column']})" if row["column"] else ""
    if "error" in row:
        what = row["error"]
    elif row.get("missing"):
        what = f"missing columns {row['missing']}"
    elif "unexpected_count" in row:
        what = f"{row['unexpected_count']} rows unexpected ({row['unexpected_percent']:.3g}%)"
    else:
        what = f"observed {row.get('observed')!r}"
    if "expected" in row:
        limits = [f"{name.removesuffix('_value')} {value}" for name, value in row["expected"].items()]
        what += f"; expected {' and '.join(limits)}"
    lines = [f"  {row['check']}: {row['expectation']}{target}: {what}"]
    lines += [f"      {json.dumps(sample, default=str, ensure_ascii=False)}" for sample in row.get("sample", [])]
    return "\n".join(lines)


def summary_markdown(result: dict[str, Any]) -> str:
    """The result as a markdown table (the Prefect artifact)."""
    verdict = "passed" if result["success"] else "FAILED"
    lines = [f"## Manifest validation: {verdict}", "",
             f"{result['rows']} pairs; {result['critical_failures']} critical failures, "
             f"{result['warnings']} warnings.", "",
             "| check | expectation | column | severity | result | observed / unexpected |",
             "|---|---|---|---|---|---|"]
    for row in result["checks"]:
        lines.append(f"| {row['check']} | {row['expectation']} | {row['column'] or ''} | "
                     f"{row['severity']} | {'pass' if row['success'] else '**fail**'} | {observed_text(row)} |")
    return "\n".join(lines) + "\n"


def validate_manifest(ingest: IngestParams, params: ValidateParams, *,
                      scratch: Path | None = None) -> dict[str, Any]:
    """Validate `ingest.outputs.pairs`; write the result JSON and Data Docs; return the result.

    Raises `ValidationFailed` (after writing both) when a critical check fails, and
    `ValidationInputError` when the manifest or ingest report cannot be read.
    """
    manifest, report = ingest.outputs.pairs, ingest.outputs.report
    found = checks(ingest, params)
    scratch_parent = scratch or params.outputs.result.parent
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".validate-", dir=scratch_parent) as tmp_name:
        db_path = Path(tmp_name) / "manifest.sqlite"
        rows = stage_manifest(manifest, report, db_path, batch_rows=params.batch_rows,
                              panels=ingest.outputs.panels if ingest.panels.enabled else None)
        log.info("staged %d manifest rows from %s; running %d expectations", rows, manifest, len(found))
        with atomic_directory(params.outputs.data_docs) as docs_dir:
            outcomes = _run_checkpoints(db_path, found, docs_dir)
            localize_site(docs_dir)  # their CDN scripts and styles, from copies inside the folder
        db = sqlite3.connect(db_path)
        try:
            present = {row[1] for row in db.execute(f"PRAGMA table_info({PAIRS_TABLE})")}
            table = [_row(check, outcomes[i], db, present) for i, check in enumerate(found)]
        finally:
            db.close()
    failed = Counter(row["severity"] for row in table if not row["success"])
    result = {"success": failed["critical"] == 0, "rows": rows,
              "critical_failures": failed["critical"], "warnings": failed["warning"],
              "manifest": str(manifest), "checks": table}
    atomic_write_bytes(params.outputs.result,
                       (json.dumps(result, indent=2, sort_keys=True, default=str) + "\n").encode())
    for row in table:
        if not row["success"] and row["severity"] == "warning":
            log.warning("validation warning:\n%s", _describe(row))
    if not result["success"]:
        details = "\n".join(_describe(row) for row in table if not row["success"] and row["severity"] == "critical")
        raise ValidationFailed(
            f"{manifest}: {failed['critical']} critical expectation(s) failed; the manifest does "
            f"not go on to shard or training. Data Docs: {params.outputs.data_docs / 'index.html'}\n"
            f"{details}", result)
    log.info("validation passed: %d checks, %d warnings", len(table), failed["warning"])
    return result
