"""Entry point of the Prefect flow `ingest`: PMC articles → the pairs manifest.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.ingest`
(`python flows/ingest.py --help` for its options).
"""

import sys

from biomedclip.pipeline.ingest import ingest_flow, main

__all__ = ["ingest_flow"]

if __name__ == "__main__":
    sys.exit(main())
