"""Benchmark the ingest: throughput and flat memory, and our JATS reader against pubmed_parser.

1. End to end: demo corpora of N and 10·N articles, each ingested from scratch in a fresh
   process; prints graphics/s and peak RSS, and the RSS ratio (target: flat, ≤ 1.25).
2. Parsing only: our `parse_article` and `pubmed_parser.parse_pubmed_caption` (the parser the
   reference PMC-15M pipeline used) over the same XML files (the real fixtures in
   ../shared/fixtures/pmc plus the demo corpus), as figures/s and a ratio (target ≥ 1.0).
   With --instructions, also the CPU instructions each parser executes per pass, counted by
   valgrind (callgrind): the same on every run, where times on a shared machine move by ±10%.
3. Where the two disagree, file by file on the real fixtures, and in total on the demo corpus.
4. At PMC's image sizes (`demo.image_side: pmc`, long side 300-4,000 px around 1,200): the ingest
   end to end with `image.reduced_decode` on and off (graphics per wall and per CPU second, fresh
   process each); where its time goes (fetch / parse / decode / resize / encode / hash / write,
   from a profile of one in-thread run); and the ratio to a ceiling measured in the same run: the
   same images decoded at the target size and encoded, nothing else (targets: >= 0.8 of the
   ceiling, >= 2x the full-decode path). Per CPU second, and for the whole command: graphics per
   wall second against the ceiling run on the same 2 threads (target >= 0.8), alternated three
   times with it and with the reference (the thread map before issue 30: a batch of 16 articles a
   task, its images written by the thread that decoded them), the cores busy and the peak RSS of
   each (target <= x1.2).

    python bench/ingest.py [--articles 60] [--repeat 15] [--instructions] [--pmc-articles 40]
                           [--only pmc]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import math
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS
from PIL import Image

from biomedclip.demo.corpus import generate_corpus
from biomedclip.demo.params import DemoParams
from biomedclip.ingest.jats import JatsError, normalise_space, parse_article
from biomedclip.ingest.params import DecontaminateParams, ImageParams, IngestOutputs, IngestParams
from biomedclip.ingest.run import run_ingest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pmc"
CHILD = PEAK_RSS + """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from biomedclip.ingest.params import DecontaminateParams, ImageParams, IngestOutputs, IngestParams
from pathlib import Path
from biomedclip.ingest.run import process_batch, run_ingest
from biomedclip.streams import in_order_window
source, out = Path(sys.argv[1]), Path(sys.argv[2])
image = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet",
                        images=out / "images", panels=out / "panels.parquet",
                        panel_examples=out / "panel-examples", report=out / "ingest.json",
                        state=out / "state.sqlite")
params = IngestParams(source=str(source), outputs=outputs, image=ImageParams(**image),
                      decontaminate=DecontaminateParams(enabled=False))  # no benchmark here


def batch_tasks(fn, batches):
    # The reference, the thread map before issue 30 (and the Prefect flow's tasks today): a batch
    # of articles a task, each image written (fsync) by the thread that decoded it.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest") as pool:
        submit = lambda batch: pool.submit(process_batch, params, batch)  # noqa: E731
        yield from in_order_window(submit, batches, 4)


mapper = batch_tasks if len(sys.argv) > 4 and sys.argv[4] == "batches" else None
start, cpu = time.perf_counter(), time.process_time()  # after the imports: the ingest's own cost
report = run_ingest(params, batch_map=mapper)
print(json.dumps({"seconds": time.perf_counter() - start, "graphics": report["graphics"],
                  "pairs": report["pairs"]["total"], "cpu_seconds": time.process_time() - cpu,
                  "rss_mib": peak_rss_mib()}))
