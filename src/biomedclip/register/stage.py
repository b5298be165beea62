"""The `register` stage: the trained model, with the lineage of this workspace, into the registry."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.evaluate.params import DETAILS
from biomedclip.params import Params
from biomedclip.provenance import flow_run_ids
from biomedclip.register import lineage_facts
from biomedclip.register.registry import register
from biomedclip.stage import StageContext

STAGE = "register"  # this stage's name in dvc.yaml


@dataclass(frozen=True)
class RegisterReport:
    name: str
    version: int
    uri: str
    created: bool  # False: this model with this lineage was registered already
    aliases: tuple[str, ...]  # the version's aliases now
    tags: Mapping[str, str]  # the version's lineage tags

    def markdown(self) -> str:
        state = "registered" if self.created else "already registered (unchanged)"
        held = ", ".join(f"`{a}`" for a in self.aliases)
        aliases = f"Aliases: {held}." if held else "No alias points at it."
        step = " Promote it with `biomedclip promote`." if "challenger" in self.aliases else ""
        rows = "\n".join(f"| {k.removeprefix('biomedclip.')} | {v} |" for k, v in sorted(self.tags.items()))
        return (f"## `{self.uri}` {state}\n\n{aliases}{step}\n\n"
                f"| lineage | value |\n|---|---|\n{rows}\n")


def run(params: Params, context: StageContext) -> RegisterReport:
    """Register the train stage's model with this workspace's lineage (alias `challenger`)."""
    result = register_trained(params, context.params_path, flow_run_id=context.flow_run_id)
    return RegisterReport(result["name"], int(result["version"]), result["uri"], bool(result["created"]),
                          tuple(result.get("aliases", ())), result["tags"])


def register_trained(params: Params, params_path: Path, *, flow_run_id: str | None = None) -> dict[str, Any]:
    """Register `train.outputs`' model; `flow_run_id` is the flow run registering it, if any.
    Returns the registry's answer and the lineage tags."""
    info = json.loads(params.train.outputs.run_info.read_text())
    flow_runs = flow_run_ids(params)
    if flow_run_id:
        flow_runs["register"] = flow_run_id
    tags = lineage_facts.collect(params_path=params_path, train_info=info,
                                 validate_result=params.validate.outputs.result,
                                 shard_manifest=params.shard.outputs.manifest,
                                 eval_metrics=params.evaluate.outputs.plots / DETAILS,
                                 flow_runs=flow_runs)
    with tempfile.TemporaryDirectory(prefix="biomedclip-lineage-") as tmp:
        lock = inputs_lock(Path("dvc.lock"), Path(tmp) / "dvc.lock")
        result = register(params.register, params.tracking, train_info=info, lineage=tags, dvc_lock=lock)
    record = {k: result[k] for k in ("name", "version", "uri")}
    atomic_write_bytes(params.register.output, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return {**result, "tags": tags}


def inputs_lock(lock: Path, out: Path, stage: str = STAGE) -> Path | None:
    """`lock` without the registering stage: while it runs, DVC still holds its previous outputs
    there (the earlier registration's record), which describe no input of this model and would
    fail every later `lineage --verify`. Written to `out`; None when there is no lock."""
    if not lock.is_file():
        return None
    content = yaml.safe_load(lock.read_text()) or {}
    content.get("stages", {}).pop(stage, None)
    out.write_text(yaml.safe_dump(content, sort_keys=False))
    return out
