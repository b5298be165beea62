"""Which flow run produced a stage's outputs: one small JSON record per stage, beside its outputs.

Each pipeline stage writes `<pipeline.flow_runs>/<flow>.json` when it finishes, and DVC versions
it with the stage's other outputs (`dvc.yaml`: an output, `cache: false`). So the record always
describes the outputs in the workspace: a stage DVC skipped keeps the record of the run that
really made its data, however many runs of that flow other workspaces or later manual runs sent
to the same Prefect server. Registration reads these records for the lineage; it never asks the
orchestrator for "the newest run by name".

A stage run outside Prefect (`biomedclip ingest` at a terminal) records that, with no flow run,
so an older flow run is never credited with outputs it did not make.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_write_bytes

log = logging.getLogger(__name__)

# The flows whose outputs a registered model is built from, in pipeline order.
MODEL_INPUT_FLOWS = ("ingest", "validate", "shard", "tokenizer", "train", "evaluate")


@dataclass(frozen=True)
class FlowRun:
    """A Prefect flow run, as the orchestration layer describes the one it is in."""

    id: str
    name: str  # Prefect's run name, e.g. "crimson-fox"
    flow: str  # the flow's name: ingest, validate, ...
    api: str  # the Prefect API it reported to (credentials removed), "" for a temporary server


def record_path(folder: Path, flow: str) -> Path:
    return folder / f"{flow}.json"


def write_record(folder: Path, flow: str, run: FlowRun | None, *, command: str) -> dict[str, Any]:
    """Record that `run` (None: no flow run, `command` at a terminal) produced `flow`'s outputs."""
    record = {"flow": flow, "flow_run": asdict(run) if run else None, "command": command,
              "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    atomic_write_bytes(record_path(folder, flow), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


def read_record(folder: Path, flow: str) -> dict[str, Any] | None:
    """The record of `flow`'s outputs, None when the stage has none (never run, or older code)."""
    path = record_path(folder, flow)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): its stage's flow run is unknown", path, exc)
        return None


def flow_run_ids(folder: Path, flows: tuple[str, ...] = MODEL_INPUT_FLOWS) -> dict[str, str]:
    """{flow: id} of the flow runs that produced the outputs in this workspace; stages made
    outside Prefect, or never recorded, are left out."""
    found = {}
    for flow in flows:
        record = read_record(folder, flow)
        if record and record.get("flow_run"):
            found[flow] = record["flow_run"]["id"]
    return found
