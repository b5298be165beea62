"""Benchmark figure search: the index at 1M and 5M vectors, the embedder's throughput, the demo corpus.

`index`: synthetic 512-d unit vectors shaped like embeddings (a mixture of 1,000 clusters in a
64-d latent space, projected to 512-d, plus isotropic noise, normalised; uniform random vectors
have no neighbours worth finding), generated block by block from seeds, never held whole. At each
size the index the `index` stage would build (`families.plan_index` with the default 4 GiB
budget: HNSW32 at 1M, IVF-PQ re-ranked by SQ8 at 5M) is built, tuned to recall@10 >= 0.95 on
half of 1,000 held-out queries and measured on the other half against exact search (streamed);
then single-query latency (k = 10) at the tuned effort, p50/p95 over the queries, FAISS on
`--threads` threads. The reference, in the same run: exact search (a flat float32 index) at 1M
(at 5M the flat matrix, 10 GB, is not built: its latency is the 1M one times 5, said so).

`embed`: the full-size published architecture (ViT-B/16 + PubMedBERT, random weights in the
published layout, built with the tests' helper `tests/published.py`) embedding real chest X-rays
and captions through `biomedclip.embed` on CPU: one process with `--threads` torch threads against
`--threads` worker processes of one thread each; rows/s. Needs ../shared/fixtures.

`demo`: a real ingest's pairs and panels embedded by `--model` and indexed (auto, and HNSW and
IVF-PQ forced): rows/s, build time, recall@10 against exact search.

    python bench/search.py index [--sizes 1000000 5000000] [--threads 2] [--out FILE]
    python bench/search.py embed [--rows 64] [--threads 2]
    python bench/search.py demo --ingest DIR --model DIR

(from the repository root; `embed` builds its checkpoint with `tests/published.py`, so the root must
be importable: PYTHONPATH=src:. as for `python -m bench.published`)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

REPO = Path(__file__).resolve().parents[1]

BLOCK = 50_000
DIM = 512
PMC_VECTORS = 24_000_000  # PMC-15M's 15.3M figures plus their panel pairs (~0.55 a figure on the demo)


class Synthetic:
    """Embedding-like unit vectors: cluster centres in a latent space, projected, plus noise."""

    def __init__(self, dim: int = DIM, latent: int = 64, clusters: int = 1000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.basis = np.linalg.qr(rng.normal(size=(dim, latent)))[0].T.astype(np.float32)  # (latent, dim)
        self.centres = rng.normal(size=(clusters, latent)).astype(np.float32)
        self.dim, self.seed = dim, seed

    def block(self, stream: int, number: int, rows: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, stream, number))
        latent = self.centres[rng.integers(0, len(self.centres), rows)] + 0.6 * rng.standard_normal(
            (rows, self.centres.shape[1]), dtype=np.float32)
        x = latent @ self.basis + 0.08 * rng.standard_normal((rows, self.dim), dtype=np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def blocks(self, n: int, stream: int = 0):
        for number in range(math.ceil(n / BLOCK)):
            yield self.block(stream, number, min(BLOCK, n - number * BLOCK))

    def sample(self, n: int, size: int) -> np.ndarray:
        """`size` of the first `n` vectors, spread over their blocks (the IVF training sample)."""
        blocks = math.ceil(n / BLOCK)
        per = math.ceil(size / blocks)
        return np.concatenate([self.block(0, b, min(BLOCK, n - b * BLOCK))[:per] for b in range(blocks)])[:size]


def _percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _latencies(index, queries: np.ndarray, effort) -> list[float]:
    from biomedclip.search import families

    families.search(index, queries[:5], 10, effort)  # warm
    times = []
    for i in range(len(queries)):
        start = time.perf_counter()
        families.search(index, queries[i:i + 1], 10, effort)
        times.append((time.perf_counter() - start) * 1000)
    return times


def index_at(n: int, args: argparse.Namespace) -> dict:
    import faiss

    from biomedclip.search import families

    faiss.omp_set_num_threads(args.threads)
    data = Synthetic()
    queries = data.block(stream=1, number=0, rows=args.queries)
    plan = families.plan_index(n, DIM, memory_budget_mb=args.budget_mb, nlist=args.nlist)
    print(f"{n:,} vectors: {plan.factory} ({plan.reason})", flush=True)
    start = time.perf_counter()
    index = families.new_index(plan)
    if plan.needs_training:
        index.train(data.sample(n, max(200_000, 39 * (plan.nlist or 1))))
    trained = time.perf_counter() - start
    for block in data.blocks(n):
        index.add(block)
    build = time.perf_counter() - start
    print(f"  built in {build:.0f} s (training {trained:.0f} s)", flush=True)
    start = time.perf_counter()
    truth = families.exact_neighbours(queries, data.blocks(n))
    exact_s = time.perf_counter() - start
    effort, tuned, recall, tried = families.tune(index, plan, queries, truth, 0.95)
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        faiss.write_index(index, str(Path(tmp) / "index.faiss"))
        index_bytes = (Path(tmp) / "index.faiss").stat().st_size
    faiss.omp_set_num_threads(args.query_threads)
    p50, p95 = _percentiles(_latencies(index, queries[len(queries) // 2:], effort))
    print(f"  recall@10 {recall:.3f} at {effort.as_dict()}; p50 {p50:.2f} ms, p95 {p95:.2f} ms", flush=True)
    del index
    result = {"vectors": n, "factory": plan.factory, "build_s": round(build, 1), "train_s": round(trained, 1),
              "index_bytes": index_bytes, "flat_bytes": n * DIM * 4,
              "memory_ratio": round(index_bytes / (n * DIM * 4), 3),
              "recall_at_10": round(recall, 4), "recall_at_10_tuning": tuned, "effort": effort.as_dict(),
              "tried": tried, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
              "exact_streamed_s_per_query": round(exact_s / len(queries), 4), "threads": args.threads,
              "query_threads": args.query_threads}
    if n <= args.flat_reference_max:
        flat = faiss.IndexFlatIP(DIM)
        for block in data.blocks(n):
            flat.add(block)
        f50, f95 = _percentiles(_latencies(flat, queries[len(queries) // 2:], families.SearchEffort()))
        result |= {"flat_p50_ms": round(f50, 2), "flat_p95_ms": round(f95, 2),
                   "speedup_p95": round(f95 / p95, 1)}
        print(f"  exact (flat float32) p50 {f50:.2f} ms, p95 {f95:.2f} ms: {f95 / p95:.1f}x at p95", flush=True)
        del flat
    return result


def extrapolate(results: list[dict], budget_mb: int) -> dict:
    """PMC-15M's ~24M vectors: the family the stage would choose, its memory, build time scaled."""
    from biomedclip.search import families

    plan = families.plan_index(PMC_VECTORS, DIM, memory_budget_mb=budget_mb)
    hnsw = families.plan_index(PMC_VECTORS, DIM, family="hnsw")
    same = [r for r in results if r["factory"].split(",")[0].split("_")[0].rstrip("0123456789")
            == plan.factory.split(",")[0].split("_")[0].rstrip("0123456789")]
    largest = max(same, key=lambda r: r["vectors"]) if same else None
    refined = families.plan_index(PMC_VECTORS, DIM, family="ivfpq", memory_budget_mb=100_000)
    return {"vectors": PMC_VECTORS, "flat_gib": round(PMC_VECTORS * DIM * 4 / 2**30, 1),
            "at_budget": {"factory": plan.factory, "gib": round(plan.memory_bytes / 2**30, 1)},
            "hnsw_gib": round(hnsw.memory_bytes / 2**30, 1),
            "ivfpq_sq8": {"factory": refined.factory, "gib": round(refined.memory_bytes / 2**30, 1),
                          "budget_mb_needed": math.ceil(refined.memory_bytes / 2**20)},
            "build_s_scaled_linearly_from": None if largest is None else {
                "vectors": largest["vectors"], "factory": largest["factory"],
                "build_s": round(largest["build_s"] * PMC_VECTORS / largest["vectors"])}}