"""


def ingest_in_child(corpus: Path, out: Path, tasks: str = "articles", **image: object) -> dict:
    """One ingest from scratch in a fresh process: seconds, CPU seconds, graphics, pairs, peak RSS.
    `tasks`: "articles" (the ingest's own thread map) or "batches" (a batch of articles a task)."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-c", CHILD, str(corpus), str(out), json.dumps(image), tasks]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"the ingest of {corpus} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def end_to_end(articles: int, tmp: Path) -> list[dict]:
    rows = []
    for n in (articles, 10 * articles):
        corpus = tmp / f"raw-{n}"
        generate_corpus(DemoParams(out=corpus, articles=n), workers=2)
        rows.append({"articles": n, **ingest_in_child(corpus, tmp / f"out-{n}")})
    return rows


# Where the ingest's time goes: each phase is the cumulative profile time of the functions that do
# it, as (file name ending, function name[, the caller's function name]).
PHASES = {
    "fetch": [("storage.py", "get")],
    "parse": [("jats.py", "parse_article")],
    "decode": [("images.py", "decode_image")],
    "resize": [("Image.py", "resize", "encode_image")],
    "encode": [("Image.py", "save", "encode_image")],
    "hash": [("images.py", "phash", "encode_image"), ("images.py", "sha256")],
    "write": [("images.py", "put"), ("state.py", "record"), ("assemble.py", "assemble")],
}


def phase_shares(params: IngestParams) -> tuple[float, dict[str, float]]:
    """One ingest in this thread under cProfile: its total seconds and each phase's seconds."""
    profile = cProfile.Profile()
    serial = lambda fn, batches: (fn(batch) for batch in batches)  # noqa: E731 (in this thread)
    start = time.perf_counter()
    profile.runcall(run_ingest, params, batch_map=serial)
    total = time.perf_counter() - start
    stats = pstats.Stats(profile).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    seconds = dict.fromkeys(PHASES, 0.0)
    for phase, functions in PHASES.items():
        for (file, _, name), (_, _, _, cumulative, callers) in stats.items():
            for ending, function, *caller in functions:
                if file.endswith(ending) and name == function:
                    seconds[phase] += sum(ct for (_, _, by), (_, _, _, ct) in callers.items()
                                          if by == caller[0]) if caller else cumulative
    return total, seconds


def to_target(path: Path, image: ImageParams) -> None:
    """The image path at best: decode at the target size (JPEG DCT scaling, else an integer
    reduce), resize, encode; nothing else."""
    side = image.max_side
    with Image.open(path) as img:
        width, height = img.size
        scale = side / max(width, height)
        if img.format == "JPEG" and scale <= 0.5:
            img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))
        rgb = img.convert("RGB")
    if (factor := max(rgb.size) // side) > 1:
        rgb = rgb.reduce(factor)
    if scale < 1:
        rgb = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                         Image.Resampling.LANCZOS)
    rgb.save(io.BytesIO(), format="JPEG", quality=image.jpeg_quality)


def ceiling(paths: list[Path], image: ImageParams) -> tuple[int, float]:
    """Images and CPU seconds of `to_target` on each: what the image path could cost at best."""
    start = time.process_time()
    for path in paths:
        to_target(path, image)
    return len(paths), time.process_time() - start


