"""Benchmark the paper-benchmark evaluation at PCam's real size: decontamination and linear probes.

1. A PCam-sized set in PCam's own files (`camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`:
   262,144 + 32,768 + 32,768 = 327,680 uint8 96x96x3 patches, 9.1 GB), cut from rendered demo
   micrographs (random windows, flips, brightness), written chunk by chunk.
2. The `benchmark_hashes` stage's work on it (`hash_benchmarks`: the real PCam reader, 1,024
   patches at a time, every split), in a fresh process: hashes/s and peak RSS, which must stay
   flat: the reader never holds a split.
3. The decontamination check: the band index over those 327,680 hashes (build time), queried with
   corpus-like hashes (random, plus near copies of benchmark hashes): hashes/s. Reference in the
   same command: a vectorised brute-force scan (XOR + popcount against all 327,680) on a sample;
   both must find the same matches.
4. Feature extraction on the test split through the real reader (`Benchmark.images` +
   `embed_images`) with the pipeline's trained model (`data/train/final`; run `make run` first):
   images/s and peak RSS, in a fresh process.
5. Linear-probe time per label fraction (1%, 10%, 100%; 3 seeds; the default C grid) at PCam's
   size with 512-d features (the full model's width): features drawn from two overlapping
   Gaussians, since embedding 327,680 patches takes hours on 2 cores; the fit's cost depends on
   the sizes, not on where the features came from.

6. How robust the check is at the default max_distance 4: every image of the demo benchmark
   (320), resized (0.5x to 1.6x) and re-encoded (JPEG 60 to 95) as a journal would, then through the
   ingest's own normalisation (`normalise_image`): the share within 4 bits of its original.

    python bench/paper_benchmarks.py [--train 262144] [--eval 32768] [--workdir DIR] [--keep]

(`--train 16384 --eval 2048` for a quick look. The set is removed afterwards unless `--keep`.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

REPO = Path(__file__).resolve().parents[1]
HASH_CHILD = PEAK_RSS + r"""
import json, sys, time
from pathlib import Path
from biomedclip.evaluate.params import BenchmarkSpec
from biomedclip.config import S3Params
from biomedclip.ingest.decontaminate import hash_benchmarks
root, out = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
summary = hash_benchmarks([BenchmarkSpec(name="pcam", path=str(root), preset="pcam")], S3Params(),
                          out / "hashes.parquet", out / "cache")
print(json.dumps({"seconds": time.perf_counter() - start, "summary": summary, "rss_mib": peak_rss_mib()}))
"""
EMBED_CHILD = PEAK_RSS + r"""
import json, sys, time, torch
torch.set_num_threads(2)
from biomedclip.evaluate.benchmarks import load_benchmark
from biomedclip.evaluate.embedding import embed_images
from biomedclip.models import load_model
root, model = sys.argv[1], sys.argv[2]
loaded = load_model(model)
bench = load_benchmark("pcam", root, preset="pcam", split="test")
start = time.perf_counter()
features = embed_images(loaded, (image for image, _ in bench.images()), 128)
print(json.dumps({"seconds": time.perf_counter() - start, "images": len(features), "dim": features.shape[1],
                  "rss_mib": peak_rss_mib()}))
