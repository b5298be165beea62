"""`python -m biomedclip.train`: the entry point torchrun and srun start, once per process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biomedclip.config import ConfigError
from biomedclip.console import configure_logging
from biomedclip.params import load_params
from biomedclip.train.launch import recipe
from biomedclip.train.loop import Resume, TrainingError, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biomedclip.train", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--resume", type=Resume, choices=list(Resume), default=Resume.AUTO,
                        help="auto: continue a checkpoint of the same run; always: continue the latest "
                             "checkpoint (an error if there is none); never: start over")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from biomedclip.train.data import ShardError

    try:
        train(recipe(params), params.shard, params.tracking, resume=args.resume)
    except (TrainingError, ShardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
