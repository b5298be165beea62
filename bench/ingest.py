"""Benchmark the ingest: throughput and flat memory, and our JATS reader against pubmed_parser.

1. End to end: demo corpora of N and 10·N articles, each ingested from scratch in a fresh
   process; prints graphics/s and peak RSS, and the RSS ratio (target: flat, ≤ 1.25).
2. Parsing only: our `parse_article` and `pubmed_parser.parse_pubmed_caption` (the parser the
   reference PMC-15M pipeline used) over the same XML files (the real fixtures in
   ../shared/fixtures/pmc plus the demo corpus), as figures/s and a ratio (target ≥ 1.0).
   With --instructions, also the CPU instructions each parser executes per pass, counted by
   valgrind (callgrind): the same on every run, where times on a shared machine move by ±10%.
3. Where the two disagree, file by file on the real fixtures, and in total on the demo corpus.

    python bench/ingest.py [--articles 60] [--repeat 15] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from biomedclip.config import DemoParams
from biomedclip.demo import generate_corpus
from biomedclip.ingest.jats import JatsError, normalise_space, parse_article

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pmc"
CHILD = """
import json, resource, sys, time
from biomedclip.config import IngestOutputs, IngestParams
from pathlib import Path
from biomedclip.ingest.run import run_ingest
source, out = Path(sys.argv[1]), Path(sys.argv[2])
outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet",
                        images=out / "images", panels=out / "panels.parquet",
                        panel_examples=out / "panel-examples", report=out / "ingest.json",
                        state=out / "state.sqlite")