EMBED_CHILD = PEAK_RSS + r"""
import json, sys, time
from pathlib import Path
from biomedclip.embed.run import embed
from biomedclip.embed.inputs import open_input
table, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
summary = embed(open_input(table), out, model=sys.argv[4], batch_size=16, chunk_rows=16, workers=workers,
                device="cpu")
seconds = time.perf_counter() - start
print(json.dumps({"rows": summary["rows"], "seconds": seconds, "rows_per_s": summary["rows"] / seconds,
                  "rss_mib": peak_rss_mib()}))
"""


def embed_bench(args: argparse.Namespace) -> dict:
    """Full-size model, CPU: 1 process x N threads against N processes x 1 thread."""
    from tests.published import hf_home, published_checkpoint

    fixtures = REPO.parent / "shared" / "fixtures"
    xrays = sorted((fixtures / "images" / "nih_cxr14").glob("*.png"))
    if not xrays:
        raise SystemExit(f"no chest X-rays under {fixtures}: this benchmark needs ../shared/fixtures")
    results = {}
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        root = Path(tmp)
        checkpoint, bert = published_checkpoint(root / "checkpoint", fixtures / "pubmedbert", size="full",
                                                tokenizer_files=True)
        home = hf_home(root / "hf", checkpoint, bert, fixtures / "pubmedbert")
        table = root / "rows.csv"
        lines = ["image,text"] + [f"{xrays[i % len(xrays)]},chest radiograph number {i} with findings"
                                  for i in range(args.rows)]
        table.write_text("\n".join(lines) + "\n")
        model = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
        for label, workers, threads in (("1 process", 1, args.threads), (f"{args.threads} processes", args.threads, 1)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
            env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads),
                       PYTHONPATH=str(REPO / "src"))
            done = subprocess.run([sys.executable, "-c", EMBED_CHILD, str(table), str(root / f"{workers}.parquet"),
                                   str(workers), model], env=env, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            results[label] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{label} x {threads} thread(s): {results[label]['rows_per_s']:.2f} rows/s "
                  f"(image + caption), peak RSS {results[label]['rss_mib']:.0f} MiB", flush=True)
    return results


