"""Clean scores: corpus pairs whose image is (nearly) a benchmark image leave the corpus.

PMC articles reproduce the figures of the datasets models are tested on (a PCam patch in a
pathology review, an RSNA radiograph in a methods paper). A model trained on those pairs is
tested on images it has seen. PMC-CLIP removed them; the BiomedCLIP paper does not say. Here:

1. `hash_benchmarks` (the `benchmark_hashes` stage) hashes every image of every configured
   benchmark, every split (train images leak into zero-shot scores as surely as test ones), with
   the dedup's 64-bit pHash. Each (benchmark, split) is cached under its `Benchmark.version()`, so
   an unchanged benchmark is never decoded twice; the hash file is a DVC output that `ingest`
   depends on, so a changed benchmark re-runs the ingest.
2. `BenchmarkIndex` finds, for each corpus hash, the nearest benchmark hash within
   `max_distance` bits. Two 64-bit hashes within d bits agree exactly on at least one of d + 1
   disjoint bit bands (pigeonhole), so each band is a sorted array searched with `searchsorted`
   and only the hashes sharing a band value are compared (popcount of the XOR): no pairwise scan,
   at PCam's 327,680 patches or PMC-15M's 15 million figures.
3. The ingest's assembly rejects the matched pairs with reason `benchmark_overlap`, the
   benchmark, split, image and distance in the detail, counted per benchmark in its report.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biomedclip.atomic_io import atomic_writer
from biomedclip.config import S3Params
from biomedclip.console import progress
from biomedclip.evaluate.benchmarks import Benchmark, BenchmarkError, load_benchmark
from biomedclip.evaluate.params import BenchmarkSpec
from biomedclip.ingest.images import phash

log = logging.getLogger(__name__)

HASHES_SCHEMA = pa.schema([("benchmark", pa.string()), ("split", pa.string()), ("key", pa.string()),
                           ("phash", pa.int64())])
SPLITS = ("test", "val", "train")  # every split a benchmark has; "all" where it has none
QUERY_BATCH = 4096  # corpus hashes matched at a time (bounds the candidate arrays)


class HashesMissing(FileNotFoundError):
    """The benchmark hash file the ingest was told to check against does not exist."""


# -- the index ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    row: int  # the benchmark hash's row in the index
    distance: int  # Hamming distance in bits


class BenchmarkIndex:
    """Nearest benchmark hash within `max_distance` bits, through `max_distance + 1` bit bands."""

    def __init__(self, hashes: np.ndarray, max_distance: int) -> None:
        if not 0 <= max_distance < 64:
            raise ValueError(f"max_distance must be in [0, 63] bits, got {max_distance}")
        self.hashes = np.ascontiguousarray(hashes, dtype=np.int64).view(np.uint64)
        self.max_distance = max_distance
        edges = np.linspace(0, 64, max_distance + 2).round().astype(int)
        self.bands = [(int(lo), (1 << int(hi - lo)) - 1) for lo, hi in pairwise(edges)]
        self.sorted: list[tuple[np.ndarray, np.ndarray]] = []  # per band: (order, band values in that order)
        for lo, mask in self.bands:
            values = self._band(self.hashes, lo, mask)
            order = np.argsort(values, kind="stable")
            self.sorted.append((order, values[order]))

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def _band(hashes: np.ndarray, lo: int, mask: int) -> np.ndarray:
        return (hashes >> np.uint64(lo)) & np.uint64(mask)

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query hash: (row of the nearest index hash or -1, its distance or -1); ties
        go to the lowest row, so the answer does not depend on the band order."""
        queries = np.ascontiguousarray(queries, dtype=np.int64).view(np.uint64)
        rows = np.full(len(queries), -1, dtype=np.int64)
        distances = np.full(len(queries), -1, dtype=np.int64)
        for start in range(0, len(queries), QUERY_BATCH):
            batch = queries[start:start + QUERY_BATCH]
            r, d = self._nearest(batch)
            rows[start:start + len(batch)], distances[start:start + len(batch)] = r, d
        return rows, distances

    def _nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found_q, found_row, found_d = [], [], []
        for (lo, mask), (order, values) in zip(self.bands, self.sorted, strict=True):
            band = self._band(queries, lo, mask)
            left = np.searchsorted(values, band, side="left")
            counts = np.searchsorted(values, band, side="right") - left
            total = int(counts.sum())
            if not total:
                continue
            query_of = np.repeat(np.arange(len(queries)), counts)
            offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
            candidate = order[np.repeat(left, counts) + offset]
            distance = np.bitwise_count(queries[query_of] ^ self.hashes[candidate]).astype(np.int64)
            close = distance <= self.max_distance
            found_q.append(query_of[close])
            found_row.append(candidate[close])
            found_d.append(distance[close])
        rows = np.full(len(queries), -1, dtype=np.int64)
        distances = np.full(len(queries), -1, dtype=np.int64)
        if found_q:
            q, row, d = (np.concatenate(parts) for parts in (found_q, found_row, found_d))
            best = np.lexsort((row, d, q))  # by query, then distance, then row
            q, row, d = q[best], row[best], d[best]
            first = np.ones(len(q), dtype=bool)
            first[1:] = q[1:] != q[:-1]
            rows[q[first]], distances[q[first]] = row[first], d[first]
        return rows, distances


