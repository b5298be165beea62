"""Run one stage's library entry, the same way from a flow and from a terminal.

The runner holds the stage's lock on its outputs for the whole run (`biomedclip.locks`): a second
run of the same stage on the same outputs stops at once naming the holder (`pipeline.on_busy:
stop`) or waits for it (`wait`); it never writes beside it. A run at a terminal that rewrote the
outputs a flow-run record describes says so in that record (no flow run made them); a run that
wrote elsewhere (a params copy with other outputs) leaves the record alone.

No Prefect here: the flows (`biomedclip.pipeline.flows`) call `run_stage` inside their task.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from biomedclip.locks import held
from biomedclip.params import Params
from biomedclip.pipeline.stages import Stage, stage
from biomedclip.provenance import made_outside_prefect
from biomedclip.stage import StageContext, StageReport


def lock_path(stage_: Stage, params: Params) -> Path:
    """The lock of `stage_` writing the outputs `params` name: runs of one stage on different
    outputs (a params copy pointing elsewhere) do not wait for each other."""
    outputs = "\0".join(str(path.absolute()) for path in stage_.outputs(params))
    return params.pipeline.locks / f"{stage_.name}-{hashlib.sha256(outputs.encode()).hexdigest()[:12]}.lock"


def run_stage(stage_: Stage, params: Params, context: StageContext, **options: Any) -> StageReport:
    """The stage's entry, holding its lock; `options` are the entry's own keyword options."""
    runner = params.pipeline
    outputs = ", ".join(str(path) for path in stage_.outputs(params))
    with held(lock_path(stage_, params), what=f"the {stage_.name} stage's outputs ({outputs})",
              wait=runner.on_busy == "wait", timeout_s=runner.wait_timeout_s):
        return stage_.function()(params, context, **options)


def run_here(name: str, params: Params, params_path: Path, *, command: str, record: bool = True,
             **options: Any) -> StageReport:
    """Run stage `name` at a terminal (no orchestrator); its record then says no flow run made
    the outputs it rewrote. `record=False`: a partial run (one benchmark of several), which
    leaves the record of the whole outputs alone."""
    stage_ = stage(name)
    report = run_stage(stage_, params, StageContext(params_path=params_path), **options)
    if record:
        made_outside_prefect(params, name, command=command)
    return report
