"""Entry point of the Prefect flow `benchmark-hashes`: the pHash of every benchmark image, which
`ingest` decontaminates the corpus against.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.benchmark_hashes`
(`python flows/benchmark_hashes.py --help` for its options).
"""

import sys

from biomedclip.pipeline.benchmark_hashes import benchmark_hashes_flow, main

__all__ = ["benchmark_hashes_flow"]

if __name__ == "__main__":
    sys.exit(main())
