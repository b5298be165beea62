"""`build_card`: the ingest's outputs (and the gate's result) → a folder a person opens.

One streamed pass over each Parquet file for the numbers (`biomedclip.card.stats`), token counts
on a sample of the captions (`tokens`), optionally a zero-shot estimate of the figure types
(`figure_types`), then the charts (`plots`) and the page (`render`) written into `out` as one
atomic folder: `index.html`, its PNGs, and `summary.json` (the numbers the page shows).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_directory
from biomedclip.card import plots, render
from biomedclip.card.figure_types import FigureTypes, estimate_figure_types, group_of
from biomedclip.card.stats import BATCH_ROWS, CardInputError, pair_stats, panel_stats, reject_stats
from biomedclip.card.tokens import token_stats
from biomedclip.validate.checks import observed_text

log = logging.getLogger(__name__)

TOKEN_SAMPLE = 20_000


def _read_json(path: Path, what: str, writer: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {what} does not exist ({writer} writes it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardInputError(f"{path}: the {what} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CardInputError(f"{path}: the {what} is not a JSON object")
    return data


def _ingest_section(report: dict[str, Any]) -> dict[str, Any]:
    """What the card takes from metrics/ingest.json (the rest it counts from the tables)."""
    pairs, rejects = report.get("pairs") or {}, report.get("rejects") or {}
    return {"articles": report.get("articles"), "figures": report.get("figures"),
            "pairs_total": pairs.get("total"), "rejects_total": rejects.get("total"),
            "reject_rate": report.get("reject_rate"), "decontamination": report.get("decontamination"),
            "panels_kept_whole": (report.get("panels") or {}).get("kept_whole")}


def _validation_section(result: dict[str, Any], path: Path) -> dict[str, Any]:
    missing = [k for k in ("success", "checks") if k not in result]
    if missing or not isinstance(result["checks"], list):
        raise CardInputError(f"{path}: not a validation result (no {', '.join(missing) or 'list of checks'}; "
                             "the validate stage writes it)")
    failed = [{"check": row.get("check", "?"), "column": row.get("column"), "severity": row.get("severity", "?"),
               "observed": observed_text(row)} for row in result["checks"] if not row.get("success")]
    return {"success": bool(result["success"]), "rows": result.get("rows", 0), "checks": len(result["checks"]),
            "critical_failures": result.get("critical_failures", 0), "warnings": result.get("warnings", 0),
            "failed": failed}


def _mismatches(summary: dict[str, Any], pairs: Path, rejects: Path, report: Path) -> list[str]:
    """Where the ingest report and the tables disagree (they then come from different runs)."""
    ingest, notes = summary["ingest"], []
    for what, counted, path in (("pairs_total", summary["pairs"]["total"], pairs),
                                ("rejects_total", summary["rejects"]["total"], rejects)):
        said = ingest[what]
        if said is not None and said != counted:
            notes.append(f"{report} says {said:,} {what.removesuffix('_total')}, {path} holds {counted:,} rows: "
                         "they come from different ingest runs; the card shows the tables' numbers.")
    return notes


def build_card(*, pairs: Path, rejects: Path, panels: Path | None, ingest_report: Path,
               validate_result: Path | None, images: Path, out: Path, tokenizer: Path | None,
               context_length: int = 256, figure_types: FigureTypes | None = None, data_docs: Path | None = None,
               token_sample: int = TOKEN_SAMPLE, batch_rows: int = BATCH_ROWS,
               figure_types_note: str | None = None) -> dict[str, Any]:
    """Write the dataset card to `out` (`index.html`, PNG charts, `summary.json`), replacing the
    folder atomically; return the summary (JSON-able: every number the card shows)."""
    if context_length < 1:
        raise ValueError(f"context_length: {context_length}; at least 1 token")
    if token_sample < 1:
        raise ValueError(f"token_sample: {token_sample}; at least 1 caption")
    report = _read_json(ingest_report, "ingest report", "the ingest stage")
    validation = _read_json(validate_result, "validation result", "the validate stage") \
        if validate_result is not None else None
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: the image folder does not exist (the ingest stage writes it)")

    counted = pair_stats(pairs, token_sample=token_sample, batch_rows=batch_rows)
    tokens, token_counts = token_stats(tokenizer, counted.caption_sample, context_length=context_length,
                                       stride=counted.stride, rows=counted.rows)
    refused = reject_stats(rejects, batch_rows=batch_rows)
    panelled = panel_stats(panels, batch_rows=batch_rows) if panels is not None else None
    types = None
    if figure_types is not None:
        types = estimate_figure_types(figure_types, pairs, images, batch_rows=batch_rows)
        types["groups"] = {code: group_of(code) for code in types["classes"]}
        log.info("figure types of %d sampled images estimated by %s", types["sample"], types["model"])

    summary = counted.summary()
    summary["captions"]["tokens"] = tokens
    summary |= {
        "rejects": refused.summary(),
        "panels": panelled.summary() if panelled is not None else None,
        "ingest": _ingest_section(report),
        "validation": _validation_section(validation, validate_result) if validation is not None else None,
        "figure_types": types,
        "figure_types_note": figure_types_note,  # why there is no estimate, or whose it is
        "data_docs": None if data_docs is None else str(data_docs),
        "inputs": {"pairs": str(pairs), "rejects": str(rejects), "panels": None if panels is None else str(panels),
                   "ingest report": str(ingest_report),
                   "validation result": None if validate_result is None else str(validate_result),
                   "images": str(images), "tokenizer": None if tokenizer is None else str(tokenizer)},
    }
    summary["warnings"] = _mismatches(summary, pairs, rejects, ingest_report)

    docs_index = data_docs / "index.html" if data_docs is not None else None
    docs_link = None
    if docs_index is not None and docs_index.is_file():
        docs_link = Path(os.path.relpath(docs_index.absolute(), out.absolute())).as_posix()

    charts = _charts(summary, counted, token_counts, types)
    with atomic_directory(out) as staging:
        for name, png in charts.items():
            (staging / name).write_bytes(png)
        names = {name.removesuffix(".png").replace("-", "_"): name for name in charts}
        (staging / "index.html").write_text(render.page(summary, names, docs_link), encoding="utf-8")
        (staging / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, ensure_ascii=False)
                                              + "\n", encoding="utf-8")
    log.info("dataset card: %s (%d pairs, %d rejects)", out / "index.html", counted.rows, refused.rows)
    return summary


def _charts(summary: dict[str, Any], counted: Any, token_counts: Any, types: dict[str, Any] | None) -> dict[str, bytes]:
    """File name -> PNG bytes of every chart the summary has data for."""
    charts: dict[str, bytes] = {}
    tokens = summary["captions"]["tokens"]
    if counted.rows:
        charts["caption-words.png"] = plots.caption_words(counted.words)
        charts["image-sizes.png"] = plots.image_sizes(counted.long_side, counted.aspect)
        charts["formats.png"] = plots.formats_and_modes(summary["images"]["formats"], summary["images"]["modes"])
        charts["licenses.png"] = plots.bars(summary["licenses"], title="Pairs per licence", label="pairs")
        years = summary["articles"]["by_year"]
        charts["years.png"] = plots.columns(years, title="Articles per publication year", xlabel="year",
                                            ylabel="articles")
        by_figures = summary["figures_per_article"]["articles_by_figures"]
        charts["figures-per-article.png"] = plots.columns(by_figures, title="Pairs per article",
                                                          xlabel="pairs an article gives", ylabel="articles")
        panels = summary["panels"]["by_split"] if summary["panels"] and summary["panels"]["total"] else None
        charts["splits.png"] = plots.splits(summary["pairs"]["by_split"], panels)
    if tokens.get("available") and tokens["sample"]:
        charts["caption-tokens.png"] = plots.caption_tokens(token_counts, context_length=tokens["context_length"],
                                                            fit=tokens["fit_context"], sample=tokens["sample"],
                                                            stride=tokens["stride"])
    if summary["rejects"]["total"]:
        charts["rejects.png"] = plots.bars(summary["rejects"]["by_reason"], title="Rejects by reason",
                                           label="rejected inputs", colour=plots.ORANGE)
    if types is not None and types["sample"]:
        charts["figure-types.png"] = plots.figure_types(types["counts"], types["classes"], types["groups"],
                                                        model=types["model"], sample=types["sample"])
    return dict(sorted(charts.items()))
