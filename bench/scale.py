"""Benchmark the data stages at scale: ingest, validate and shard at N and 10·N articles, and the
ingest's Prefect flow on a 2-worker Dask cluster against its thread runner.

1. Demo corpora of N and 10·N articles (default 2,000 and 20,000; the default image profile,
   the library's default params: panels off, no decontamination since no benchmark is made).
   Each stage runs in a fresh process at each size: seconds, seconds per article, CPU seconds
   (after the imports), peak RSS (VmHWM: bench/peak.py). Targets: peak RSS ×≤ 1.2 for 10× the
   articles; CPU per article within 10% (linear; CPU rather than wall time, which other load on a
   shared machine moves).
2. The same N-article corpus through `flows/ingest.py` (a real Prefect run, a temporary server in
   a temp PREFECT_HOME) with `ingest.task_runner: threads` and `dask` (a local cluster of
   `ingest.workers` = 2 single-threaded worker processes): the flow run's own duration (from
   Prefect's database, without the server's start), the speed-up, and whether both wrote the same
   manifest.
3. The extrapolation to PMC-15M (4.4M articles, ~24M graphics) in core-hours and the cores for a
   one-day ingest, from the CPU seconds per graphic measured here: at the demo's image sizes
   (the corpora above), and at PMC's (`demo.image_side: pmc`, a corpus of --pmc-articles).

    python bench/scale.py [--articles 2000] [--pmc-articles 100] [--skip-dask]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

from biomedclip.demo.corpus import generate_corpus
from biomedclip.demo.params import DemoParams
from biomedclip.ingest.params import IngestParams

REPO = Path(__file__).resolve().parents[1]
PMC_ARTICLES, PMC_GRAPHICS = 4_400_000, 24_000_000  # PMC-15M (DESIGN.md): articles, graphics
# One stage in a fresh process; prints its seconds, CPU seconds (after the imports) and peak RSS.
CHILD = PEAK_RSS + """
import json, sys, time
from pathlib import Path
from biomedclip.ingest.params import DecontaminateParams, IngestOutputs, IngestParams
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.validate.params import ValidateOutputs, ValidateParams
stage, corpus, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
ingest = IngestParams(source=corpus, decontaminate=DecontaminateParams(enabled=False), outputs=IngestOutputs(
    pairs=out / "pairs.parquet", rejects=out / "rejects.parquet", images=out / "images",
    panels=out / "panels.parquet", panel_examples=out / "panel-examples", report=out / "ingest.json",
    state=out / "state" / "state.sqlite"))
start, cpu = time.perf_counter(), time.process_time()
if stage == "ingest":
    from biomedclip.ingest.run import run_ingest
    report = run_ingest(ingest)
    result = {"graphics": report["graphics"], "pairs": report["pairs"]["total"]}
elif stage == "validate":
    from biomedclip.validate.gate import validate_manifest
    report = validate_manifest(ingest, ValidateParams(outputs=ValidateOutputs(
        result=out / "validate.json", data_docs=out / "validation")))
    result = {"success": report["success"]}
else:
    from biomedclip.shard.writer import write_shards
    report = write_shards(ingest, ShardParams(samples_per_shard=1000, outputs=ShardOutputs(
        shards=out / "shards", manifest=out / "shards" / "manifest.json", report=out / "shard.json")))
    result = {"samples": sum(report[s]["samples"] for s in ("train", "val", "test"))}
