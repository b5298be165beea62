"""What every flow of the pipeline shares: its flow run's record, the Prefect API it reports to,
and one line instead of a traceback for an expected error."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from biomedclip.params import Params
from biomedclip.pipeline.stages import exit_code
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


def guarded(run: Callable[[], Any], extra_errors: Iterable[str] = ()) -> int:
    """Run an entry point's work; an expected error (`stages.exit_code`, plus `extra_errors`,
    "module:Class") is one line on stderr and its exit status."""
    logging.getLogger("biomedclip").setLevel(logging.INFO)  # the library's progress in the run's logs
    try:
        run()
    except Exception as exc:
        code = exit_code(exc, extra_errors)
        if code is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code
    return 0
