"""Which flow run produced a stage's outputs: one small JSON record per stage, beside its outputs.

Each pipeline stage writes `<pipeline.flow_runs>/<flow>.json` when it finishes, and DVC versions
it with the stage's other outputs (`dvc.yaml`: an output, `cache: false`). So the record always
describes the outputs in the workspace: a stage DVC skipped keeps the record of the run that
really made its data, however many runs of that flow other workspaces or later manual runs sent
to the same Prefect server. Registration reads these records for the lineage; it never asks the
orchestrator for "the newest run by name".

A record names the output paths it describes. A stage run outside Prefect (`biomedclip ingest` at
a terminal) that rewrote those very outputs replaces the record with one naming no flow run, so an
older flow run is never credited with outputs it did not make; one that wrote elsewhere (a params
copy with other outputs) leaves it alone. The lineage names a flow run only where the record
describes the outputs the registering params point at.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.params import Params
from biomedclip.pipeline.stages import model_input_stages, stage

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class FlowRun:
    """A Prefect flow run, as the orchestration layer describes the one it is in."""

    id: str
    name: str  # Prefect's run name, e.g. "crimson-fox"
    flow: str  # the flow's name: ingest, validate, ...
    api: str  # the Prefect API it reported to (credentials removed), "" for a temporary server


def stage_outputs(params: Params, flow: str) -> list[str]:
    """The outputs (as params name them) of the stage `flow` (a stage's flow has its name)."""
    return [str(path) for path in stage(flow).outputs(params)]


def record_path(params: Params, flow: str) -> Path:
    return params.pipeline.flow_runs / f"{flow}.json"


def write_record(params: Params, flow: str, run: FlowRun | None, *, command: str) -> dict[str, Any]:
    """Record that `run` (None: no flow run, `command` at a terminal) produced `flow`'s outputs."""
    record = {"flow": flow, "flow_run": asdict(run) if run else None, "command": command,
              "outputs": stage_outputs(params, flow), "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    atomic_write_bytes(record_path(params, flow), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


def read_record(params: Params, flow: str) -> dict[str, Any] | None:
    """The record of `flow`'s outputs, None when there is none (never run, or older code)."""
    path = record_path(params, flow)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): its stage's flow run is unknown", path, exc)
        return None


def made_outside_prefect(params: Params, flow: str, *, command: str) -> None:
    """`command` just rewrote `flow`'s outputs without a flow run: if a record describes those
    outputs, it now says no flow run made them. A record of other outputs is left alone, and none
    is created (no record already means "flow run unknown")."""
    record = read_record(params, flow)
    if record is not None and record.get("outputs") == stage_outputs(params, flow):
        write_record(params, flow, None, command=command)


def flow_run_ids(params: Params, flows: tuple[str, ...] | None = None) -> dict[str, str]:
    """{flow: id} of the flow runs that produced the outputs `params` point at; stages made
    outside Prefect, recorded for other outputs, or never recorded, are left out."""
    found = {}
    for flow in model_input_stages() if flows is None else flows:
        record = read_record(params, flow)
        if not record or not record.get("flow_run"):
            continue
        if record.get("outputs") != stage_outputs(params, flow):
            log.warning("%s describes other outputs (%s): its flow run is not this model's",
                        record_path(params, flow), ", ".join(record.get("outputs") or ["none named"]))
            continue
        found[flow] = record["flow_run"]["id"]
    return found
