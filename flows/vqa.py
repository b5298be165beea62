"""The Prefect flow of the `vqa` stage, as `dvc.yaml` runs it (`--help` for its options).

The stage is defined once, in `biomedclip.pipeline.stages`.
"""

import sys

from biomedclip.pipeline.flows import main

if __name__ == "__main__":
    sys.exit(main("vqa"))
