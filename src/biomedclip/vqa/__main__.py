"""`python -m biomedclip.vqa --run-file FILE`: the entry point torchrun starts, once per process
(`vqa.launch.torchrun_vqa` writes FILE)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from biomedclip.console import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m biomedclip.vqa",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run-file", type=Path, required=True,
                        help="the run file vqa.launch.torchrun_vqa writes")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    from biomedclip.models import ModelSourceError
    from biomedclip.vqa.formats import VqaFormatError
    from biomedclip.vqa.launch import read_run_file
    from biomedclip.vqa.stage import answer_benchmarks

    params, model, benchmark, tracking = read_run_file(args.run_file)
    try:
        answer_benchmarks(params, model=model, benchmark=benchmark, tracking=tracking)
    except (VqaFormatError, ModelSourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