"""


def child(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        raise SystemExit(f"child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def patch_pool(n: int = 48) -> np.ndarray:
    """Rendered demo micrographs (H&E and IHC, 384 px) to cut patches from."""
    from biomedclip.demo.figures import render

    return np.stack([np.asarray(render(("he_histology", "ihc")[i % 2], 1000 + i, 384, 384)[0]) for i in range(n)])


def write_pcam(root: Path, sizes: dict[str, int], chunk: int = 1024) -> float:
    """PCam's six files; returns seconds."""
    import h5py

    pool = patch_pool()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as hx, \
                h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as hy:
            x = hx.create_dataset("x", shape=(n, 96, 96, 3), dtype=np.uint8, chunks=(64, 96, 96, 3))
            y = hy.create_dataset("y", shape=(n, 1, 1, 1), dtype=np.uint8)
            for lo in range(0, n, chunk):
                m = min(chunk, n - lo)
                src = rng.integers(0, len(pool), m)
                top, left = rng.integers(0, 384 - 96, m), rng.integers(0, 384 - 96, m)
                rows = top[:, None] + np.arange(96)[None, :]
                cols = left[:, None] + np.arange(96)[None, :]
                patches = pool[src[:, None, None], rows[:, :, None], cols[:, None, :]]
                flip = rng.random(m) < 0.5
                patches[flip] = patches[flip, :, ::-1]
                gain = rng.uniform(0.85, 1.15, (m, 1, 1, 1)).astype(np.float32)
                x[lo:lo + m] = np.clip(patches * gain, 0, 255).astype(np.uint8)
                y[lo:lo + m] = (src % 2).astype(np.uint8).reshape(m, 1, 1, 1)
    return time.perf_counter() - start


def brute_force(hashes: np.ndarray, queries: np.ndarray, max_distance: int) -> np.ndarray:
    u = hashes.view(np.uint64)
    found = np.full(len(queries), -1, dtype=np.int64)
    for i, q in enumerate(queries.view(np.uint64)):
        d = np.bitwise_count(u ^ q)
        best = int(d.argmin())
        found[i] = best if d[best] <= max_distance else -1
    return found


def decontamination_check(hashes: np.ndarray, queries: int, max_distance: int = 4) -> dict[str, float]:
    from biomedclip.ingest.decontaminate import BenchmarkIndex

    rng = np.random.default_rng(1)
    start = time.perf_counter()
    index = BenchmarkIndex(hashes, max_distance)
    build = time.perf_counter() - start
    corpus = rng.integers(-(2**63), 2**63 - 1, size=queries, dtype=np.int64)
    planted = rng.choice(len(hashes), size=queries // 100, replace=False)  # 1% near copies
    copies = hashes[planted].view(np.uint64).copy()
    for _ in range(3):  # up to 3 bits flipped
        copies ^= np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
    corpus[: len(planted)] = copies.view(np.int64)
    start = time.perf_counter()
    rows, _ = index.nearest(corpus)
    seconds = time.perf_counter() - start
    sample = corpus[:2000]
    start = time.perf_counter()
    expected = brute_force(hashes, sample, max_distance)
    brute = (time.perf_counter() - start) / len(sample)
    found = rows[: len(sample)]
    agree = bool(((found >= 0) == (expected >= 0)).all())  # same pairs flagged (ties may pick another row)
    return {"index": len(hashes), "build_s": build, "queries": queries, "seconds": seconds,
            "hashes_per_s": queries / seconds, "brute_hashes_per_s": 1 / brute, "speedup": brute * queries / seconds,
            "matched": int((rows >= 0).sum()), "planted": len(planted), "agree_with_brute_force": agree}


def probe_times(train: int, evaluate: int, dim: int = 512) -> dict[str, float]:
    import torch

    from biomedclip.evaluate.params import LinearProbeParams
    from biomedclip.evaluate.probe import linear_probe

    rng = np.random.default_rng(2)
    direction = rng.normal(size=dim)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, dim)) + 0.08 * np.outer(2 * y - 1, direction)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

    data = split(train), split(evaluate), split(evaluate)
    times = {}
    for fraction in (0.01, 0.1, 1.0):
        start = time.perf_counter()
        result = linear_probe(*data, 2, LinearProbeParams(fractions=(fraction,), seeds=3))
        times[f"{fraction:g}"] = {"seconds": time.perf_counter() - start, "top1": result[f"{fraction:g}"]["top1"],
                                  "train_samples": result[f"{fraction:g}"]["train_samples"],
                                  "draws": result[f"{fraction:g}"]["draws"]}
    return times