@dataclass(frozen=True)
class BenchmarkHashes:
    """The hash file, loaded: the index and what each of its rows is."""

    index: BenchmarkIndex
    benchmark: list[str]
    split: list[str]
    key: list[str]

    def describe(self, row: int, distance: int) -> str:
        split = "" if self.split[row] == "all" else f" ({self.split[row]} split)"
        return f"pHash within {distance} bits of {self.benchmark[row]} image {self.key[row]!r}{split}"

    def counts(self) -> dict[str, int]:
        """Hashed images per benchmark, by name."""
        return dict(sorted(Counter(self.benchmark).items()))


def load_hashes(path: Path, max_distance: int) -> BenchmarkHashes:
    if not path.exists():
        raise HashesMissing(f"{path}: no benchmark hash file to decontaminate against; make it with "
                            "`biomedclip benchmark-hashes` (dvc repro runs it before ingest), or set "
                            "ingest.decontaminate.enabled: false")
    table = pq.read_table(path, schema=HASHES_SCHEMA)
    return BenchmarkHashes(BenchmarkIndex(table.column("phash").to_numpy(), max_distance),
                           table.column("benchmark").to_pylist(), table.column("split").to_pylist(),
                           table.column("key").to_pylist())


# -- hashing the benchmarks -----------------------------------------------------------------------
def benchmark_splits(spec: BenchmarkSpec, s3: S3Params) -> Iterator[tuple[str, Benchmark]]:
    """(split, benchmark) for every split the benchmark has; ("all", ...) where it has none."""
    for split in SPLITS:
        try:
            bench = load_benchmark(spec.name, spec.path, classes=spec.classes, format=spec.format,
                                   preset=spec.preset, split=split, s3=s3)
        except BenchmarkError as exc:
            if split == "test":
                raise
            log.info("benchmark %s: no %s split to hash (%s)", spec.name, split, exc)
            continue
        if bench.split is None:  # the format has no splits: every image, once
            yield "all", bench
            return
        yield split, bench


def _hash_split(bench: Benchmark, split: str) -> pa.Table:
    keys: list[str] = []
    hashes: list[int] = []
    images = progress(bench.keyed_images(), total=len(bench.examples),
                      description=f"hashing {bench.name} ({split})")
    for key, image, _ in images:
        keys.append(key)
        hashes.append(phash(image))
    if bench.skipped:
        log.warning("benchmark %s (%s): %d images unreadable, not hashed (first: %s)", bench.name, split,
                    len(bench.skipped), bench.skipped[0])
    return pa.table({"key": pa.array(keys, pa.string()), "phash": pa.array(hashes, pa.int64())})


def _write_table(path: Path, table: pa.Table) -> None:
    with atomic_writer(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def hash_benchmarks(specs: Sequence[BenchmarkSpec], s3: S3Params, out: Path, cache: Path, *,
                    more: Iterable[tuple[str, Iterable[tuple[str, Benchmark]]]] = ()) -> dict[str, dict[str, int]]:
    """Write `out` (benchmark, split, key, phash of every image of every split of `specs`, and of
    the (name, splits) in `more`: the VQA benchmarks' images), hashing only the (benchmark,
    split)s whose version is not in `cache`. Returns {benchmark: {split: images hashed}}."""
    parts: list[pa.Table] = []
    summary: dict[str, dict[str, int]] = {}
    sources = [*((spec.name, benchmark_splits(spec, s3)) for spec in specs), *more]
    for name, splits in sources:
        for split, bench in splits:
            cached = cache / f"{bench.version()}.parquet"
            if cached.exists():
                table = pq.read_table(cached)
                log.info("benchmark %s (%s): %d hashes from the cache %s", name, split, len(table), cached)
            else:
                table = _hash_split(bench, split)
                _write_table(cached, table)
            n = len(table)
            parts.append(pa.table({"benchmark": pa.array([name] * n, pa.string()),
                                   "split": pa.array([split] * n, pa.string()),
                                   "key": table.column("key"), "phash": table.column("phash")}))
            summary.setdefault(name, {})[split] = n
    table = pa.concat_tables(parts).cast(HASHES_SCHEMA) if parts else HASHES_SCHEMA.empty_table()
    _write_table(out, table)
    return summary
