"""Benchmark the shard stage: samples/s written and read back, against the ceiling.

The ceiling is the raw rate of reading the same JPEG files from the image store and decoding
them (PIL), which any pipeline that feeds images must pay. Writing is measured over the whole
`write_shards` call (manifest staging, ordering, hashing, tar writing); reading back is
webdataset iterating the shards and decoding every `.jpg` with PIL, as a training loader would.

    python bench/shard.py [--repeat 3]   (after `dvc repro` has produced data/ingest)
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from biomedclip.params import load_params
from biomedclip.shard.params import ShardOutputs
from biomedclip.shard.writer import write_shards


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeat", type=int, default=3, help="passes per measurement (the fastest counts)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    ingest = params.ingest
    keys = pq.read_table(ingest.outputs.pairs, columns=["image_key"]).column("image_key").to_pylist()
    n = len(keys)

    def raw() -> None:
        for key in keys:
            decode((ingest.outputs.images / key).read_bytes())

    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name) / "shards"
        config = params.shard.model_copy(update={"outputs": ShardOutputs(
            shards=root, manifest=root / "manifest.json", report=Path(tmp_name) / "report.json")})

        def write() -> None:
            shutil.rmtree(root, ignore_errors=True)  # write every shard, not resume
            write_shards(ingest, config)

        write_s = best_of(args.repeat, write)
        urls = sorted(str(p) for p in root.glob("*/*.tar"))

        def read() -> None:
            count = 0
            for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
                decode(sample["jpg"])
                sample["txt"].decode("utf-8")
                count += 1
            assert count == n, (count, n)

        read_s = best_of(args.repeat, read)
        raw_s = best_of(args.repeat, raw)
        size = sum(Path(u).stat().st_size for u in urls)
    print(f"{n} samples, {size / 2**20:.1f} MiB of shards, samples_per_shard {params.shard.samples_per_shard}")
    print(f"{'measurement':<44} {'seconds':>8} {'samples/s':>10} {'vs ceiling':>10}")
    for name, seconds in (("ceiling: read + decode image-store JPEGs", raw_s),
                          ("write_shards (stage, order, hash, tar)", write_s),
                          ("read back with webdataset + decode", read_s)):
        print(f"{name:<44} {seconds:>8.2f} {n / seconds:>10.0f} {raw_s / seconds:>10.2f}")


if __name__ == "__main__":
    main()
