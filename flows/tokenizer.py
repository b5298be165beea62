"""Entry point of the Prefect flow `tokenizer`: the text tower's vocabulary.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.tokenizer`
(`python flows/tokenizer.py --help` for its options).
"""

import sys

from biomedclip.pipeline.tokenizer import main, tokenizer_flow

__all__ = ["tokenizer_flow"]

if __name__ == "__main__":
    sys.exit(main())
