"""The ingest report for people: one markdown table (Prefect artifact) and rows (terminal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    articles, pairs = report["articles"], report["pairs"]
    rows = [
        ("articles listed", f"{articles['listed']:,}"),
        ("… processed / unchanged", f"{articles['processed']:,} / {articles['unchanged']:,}"),
        ("figures / graphics", f"{report['figures']:,} / {report['graphics']:,}"),
        ("pairs", f"{pairs['total']:,} (train {pairs['train']:,}, val {pairs['val']:,}, "
                  f"test {pairs['test']:,})"),
        ("rejects", f"{report['rejects']['total']:,}"),
        ("reject rate (figures, images, dups)", f"{report['reject_rate']:.1%}"),
    ]
    clean = report.get("decontamination") or {}
    if clean.get("enabled"):
        rows += [(f"benchmark overlaps: {name}", f"{n:,} of {clean['benchmark_images'][name]:,} images "
                                                 f"(pHash within {clean['max_distance']} bits)")
                 for name, n in clean["overlaps"].items()]
    else:
        rows.append(("benchmark overlaps", "not checked (ingest.decontaminate.enabled is false)"))
    panels = report.get("panels") or {}
    if panels.get("enabled"):
        rows += [("panel pairs", f"{panels['panels']:,} from {panels['split']:,} figures split, of "
                                 f"{panels['captions_naming_panels']:,} whose captions name panels"),
                 *((f"kept whole: {code}", f"{n:,}") for code, n in panels["kept_whole"].items() if n)]
    return rows


def reject_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(reason, f"{n:,}") for reason, n in report["rejects"]["by_reason"].items() if n]


def markdown(report: dict[str, Any], examples: Path | None = None) -> str:
    """The report as markdown; `examples`: where the panel examples page is, if written."""
    lines = ["| ingest | |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(report)]
    lines += ["", "| reject reason | count |", "|---|---:|"]
    lines += [f"| `{reason}` | {n} |" for reason, n in reject_rows(report)]
    if examples is not None and (report.get("panels") or {}).get("enabled"):
        lines += ["", f"Example panel splits, with their crops and sub-captions: `{examples / 'index.html'}`"]
    return "\n".join(lines)