print(json.dumps({**result, "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                  "rss_mib": peak_rss_mib()}))
"""
STAGES = ("ingest", "validate", "shard")


def run_stage(stage: str, corpus: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, stage, str(corpus), str(out)],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{stage} of {corpus} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stages_at(articles: int, tmp: Path) -> dict:
    corpus = tmp / f"raw-{articles}"
    start = time.perf_counter()
    generate_corpus(DemoParams(out=corpus, articles=articles), workers=2)
    print(f"  corpus of {articles:,} articles written in {time.perf_counter() - start:.0f} s", flush=True)
    out = tmp / f"out-{articles}"
    rows = {}
    for stage in STAGES:
        rows[stage] = run_stage(stage, corpus, out)
        print(f"  {stage}: {rows[stage]['seconds']:.1f} s", flush=True)
    return rows


def flow_run(corpus: Path, tmp: Path, runner: str) -> tuple[float, Path]:
    """`flows/ingest.py` on `runner`; the flow run's duration in Prefect, and its manifest."""
    out, home = tmp / f"flow-{runner}", tmp / f"prefect-{runner}"
    params = IngestParams(source=str(corpus), task_runner=runner)
    ingest = json.loads(params.model_dump_json())
    ingest["decontaminate"]["enabled"] = False
    ingest["outputs"] = {name: str(out / Path(path).name) for name, path in ingest["outputs"].items()}
    out.mkdir(parents=True)
    (out / "params.yaml").write_text(yaml.safe_dump({"ingest": ingest}))
    done = subprocess.run([sys.executable, str(REPO / "flows" / "ingest.py"), "--params", str(out / "params.yaml")],
                          cwd=out, env={**os.environ, "PREFECT_HOME": str(home)}, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"the ingest flow on {runner} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    with sqlite3.connect(home / "prefect.db") as db:
        begun, ended = db.execute("SELECT start_time, end_time FROM flow_run WHERE name IS NOT NULL "
                                  "ORDER BY start_time DESC LIMIT 1").fetchone()
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(begun)).total_seconds()
    return seconds, out / Path(params.outputs.pairs).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000, help="smaller corpus (N); also 10·N")
    parser.add_argument("--pmc-articles", type=int, default=100,
                        help="articles of the corpus at PMC's image sizes, for the CPU per graphic")
    parser.add_argument("--skip-dask", action="store_true", help="skip the threads-against-Dask flow runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        sizes = (args.articles, 10 * args.articles)
        results = {}
        for n in sizes:
            print(f"== {n:,} articles ==", flush=True)
            results[n] = stages_at(n, tmp)
        small, large = (results[n] for n in sizes)
        print(f"\n{'stage':<9} {'articles':>8} {'seconds':>8} {'ms/article':>10} {'CPU s':>7} "
              f"{'peak RSS MiB':>12}  output")
        for n in sizes:
            for stage, r in results[n].items():
                what = {"ingest": f"{r.get('graphics', 0):,} graphics, {r.get('pairs', 0):,} pairs",
                        "validate": f"passed {r.get('success')}", "shard": f"{r.get('samples', 0):,} samples"}[stage]
                print(f"{stage:<9} {n:>8,} {r['seconds']:>8.1f} {1000 * r['seconds'] / n:>10.2f} "
                      f"{r['cpu_seconds']:>7.1f} {r['rss_mib']:>12.0f}  {what}")
        print(f"\n10x the articles ({sizes[0]:,} -> {sizes[1]:,}):")
        for stage in STAGES:
            wall, cpu = ((large[stage][k] / sizes[1]) / (small[stage][k] / sizes[0])
                         for k in ("seconds", "cpu_seconds"))
            rss = large[stage]["rss_mib"] / small[stage]["rss_mib"]
            print(f"  {stage:<9} CPU per article x{cpu:.2f} (linear: within 0.90-1.10; wall x{wall:.2f}), "
                  f"peak RSS x{rss:.2f} (target <= 1.2)")

        pmc_corpus = tmp / "raw-pmc"
        generate_corpus(DemoParams(out=pmc_corpus, articles=args.pmc_articles, image_side="pmc"), workers=2)
        # Validate and shard read the stored images (512 px at most) and the manifest: their cost
        # per graphic does not depend on the sizes as published; the ingest's does.
        after_ingest = sum(large[s]["cpu_seconds"] for s in STAGES[1:]) / large["ingest"]["graphics"]
        costs = {"demo image sizes (160-560 px)": large["ingest"],
                 f"PMC's image sizes (pmc profile, {args.pmc_articles} articles)":
                     run_stage("ingest", pmc_corpus, tmp / "out-pmc")}
        print(f"\nPMC-15M ({PMC_ARTICLES:,} articles, ~{PMC_GRAPHICS:,} graphics), from the CPU measured here "
              f"(validate + shard: {1000 * after_ingest:.2f} CPU ms per graphic):")
        print(f"  {'at':<44} {'CPU ms/graphic':>14} {'ingest core-h':>13} {'cores, 1 day':>12} "
              f"{'3 stages core-h':>15}")
        for label, ingest in costs.items():
            per_graphic = ingest["cpu_seconds"] / ingest["graphics"]
            data_stages = per_graphic + after_ingest
            hours = PMC_GRAPHICS * per_graphic / 3600
            print(f"  {label:<44} {1000 * per_graphic:>14.2f} {hours:>13,.0f} {hours / 24:>12.1f} "
                  f"{PMC_GRAPHICS * data_stages / 3600:>15,.0f}")

        if not args.skip_dask:
            corpus = tmp / f"raw-{sizes[0]}"
            print(f"\n== the ingest flow on {sizes[0]:,} articles: threads against a 2-worker Dask cluster ==",
                  flush=True)
            threads, threads_pairs = flow_run(corpus, tmp, "threads")
            dask, dask_pairs = flow_run(corpus, tmp, "dask")
            same = pq.read_table(threads_pairs).equals(pq.read_table(dask_pairs))
            print(f"  threads (2 workers): {threads:.1f} s; dask (2 worker processes): {dask:.1f} s; "
                  f"speed-up x{threads / dask:.2f}; the same manifest: {same}")


if __name__ == "__main__":
    main()
