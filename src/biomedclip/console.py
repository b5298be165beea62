"""Terminal output: logging set-up (called once, by entry points) and progress reporting.

In a terminal, progress is a rich progress bar; in a log file or CI (stderr not a TTY) it is a
plain log line every `every_percent` percent, so long runs stay readable in both.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
log = logging.getLogger(__name__)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def configure_logging(level: str = "INFO") -> None:
    """Configure the root logger once: rich in a terminal, timestamped plain lines otherwise."""
    handler: logging.Handler
    if stderr_is_terminal():
        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    # Libraries that are chatty at INFO: warnings only. A filter on the handler, not levels on
    # their loggers, because some (great_expectations) set their own levels when imported.
    handler.addFilter(_quiet_libraries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_NOISY = ("PIL.", "urllib3.", "botocore.", "s3transfer.", "filelock.", "great_expectations.", "httpx.")


def _quiet_libraries(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not (record.name + ".").startswith(_NOISY)


def progress(
    items: Iterable[T], *, total: int | None, description: str, every_percent: int = 10,
    every_items: int = 100,
) -> Iterator[T]:
    """Yield `items`, showing progress on stderr (a bar in a terminal, log lines otherwise).

    With `total=None` (a streamed listing) the bar counts without an end, and log lines come
    every `every_items` items.
    """
    if stderr_is_terminal():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    start = time.monotonic()
    if total is None:
        done = 0
        for done, item in enumerate(items, start=1):
            yield item
            if done % every_items == 0:
                log.info("%s: %d (%.1fs)", description, done, time.monotonic() - start)
        log.info("%s: %d done (%.1fs)", description, done, time.monotonic() - start)
        return
    next_report = every_percent
    for done, item in enumerate(items, start=1):
        yield item
        percent = 100 * done // max(total, 1)
        if percent >= next_report or done == total:
            log.info(
                "%s: %d/%d (%d%%, %.1fs)", description, done, total, percent,
                time.monotonic() - start,
            )
            next_report = (percent // every_percent + 1) * every_percent
