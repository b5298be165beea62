"""What a stage's library entry receives and returns, wherever it runs.

Every pipeline stage has one library entry, `run(params, context) -> report`
(`biomedclip.pipeline.stages` names it). The same entry runs in a Prefect flow (`dvc repro`,
`python flows/<stage>.py`) and at a terminal (`biomedclip <stage>`); `StageContext` is all that
differs between the two, and the report is what both show: the flow publishes its markdown as an
artifact, the CLI prints it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# An ordered map over work items: fan_out(fn, items) yields fn(item) in the items' order. At a
# terminal a stage uses its own threads; a flow passes one that runs each item as a task.
FanOut = Callable[[Callable[[Any], Any], Iterator[Any]], Iterator[Any]]


@dataclass(frozen=True)
class StageContext:
    """How this run of a stage was started."""

    params_path: Path  # the params file it was given (processes the stage starts read it)
    flow_run_id: str | None = None  # the orchestrator's run, None at a terminal
    fan_out: FanOut | None = None  # how to spread work items, None: the stage's own threads


class StageReport(Protocol):
    """What a stage returns: the same report for the flow's artifact and the terminal."""

    def markdown(self) -> str:
        """The report as markdown (tables, a heading, links to the outputs people open)."""
        ...
