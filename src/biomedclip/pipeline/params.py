"""The `pipeline` section: what the orchestration keeps beside the stages' outputs, and how a
second run of a stage that is already running behaves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from biomedclip.config import PathValue, Section


class PipelineParams(Section):
    """The stage runner's settings (`biomedclip.pipeline.runner`), for flows and commands alike."""

    flow_runs: PathValue = Path("reports/flow-runs")  # <stage>.json: the flow run behind its outputs
    locks: PathValue = Path(".locks")  # one lock per stage and outputs while a run writes them
    on_busy: Literal["stop", "wait"] = "stop"  # the stage is running already: stop at once, or wait
    wait_timeout_s: Annotated[int, Field(ge=1)] = 6 * 3600