def robustness(work: Path, max_distance: int = 4) -> dict[str, float]:
    """Distances between each demo benchmark image's pHash and its journal-style copies'."""
    import io

    from PIL import Image

    from biomedclip.demo.benchmark import generate_benchmark
    from biomedclip.demo.params import BenchmarkParams
    from biomedclip.ingest.images import normalise_image, phash
    from biomedclip.ingest.params import ImageParams

    bench = generate_benchmark(BenchmarkParams(out=work / "figure-types")).path
    distances = []
    for path in sorted((bench / "images").rglob("*.jpg")):
        original = Image.open(path).convert("RGB")
        reference = phash(original)
        for scale in (0.5, 0.75, 1.25, 1.6):
            for quality in (60, 75, 95):
                copy = original.resize((round(original.width * scale), round(original.height * scale)),
                                       Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                copy.save(buffer, format="JPEG", quality=quality)
                stored = normalise_image(buffer.getvalue(), ImageParams())
                distances.append(((stored.phash ^ reference) & (2**64 - 1)).bit_count())
    d = np.array(distances)
    return {"copies": len(d), "caught": float((d <= max_distance).mean()), "median": float(np.median(d)),
            "p99": float(np.percentile(d, 99)), "max": int(d.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train", type=int, default=262_144, help="train patches (PCam: 262,144)")
    parser.add_argument("--eval", type=int, default=32_768, help="valid and test patches each (PCam: 32,768)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the set is written (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the set afterwards")
    parser.add_argument("--model", default=str(REPO / "data" / "train" / "final"), help="model to embed with")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-pcam-"))
    root = work / "pcam"
    sizes = {"train": args.train, "valid": args.eval, "test": args.eval}
    try:
        r = robustness(work)
        print(f"robustness at max_distance 4: {r['caught']:.1%} of {r['copies']:,} resized, re-encoded, normalised "
              f"copies caught; distance median {r['median']:.0f}, 99th percentile {r['p99']:.0f}, max {r['max']} bits")
        seconds = write_pcam(root, sizes)
        gb = sum(f.stat().st_size for f in root.iterdir()) / 1e9
        total = sum(sizes.values())
        print(f"PCam-sized set: {total:,} patches ({gb:.1f} GB) written in {seconds:.0f} s")
        hashed = child(HASH_CHILD, str(root), str(work))
        print(f"hashing every split (benchmark_hashes): {total / hashed['seconds']:,.0f} patches/s "
              f"({hashed['seconds']:.0f} s), peak RSS {hashed['rss_mib']:,.0f} MiB; {hashed['summary']}")
        import pyarrow.parquet as pq

        hashes = pq.read_table(work / "hashes.parquet").column("phash").to_numpy()
        check = decontamination_check(hashes, queries=1_000_000)
        print(f"decontamination check against {check['index']:,} hashes: index built in {check['build_s']:.2f} s; "
              f"{check['hashes_per_s']:,.0f} corpus hashes/s; brute-force scan {check['brute_hashes_per_s']:,.0f} "
              f"hashes/s ({check['speedup']:,.0f}x slower); {check['matched']:,} matched "
              f"({check['planted']:,} planted); same flags as brute force: {check['agree_with_brute_force']}")
        if Path(args.model).is_dir():
            embedded = child(EMBED_CHILD, str(root), args.model)
            print(f"feature extraction, test split ({embedded['images']:,} patches, {embedded['dim']}-d): "
                  f"{embedded['images'] / embedded['seconds']:,.0f} images/s, peak RSS {embedded['rss_mib']:,.0f} MiB")
        else:
            print(f"feature extraction: skipped, no model at {args.model} (run `make run` first)")
        for fraction, t in probe_times(args.train, args.eval).items():
            print(f"linear probe at {float(fraction):.0%} ({t['train_samples']:,} train features, 512-d, "
                  f"{t['draws']} draw(s) x 5 C + refit): {t['seconds']:.1f} s (top-1 {t['top1']:.3f})")
    finally:
        if not args.keep:
            shutil.rmtree(work if args.workdir is None else root, ignore_errors=True)


if __name__ == "__main__":
    main()