def ceiling_wall(paths: list[Path], image: ImageParams, workers: int) -> float:
    """Wall seconds of `to_target` on each image on `workers` threads (Pillow releases the GIL
    while it decodes, resizes and encodes): what a whole command could take at best."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda path: to_target(path, image), paths))
    return time.perf_counter() - start


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def whole_command(corpus: Path, paths: list[Path], image: ImageParams, tmp: Path) -> None:
    """Graphics per wall second of the whole ingest (after its imports: listing, extraction, state,
    assembly, report) against `ceiling_wall` on the same 2 threads, alternated three times (the
    best of each: a busy spell falls on all); the reference, a batch of articles a task."""
    print(f"\nthe whole command against the ceiling on 2 threads ({load()}):")
    best: dict[str, dict] = {}
    walls = []
    for _ in range(3):
        walls.append(ceiling_wall(paths, image, 2))
        for tasks in ("articles", "batches"):
            row = ingest_in_child(corpus, tmp / f"out-pmc-whole-{tasks}", tasks)
            if tasks not in best or row["seconds"] < best[tasks]["seconds"]:
                best[tasks] = row
    rate = len(paths) / min(walls)
    print(f"{'tasks on 2 threads':<30} {'graphics':>8} {'seconds':>8} {'graphics/s':>10} "
          f"{'cores busy':>10} {'peak RSS MiB':>12} {'of the ceiling':>14}")
    print(f"{'ceiling (kept images only)':<30} {len(paths):>8} {min(walls):>8.2f} {rate:>10.1f} "
          f"{'':>10} {'':>12} {'1.00':>14}")
    labels = {"articles": "an article a task (now)", "batches": "a batch a task (before)"}
    # "before": also its images written by the extracting threads (see CHILD).
    for tasks, r in best.items():
        speed = r["graphics"] / r["seconds"]
        busy = r["cpu_seconds"] / r["seconds"]
        print(f"{labels[tasks]:<30} {r['graphics']:>8} {r['seconds']:>8.2f} {speed:>10.1f} "
              f"{busy:>10.2f} {r['rss_mib']:>12.0f} {speed / rate:>14.2f}")
    now, before = best["articles"], best["batches"]
    ratio, reference = (r["graphics"] / r["seconds"] / rate for r in (now, before))
    print(f"whole command, graphics/s against the ceiling: {ratio:.2f} (target >= 0.8; a batch a "
          f"task: {reference:.2f}); peak RSS x{now['rss_mib'] / before['rss_mib']:.2f} of a batch a "
          f"task (target <= 1.2); {load()}")


def pmc_profile(articles: int, tmp: Path) -> None:
    corpus = tmp / "raw-pmc"
    generate_corpus(DemoParams(out=corpus, articles=articles, image_side="pmc"), workers=2)
    print(f"\n== at PMC's image sizes: {articles} articles, demo.image_side pmc ==")
    runs = {"full decode (before)": {"reduced_decode": False}, "reduced decode": {"reduced_decode": True}}
    best: dict[str, dict] = {}
    for attempt in range(2):  # alternated, the faster of two each: a busy spell falls on both
        for label, image in runs.items():
            row = ingest_in_child(corpus, tmp / f"out-pmc-{attempt}-{image['reduced_decode']}", **image)
            if label not in best or row["cpu_seconds"] < best[label]["cpu_seconds"]:
                best[label] = row
    print(f"{'image path':<22} {'graphics':>8} {'pairs':>6} {'seconds':>8} {'graphics/s':>10} "
          f"{'per CPU s':>9} {'peak RSS MiB':>12}")
    for label, r in best.items():
        print(f"{label:<22} {r['graphics']:>8} {r['pairs']:>6} {r['seconds']:>8.1f} "
              f"{r['graphics'] / r['seconds']:>10.1f} {r['graphics'] / r['cpu_seconds']:>9.1f} {r['rss_mib']:>12.0f}")
    before, after = best["full decode (before)"], best["reduced decode"]
    print(f"speed-up, graphics per CPU second: {before['cpu_seconds'] / after['cpu_seconds']:.2f}x (target >= 2)")

    out = tmp / "out-pmc-profile"
    params = IngestParams(source=str(corpus), outputs=IngestOutputs(
        pairs=out / "pairs.parquet", rejects=out / "rejects.parquet", images=out / "images",
        panels=out / "panels.parquet", panel_examples=out / "panel-examples",
        report=out / "ingest.json", state=out / "state.sqlite"), decontaminate=DecontaminateParams(enabled=False))
    total, seconds = phase_shares(params)
    seconds["other (dedup, threads, bookkeeping)"] = total - sum(seconds.values())
    print(f"\nwhere the time goes (one in-thread run, cProfile, {total:.1f} s):")
    for phase, spent in seconds.items():
        print(f"  {phase:<38} {spent:>6.2f} s {spent / total:>6.1%}")

    sources = pq.read_table(params.outputs.pairs, columns=["source_uri"]).column("source_uri").to_pylist()
    paths = [p for p in (corpus / Path(*uri.split("/")[-2:]) for uri in sources) if p.is_file()]
    n, cpu = ceiling(paths, params.image)
    print(f"\nceiling: {n} kept images decoded at the target size and encoded, nothing else: "
          f"{n / cpu:.1f} images per CPU second")
    print(f"the ingest (reduced decode) against the ceiling, per CPU second: "
          f"{after['graphics'] / after['cpu_seconds'] / (n / cpu):.2f} (target >= 0.8); "
          f"the full decode: {before['graphics'] / before['cpu_seconds'] / (n / cpu):.2f}")
    whole_command(corpus, paths, params.image, tmp)


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
            found["several graphics, pubmed_parser keeps one"] = (
                found.get("several graphics, pubmed_parser keeps one", 0) + 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=60, help="smaller corpus size (N)")
    parser.add_argument("--repeat", type=int, default=15, help="parse passes (the fastest counts)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count each parser's CPU instructions with valgrind (about 4 min)")
    parser.add_argument("--pmc-articles", type=int, default=40,
                        help="articles of the corpus at PMC's image sizes (section 4; 0 skips it)")
    parser.add_argument("--only", choices=("pmc",), help="run only this section (pmc: section 4)")
    args = parser.parse_args()
    if args.instructions and not shutil.which("valgrind"):
        parser.error("--instructions needs valgrind on PATH (apt-get install valgrind)")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.only != "pmc":
            main_sections(args, tmp)
        if args.pmc_articles > 0:
            pmc_profile(args.pmc_articles, tmp)


def main_sections(args: argparse.Namespace, tmp: Path) -> None:
    """Sections 1 to 3: end to end at two sizes, parsing, disagreements."""
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
