"""Benchmark the evaluation: embedding throughput, and retrieval time and memory at scale.

1. Embedding throughput of the trained model (train stage output) on the test split's images and
   captions: images/s (decode + preprocess + encode) and captions/s (tokenise + encode).
2. Retrieval (both directions, chunked similarity) on random L2-normalised 512-d embeddings at
   10k, 100k and 726k pairs (the paper's test set), each in a fresh process with its peak RSS.
   The full 726k x 726k product is ~5.4e14 multiply-adds per direction, hours on 2 CPU cores:
   by default it is timed on its first 4,096 queries against all 726k candidates and the full
   time extrapolated (linear in queries); `--full` runs it all. Memory is measured either way:
   the embeddings and one (chunk, N) block, never the N x N matrix (2.1 TB at 726k).

    python bench/evaluate.py [--sizes 10000 100000 726000] [--full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

REPO = Path(__file__).resolve().parents[1]
CHILD = PEAK_RSS + r"""
import json, sys, time, torch
from biomedclip.evaluate.retrieval import block_rows, match_ranks
n, dim, queries, memory_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
g = torch.Generator().manual_seed(0)
images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
texts = torch.nn.functional.normalize(images + 0.5 * torch.randn(n, dim, generator=g), dim=1)
chunk = block_rows(n, memory_mb)
start = time.perf_counter()
for q, c in ((images, texts), (texts, images)):
    ranks = match_ranks(q[:queries], c, chunk=chunk)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "queries": min(queries, n), "chunk": chunk,
                  "rss_mib": peak_rss_mib()}))
"""


def embedding_throughput(batch: int) -> dict[str, float] | None:
    from biomedclip.evaluate.embedding import decode, embed_images, embed_texts, shard_samples
    from biomedclip.models import load_model
    from biomedclip.params import load_params

    params = load_params(REPO / "params.yaml")
    info_path = params.train.outputs.run_info
    if not info_path.is_file():
        return None
    loaded = load_model(json.loads(info_path.read_text())["model_dir"])
    samples = list(shard_samples(params.shard.outputs.shards / params.evaluate.split))
    images, captions = [jpeg for jpeg, _ in samples], [caption for _, caption in samples]
    embed_images(loaded, (decode(b) for b in images[:batch]), batch)  # warm-up
    start = time.perf_counter()
    embed_images(loaded, (decode(b) for b in images), batch)
    image_s = time.perf_counter() - start
    start = time.perf_counter()
    embed_texts(loaded, captions, batch)
    text_s = time.perf_counter() - start
    return {"pairs": len(images), "images_per_s": len(images) / image_s, "captions_per_s": len(captions) / text_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 726_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--partial-queries", type=int, default=4096, help="queries timed when not --full (n > 100k)")
    parser.add_argument("--memory-mb", type=int, default=512, help="similarity block budget")
    parser.add_argument("--full", action="store_true", help="run every query even at 726k (hours)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()

    throughput = embedding_throughput(args.batch)
    if throughput is None:
        print("embedding throughput: no trained model (run `dvc repro train`); skipped")
    else:
        print(f"embedding throughput on {throughput['pairs']} test pairs: {throughput['images_per_s']:.1f} images/s, "
              f"{throughput['captions_per_s']:.1f} captions/s")
    print(f"\n{'pairs':>8} {'queries timed':>13} {'block rows':>10} {'seconds':>9} {'full s (both dirs)':>18} "
          f"{'peak RSS MiB':>12} {'embeddings MiB':>14}")
    for n in args.sizes:
        queries = n if args.full or n <= 100_000 else args.partial_queries
        done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.dim), str(queries), str(args.memory_mb)],
                              capture_output=True, text=True, check=True, cwd=REPO)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        full = r["seconds"] * n / r["queries"]
        estimated = "" if r["queries"] == n else " (est.)"
        print(f"{n:>8} {r['queries']:>13} {r['chunk']:>10} {r['seconds']:>9.1f} {full:>11.1f}{estimated:>7} "
              f"{r['rss_mib']:>12.0f} {2 * n * args.dim * 4 / 2**20:>14.0f}")


if __name__ == "__main__":
    main()
