"""Entry point of the Prefect flow `train`: contrastive pretraining (one process, or torchrun).

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.train`
(`python flows/train.py --help` for its options).
"""

import sys

from biomedclip.pipeline.train import main, train_flow

__all__ = ["train_flow"]

if __name__ == "__main__":
    sys.exit(main())
