"""The `shard` section: WebDataset shards per split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import PathValue, Section


class ShardOutputs(Section):
    shards: PathValue = Path("data/shards")  # {train,val,test}/NNNNNN.tar + sizes.json
    manifest: PathValue = Path("data/shards/manifest.json")  # shard -> samples, bytes, sha256
    report: PathValue = Path("metrics/shard.json")


class ShardParams(Section):
    """`biomedclip shard`: the validated manifest → WebDataset tar shards per split."""

    samples_per_shard: Annotated[int, Field(ge=1)] = 256  # PMC-15M: 10000 (about 1 GB a shard)
    seed: Annotated[int, Field(ge=0)] = 0  # the train order's shuffle
    # What a sample is: whole figures (PMC-15M); panel pairs where the ingest split a figure and
    # the figure where it did not; or both (needs ingest.panels.enabled for any panels).
    unit: Literal["figure", "panel", "both"] = "figure"
    outputs: ShardOutputs = ShardOutputs()

    @model_validator(mode="after")
    def _manifest_inside(self) -> Self:
        if self.outputs.manifest.parent != self.outputs.shards:
            raise ValueError(f"outputs.manifest ({self.outputs.manifest}) must sit directly in "
                             f"outputs.shards ({self.outputs.shards})")
        return self
