"""Entry point of the Prefect flow `shard`: the validated manifest → WebDataset shards.

`dvc.yaml` calls this file; the flow lives in `biomedclip.pipeline.shard`
(`python flows/shard.py --help` for its options).
"""

import sys

from biomedclip.pipeline.shard import main, shard_flow

__all__ = ["shard_flow"]

if __name__ == "__main__":
    sys.exit(main())
