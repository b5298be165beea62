"""Benchmark `biomedclip demo-data`: time to generate the default corpus, against its budget.

Generates the corpus that `params.yaml` describes into a temp folder, once with one worker
process and once with the default two, and prints articles/s, figures/s, MiB/s, the speed-up of
two workers over one (the reference run, same command, same machine), and the ratio of the
default run to the issue's one-minute budget.

    python bench/demo_data.py [--params params.yaml] [--articles N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from biomedclip.config import override
from biomedclip.demo.corpus import generate_corpus
from biomedclip.params import load_params

BUDGET_S = 60.0


def run(params, workers: int) -> tuple[float, object]:
    start = time.perf_counter()
    report = generate_corpus(params, workers=workers)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--articles", type=int, default=None)
    args = parser.parse_args()
    base = load_params(args.params).demo
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            params = override(base, out=Path(tmp) / f"raw-{workers}", articles=args.articles)
            seconds, report = run(params, workers)
            rows.append((workers, seconds, report))
    print(f"{'workers':>7} {'seconds':>8} {'articles/s':>11} {'figures/s':>10} {'MiB/s':>7}")
    for workers, seconds, report in rows:
        print(f"{workers:>7} {seconds:>8.1f} {report.articles / seconds:>11.1f} "
              f"{report.figures / seconds:>10.1f} {report.bytes / 2**20 / seconds:>7.1f}")
    (_, one, _), (_, two, report) = rows
    print(f"corpus: {report.articles} articles, {report.figures} figures, "
          f"{report.bytes / 2**20:.1f} MiB")
    print(f"speed-up of 2 workers over 1 (reference): {one / two:.2f}x")
    print(f"default run / budget ({BUDGET_S:.0f} s): {two / BUDGET_S:.2f} (target <= 1.00)")


if __name__ == "__main__":
    main()
