"""Entry point of the Prefect flow `register`: the trained model into the registry, with lineage.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.register`
(`python flows/register.py --help` for its options).
"""

import sys

from biomedclip.pipeline.register import main, register_flow

__all__ = ["register_flow"]

if __name__ == "__main__":
    sys.exit(main())
