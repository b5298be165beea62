"""Benchmark the validate stage: time and peak memory at two manifest sizes, 10x apart.

Synthetic manifests with the pairs schema (valid rows: the gate passes) are validated in a fresh
process each; the peak RSS ratio shows whether memory grows with the manifest (target: flat,
<= 1.25, since the manifest is staged into SQLite in batches and GX's SQL engine computes every
metric in the database).

    python bench/validate.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

from biomedclip.ingest.assemble import PAIRS_SCHEMA

WORDS = ["chest", "radiograph", "showing", "bilateral", "opacities", "histology", "liver", "section", "stained", "with",
         "haematoxylin", "eosin", "western", "blot", "of", "protein", "levels", "in", "treated", "cells", "bar",
         "chart", "of", "mean", "expression", "across", "groups", "error", "bars", "standard", "deviation", "scale",
         "bar"]
CHILD = PEAK_RSS + """
import json, sys, time
from pathlib import Path
from biomedclip.ingest.params import IngestOutputs, IngestParams, SplitParams
from biomedclip.validate.params import ValidateOutputs, ValidateParams
from biomedclip.validate.gate import validate_manifest
tmp = Path(sys.argv[1])
ingest = IngestParams(outputs=IngestOutputs(pairs=tmp / "pairs.parquet", report=tmp / "ingest.json"))
params = ValidateParams(outputs=ValidateOutputs(result=tmp / "validate.json", data_docs=tmp / "docs"))
start = time.perf_counter()
result = validate_manifest(ingest, params)
print(json.dumps({"seconds": time.perf_counter() - start, "success": result["success"],
                  "rss_mib": peak_rss_mib()}))
"""


def write_manifest(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    splits = ("train",) * 85 + ("val",) * 5 + ("test",) * 10
    with pq.ParquetWriter(path, PAIRS_SCHEMA, compression="zstd") as writer:
        for start in range(0, rows, 50_000):
            batch = []
            for i in range(start, min(rows, start + 50_000)):
                article = i // 3
                batch.append({
                    "pair_id": f"{i:020x}", "pmcid": f"PMC{10_000_000 + article}", "pmid": str(article),
                    "version": 1, "fig_id": f"f{i % 3}", "label": f"Figure {i % 3 + 1}",
                    "caption": " ".join(rng.choices(WORDS, k=rng.randint(8, 60))), "panels": 1,
                    "image_key": f"{i % 256:02x}/{i:064x}.jpg", "image_sha256": f"{i:064x}",
                    "width": rng.randint(64, 512), "height": rng.randint(64, 512), "phash": i,
                    "license": "CC BY", "split": splits[(article * 2654435761 + seed) % 2**32 % 100],
                    "source_uri": f"s3://pmc-oa-opendata/PMC{10_000_000 + article}.1/"})
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=PAIRS_SCHEMA))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="smaller manifest size (N); also 10*N")
    args = parser.parse_args()
    results = []
    for rows in (args.rows, 10 * args.rows):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            write_manifest(tmp / "pairs.parquet", rows)
            (tmp / "ingest.json").write_text(json.dumps({"reject_rate": 0.1}))
            done = subprocess.run([sys.executable, "-c", CHILD, str(tmp)], capture_output=True, text=True,
                                  check=True)
            results.append({"rows": rows, **json.loads(done.stdout.strip().splitlines()[-1])})
    print(f"{'rows':>9} {'seconds':>8} {'rows/s':>9} {'peak RSS MiB':>12} {'passed':>6}")
    for r in results:
        print(f"{r['rows']:>9} {r['seconds']:>8.1f} {r['rows'] / r['seconds']:>9.0f} {r['rss_mib']:>12.0f} "
              f"{r['success']!s:>6}")
    print(f"peak RSS ratio {results[1]['rows']}/{results[0]['rows']} rows: "
          f"{results[1]['rss_mib'] / results[0]['rss_mib']:.2f} (target <= 1.25: flat)")


if __name__ == "__main__":
    main()
