"""The `register` stage: the trained model, with the lineage of this workspace, into the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from biomedclip.atomic_io import atomic_write_bytes
from biomedclip.config import Params
from biomedclip.register import lineage_facts
from biomedclip.register.registry import register


def register_trained(params: Params, params_path: Path, *, with_flow_runs: bool = True) -> dict[str, Any]:
    info = json.loads(params.train.outputs.run_info.read_text())
    tags = lineage_facts.collect(params_path=params_path, train_info=info,
                                 validate_result=params.validate_.outputs.result,
                                 shard_manifest=params.shard.outputs.manifest,
                                 eval_metrics=params.evaluate.outputs.metrics, with_flow_runs=with_flow_runs)
    result = register(params.register_, params.train.tracking, train_info=info, lineage=tags,
                      dvc_lock=Path("dvc.lock"))
    record = {k: result[k] for k in ("name", "version", "uri")}
    atomic_write_bytes(params.register_.output, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return {**result, "tags": tags}
