"""Entry point of the Prefect flow `demo-data`: the demo corpus and its zero-shot benchmark.

`dvc.yaml` calls this file (stage `demo_benchmark`, with `--no-corpus`); the flow lives in `biomedclip.pipeline.demo_data`
(`python flows/demo_data.py --help` for its options).
"""

import sys

from biomedclip.pipeline.demo_data import demo_data_flow, main

__all__ = ["demo_data_flow"]

if __name__ == "__main__":
    sys.exit(main())
