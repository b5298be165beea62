"""Entry point of the Prefect flow `retrain`: sync new PMC articles, dvc repro, push, gate.

`prefect.yaml` deploys this file's `retrain_flow` (`prefect deploy --all`); `biomedclip retrain`
and `biomedclip schedule` run the same flow, which lives in `biomedclip.pipeline.retrain`
(`python flows/retrain.py --help` for its options, `--serve` for the schedule).
"""

import sys

from biomedclip.pipeline.retrain import main, retrain_flow

__all__ = ["retrain_flow"]

if __name__ == "__main__":
    sys.exit(main())
