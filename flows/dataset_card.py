"""Entry point of the Prefect flow `dataset-card`: the corpus as a page people read.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.dataset_card`
(`python flows/dataset_card.py --help` for its options).
"""

import sys

from biomedclip.pipeline.dataset_card import dataset_card_flow, main

__all__ = ["dataset_card_flow"]

if __name__ == "__main__":
    sys.exit(main())
