"""Entry point of the Prefect flow `validate`: the Great Expectations gate on the manifest.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.validate`
(`python flows/validate.py --help` for its options).
"""

import sys

from biomedclip.pipeline.validate import main, validate_flow

__all__ = ["validate_flow"]

if __name__ == "__main__":
    sys.exit(main())