def demo_bench(args: argparse.Namespace) -> dict:
    from biomedclip.embed.inputs import corpus_input
    from biomedclip.embed.run import embed
    from biomedclip.search.build import build_index
    from biomedclip.search.params import IndexParams

    ingest = Path(args.ingest)
    results: dict = {}
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        summary = embed(corpus_input(ingest / "pairs.parquet", ingest / "panels.parquet", ingest / "images"),
                        root / "embeddings.parquet", model=args.model, batch_size=64, chunk_rows=512)
        seconds = time.perf_counter() - start
        results["embed"] = {"rows": summary["rows"], "seconds": round(seconds, 1),
                            "rows_per_s": round(summary["rows"] / seconds, 1)}
        print(f"demo: {summary['rows']} rows embedded in {seconds:.1f} s", flush=True)
        for family in ("auto", "hnsw", "ivfpq"):
            params = IndexParams(out=root / family, metrics=root / f"{family}.json", family=family,
                                 threads=args.threads, recall_queries=1000)
            metrics = build_index(params, embeddings=root / "embeddings.parquet",
                                  pairs=ingest / "pairs.parquet", panels=ingest / "panels.parquet")
            results[family] = {k: metrics[k] for k in ("factory", "vectors", "build_seconds", "index_bytes",
                                                       "flat_float32_bytes", "recall_at_10", "search")}
            print(f"  {family}: {metrics['factory']} recall@10 {metrics['recall_at_10']:.3f} "
                  f"({metrics['search']}), built in {metrics['build_seconds']:.1f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("what", choices=("index", "embed", "demo"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--query-threads", type=int, default=1,
                        help="FAISS threads while timing single queries (a server answers one query a thread)")
    parser.add_argument("--budget-mb", type=int, default=4096)
    parser.add_argument("--nlist", type=int, default=None, help="IVF lists (default: the stage's rule)")
    parser.add_argument("--flat-reference-max", type=int, default=1_000_000,
                        help="build the exact (flat) reference up to this size")
    parser.add_argument("--rows", type=int, default=64, help="embed: rows (image + caption) per run")
    parser.add_argument("--ingest", help="demo: an ingest's output folder (pairs, panels, images)")
    parser.add_argument("--model", help="demo: the model that embeds it")
    parser.add_argument("--scratch", default=None, help="where temporary files go")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.what == "index":
        results: dict = {"sizes": [index_at(n, args) for n in args.sizes]}
        results["pmc_15m"] = extrapolate(results["sizes"], args.budget_mb)
        print(json.dumps(results["pmc_15m"], indent=2))
    elif args.what == "embed":
        results = embed_bench(args)
    else:
        results = demo_bench(args)
    results["load_average"] = [round(x, 2) for x in load]
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
