"""`python -m biomedclip.train`: the entry point torchrun and srun start, once per process."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biomedclip.config import ConfigError, load_params
from biomedclip.console import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biomedclip.train", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_const", const="always",
                       help="continue from the latest checkpoint (an error if there is none)")
    group.add_argument("--fresh", dest="resume", action="store_const", const="never",
                       help="ignore checkpoints and start over")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        params = load_params(args.params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from biomedclip.train.data import ShardError
    from biomedclip.train.loop import TrainingError, train

    try:
        train(params.train, params.shard, resume=args.resume or "auto")
    except (TrainingError, ShardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