start = time.perf_counter()
report = run_ingest(IngestParams(source=str(source), outputs=outputs))
print(json.dumps({"seconds": time.perf_counter() - start, "graphics": report["graphics"],
                  "pairs": report["pairs"]["total"],
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def end_to_end(articles: int, tmp: Path) -> list[dict]:
    rows = []
    for n in (articles, 10 * articles):
        corpus = tmp / f"raw-{n}"
        generate_corpus(DemoParams(out=corpus, articles=n), workers=2)
        result = subprocess.run([sys.executable, "-c", CHILD, str(corpus), str(tmp / f"out-{n}")],
                                capture_output=True, text=True, check=True)
        rows.append({"articles": n, **json.loads(result.stdout.strip().splitlines()[-1])})
    return rows


def pubmed_parser_figures(path: Path) -> list[dict]:
    """pubmed_parser's figures; [] when it returns None or raises (both happen on real XML)."""
    import pubmed_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pubmed_parser.parse_pubmed_caption(str(path)) or []
        except Exception:
            return []


def pubmed_parser_failure(path: Path) -> str:
    import pubmed_parser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = pubmed_parser.parse_pubmed_caption(str(path))
        except Exception as exc:
            return f"pubmed_parser raised {type(exc).__name__}"
    return "pubmed_parser returned None" if result is None else ""


def ours(path: Path) -> list:
    try:
        return list(parse_article(path.read_bytes()).figures)
    except JatsError:
        return []


PARSE_PASSES = """
import sys, warnings
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import ingest as bench
parse = getattr(bench, sys.argv[2])
files = [Path(line) for line in Path(sys.argv[3]).read_text().splitlines()]
for _ in range(1 + int(sys.argv[4])):  # a warm-up pass (imports, caches), then the counted ones
    for f in files:
        parse(f)
"""


def count_instructions(parsers: list[str], files: list[Path], tmp: Path) -> list[int]:
    """Per parser: CPU instructions per pass over `files`, counted by callgrind.

    Each parser runs in its own process, once with 1 and once with 3 passes after a warm-up
    pass; half the difference is one pass, without the interpreter's start-up and imports.
    """
    listing = tmp / "files.txt"
    listing.write_text("\n".join(str(f) for f in files))
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts every run
    counts = []
    for parser in parsers:
        total = {}
        for passes in (1, 3):
            result = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                 "-c", PARSE_PASSES, str(Path(__file__).parent), parser, str(listing), str(passes)],
                capture_output=True, text=True, check=True, env=env)
            total[passes] = int(re.search(r"Collected : (\d+)", result.stderr).group(1))
        counts.append((total[3] - total[1]) // 2)
    return counts


def time_parsers(parsers: list, files: list[Path], repeat: int) -> list[tuple[float, int]]:
    """Per parser: seconds of its fastest of `repeat` passes over `files` (the least disturbed
    by other load on a shared machine), and the figures found. The parsers' passes alternate,
    so a slow spell of the machine falls on both rather than on whichever ran then."""
    figures = [sum(len(parse(f)) for f in files) for parse in parsers]  # warm-up, and the count
    passes: list[list[float]] = [[] for _ in parsers]
    for _ in range(repeat):
        for parse, seconds in zip(parsers, passes, strict=True):
            start = time.perf_counter()
            for f in files:
                parse(f)
            seconds.append(time.perf_counter() - start)
    return [(min(seconds), n) for seconds, n in zip(passes, figures, strict=True)]


def disagreements(path: Path) -> dict[str, int]:
    """Counts of each kind of disagreement between the two parsers on one article."""
    mine = {f.fig_id: f for f in ours(path)}
    theirs = {f.get("fig_id"): f for f in pubmed_parser_figures(path)}
    found = {"figures (ours)": len(mine), "figures (pubmed_parser)": len(theirs)}
    if failure := pubmed_parser_failure(path):
        found[failure] = 1
    for fig_id, fig in mine.items():
        other = theirs.get(fig_id)
        if other is None:
            kind = "figure without caption: only ours lists it" if not fig.caption else "figure pubmed_parser missed"
            found[kind] = found.get(kind, 0) + 1
        elif normalise_space(other.get("fig_caption") or "") != fig.caption:
            found["caption differs"] = found.get("caption differs", 0) + 1
        if len(fig.graphics) > 1:
            found["several graphics, pubmed_parser keeps one"] = found.get("several graphics, pubmed_parser keeps one", 0) + 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=60, help="smaller corpus size (N)")
    parser.add_argument("--repeat", type=int, default=15, help="parse passes (the fastest counts)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each parser's CPU instructions with valgrind (about 4 min)")
    args = parser.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        parser.error("--instructions needs valgrind on PATH (apt-get install valgrind)")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print("== end to end (fresh process per size) ==")
        rows = end_to_end(args.articles, tmp)
        print(f"{'articles':>8} {'graphics':>8} {'pairs':>6} {'seconds':>8} {'graphics/s':>10} {'peak RSS MiB':>12}")
        for r in rows:
            print(f"{r['articles']:>8} {r['graphics']:>8} {r['pairs']:>6} {r['seconds']:>8.1f} "
                  f"{r['graphics'] / r['seconds']:>10.1f} {r['rss_mib']:>12.0f}")
        print(f"peak RSS ratio {rows[1]['articles']}/{rows[0]['articles']} articles: "
              f"{rows[1]['rss_mib'] / rows[0]['rss_mib']:.2f} (target <= 1.25: flat)")

        demo = sorted((tmp / f"raw-{10 * args.articles}").glob("PMC*/PMC*.xml"))
        fixtures = sorted(p for p in FIXTURES.glob("*") if p.suffix in (".xml", ".nxml")) if FIXTURES.is_dir() else []
        files = fixtures + demo
        print(f"\n== parsing {len(files)} files ({len(fixtures)} real fixtures + {len(demo)} demo) ==")
        (ours_s, ours_n), (ref_s, ref_n) = time_parsers([ours, pubmed_parser_figures], files, args.repeat)
        print(f"{'parser':<15} {'figures':>8} {'seconds':>8} {'files/s':>8} {'figures/s':>10}")
        print(f"{'ours':<15} {ours_n:>8} {ours_s:>8.2f} {len(files) / ours_s:>8.0f} {ours_n / ours_s:>10.0f}")
        print(f"{'pubmed_parser':<15} {ref_n:>8} {ref_s:>8.2f} {len(files) / ref_s:>8.0f} {ref_n / ref_s:>10.0f}")
        print(f"speed ratio ours / pubmed_parser (files/s): {ref_s / ours_s:.2f} (target >= 1.00)")
        both = [f for f in files if not pubmed_parser_failure(f)]
        (ours_b, _), (ref_b, _) = time_parsers([ours, pubmed_parser_figures], both, args.repeat)
        print(f"same ratio on the {len(both)} files pubmed_parser reads without failing: "
              f"{ref_b / ours_b:.2f}")
        if args.instructions:
            ours_i, ref_i = count_instructions(["ours", "pubmed_parser_figures"], files, tmp)
            print(f"instructions per pass (callgrind): ours {ours_i / 1e6:,.0f} M, pubmed_parser "
                  f"{ref_i / 1e6:,.0f} M; ratio {ref_i / ours_i:.3f} (target >= 1.000)")

        print("\n== disagreements on the real fixtures ==")
        for path in fixtures:
            found = disagreements(path)
            notes = ", ".join(f"{k} {v}" for k, v in found.items() if not k.startswith("figures"))
            print(f"{path.name:<26} ours {found['figures (ours)']:>2} figures, pubmed_parser "
                  f"{found['figures (pubmed_parser)']:>2}{'; ' + notes if notes else ''}")
        totals: dict[str, int] = {}
        for path in demo:
            for kind, n in disagreements(path).items():
                totals[kind] = totals.get(kind, 0) + n
        print(f"\n== disagreements on {len(demo)} demo articles ==")
        for kind, n in sorted(totals.items(), key=lambda kv: -kv[1]):
            print(f"{n:>6}  {kind}")


if __name__ == "__main__":
    main()
