"""The ingest report for people: one markdown table (Prefect artifact) and rows (terminal)."""

from __future__ import annotations

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
    return rows


def reject_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(reason, f"{n:,}") for reason, n in report["rejects"]["by_reason"].items() if n]


def markdown(report: dict[str, Any]) -> str:
    lines = ["| ingest | |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in summary_rows(report)]
    lines += ["", "| reject reason | count |", "|---|---:|"]
    lines += [f"| `{reason}` | {n} |" for reason, n in reject_rows(report)]
    return "\n".join(lines)
