"""Entry point of the Prefect flow `evaluate`: retrieval, zero-shot classification and model tests.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.evaluate`
(`python flows/evaluate.py --help` for its options).
"""

import sys

from biomedclip.pipeline.evaluate import evaluate_flow, main

__all__ = ["evaluate_flow"]

if __name__ == "__main__":
    sys.exit(main())
