"""What every flow of the pipeline shares: its flow run's record, the Prefect API it reports to,
and the entry point `flows/<stage>.py` calls."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from biomedclip.config import DEFAULT_PARAMS_PATH, ConfigError, Params
from biomedclip.provenance import FlowRun, write_record
from biomedclip.tracking import without_credentials


def api_url() -> str:
    """The Prefect API this process reports to: the server PREFECT_API_URL names, else the one
    temporary server Prefect starts in this process (and stops at exit)."""
    from prefect import get_client

    return str(get_client(sync_client=True).api_url)


@contextmanager
def one_api() -> Iterator[str]:
    """Make this process's API the one the processes it starts report to (Dask workers): one
    server to watch, and no temporary server of their own each (7-20 s apiece, and several
    writers on one SQLite file). The retrain hands `api_url()` to `dvc repro`'s stages the same
    way, through their environment."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def current_flow_run() -> FlowRun:
    """The flow run this code runs in."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_API_URL

    return FlowRun(id=str(flow_run.get_id()), name=flow_run.get_name() or "", flow=flow_run.get_flow_name() or "",
                   api=without_credentials(PREFECT_API_URL.value() or ""))


def record_flow_run(params: Params, flow: str) -> None:
    """This flow run produced `flow`'s outputs: say so beside them (call at the flow's end)."""
    write_record(params, flow, current_flow_run(), command=" ".join(["python", *sys.argv]))


def stage_main(run: Callable[[Path], Any], argv: list[str] | None, *, description: str,
               errors: tuple[type[Exception], ...] = ()) -> int:
    """`python flows/<stage>.py [--params FILE]`: run the flow; a bad params file (exit 2) or one of
    the stage's expected `errors` (exit 1) ends in one line on stderr instead of a traceback."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_PATH,
                        help="the params file (default: params.yaml)")
    args = parser.parse_args(argv)
    return guarded(lambda: run(args.params), errors)


def guarded(run: Callable[[], Any], errors: tuple[type[Exception], ...] = ()) -> int:
    """Run an entry point's work; expected errors as one line and an exit status."""
    logging.getLogger("biomedclip").setLevel(logging.INFO)  # the library's progress in the run's logs
    try:
        run()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
