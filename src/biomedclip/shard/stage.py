"""The `shard` stage: the validated manifest → WebDataset shards per split."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biomedclip.params import Params
from biomedclip.shard import report
from biomedclip.shard.params import ShardParams
from biomedclip.shard.writer import write_shards
from biomedclip.stage import StageContext


@dataclass(frozen=True)
class ShardReport:
    splits: Mapping[str, Any]  # what `shard.outputs.report` holds: per split samples, shards, bytes
    params: ShardParams

    def markdown(self) -> str:
        return report.markdown(dict(self.splits), self.params)


def run(params: Params, context: StageContext) -> ShardReport:
    return ShardReport(write_shards(params.ingest, params.shard), params.shard)
