"""The top-level `vqa` params section: visual question answering on VQA-RAD and SLAKE.

```yaml
vqa:
  model: null                      # default: the train stage's model; a folder, hf-hub:, models:/
  benchmarks:
    - {name: vqa-rad, path: data/benchmarks/vqa/vqa_rad, format: auto}   # auto | vqa_rad | slake
    - {name: slake, path: data/benchmarks/vqa/slake, format: auto}
  languages: [en]                  # SLAKE's q_lang values kept (zh: its Chinese questions)
  fusion: {width: 64, layers: 1, heads: 4, mlp_ratio: 4.0, dropout: 0.1}   # METER: 768, 6, 12
  freeze_encoders: true            # false: fine-tune the encoders too (a GPU's job)
  lr: 5.0e-6                       # the encoders' learning rate when fine-tuned (METER)
  fusion_lr_multiplier: 5          # fusion at lr x 5, classifier at lr x 50 (METER)
  head_lr_multiplier: 50
  frozen_lr: 1.0e-3                # fusion and classifier on cached features
  batch_size: 32
  epochs: 30
  patience: 8                      # stop after this many epochs without a better validation score
  outputs: {metrics: metrics/vqa.json, report: reports/vqa.md, model: data/vqa}
  cache: .cache/features           # token features per (model weights, benchmark version, split)
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import PathValue, Rate, S3Params, Section, Slug

VQA_FORMATS = ("auto", "vqa_rad", "slake")


class VqaBenchmarkSpec(Section):
    """A VQA benchmark as users download it, in a folder or under `s3://bucket/prefix`."""

    name: Slug
    path: str  # a folder or s3://bucket/prefix
    format: Literal[VQA_FORMATS] = "auto"  # auto: detected from the files (and logged)


class FusionParams(Section):
    """The co-attention fusion (METER's): `layers` layers of self- and cross-attention in both
    streams at `width` with `heads` heads. METER's own is 6 layers at 768 with 12 heads; the
    default (1 layer at 64) trains on a CPU over cached features in seconds per epoch (the demo's
    stand-ins); raise it for the real benchmarks (bench/vqa.py: what each costs)."""

    width: Annotated[int, Field(ge=16, le=4096)] = 64
    layers: Annotated[int, Field(ge=1, le=24)] = 1
    heads: Annotated[int, Field(ge=1, le=64)] = 4
    mlp_ratio: Annotated[float, Field(gt=0, le=16, strict=False)] = 4.0
    dropout: Rate = 0.1

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        return self


class VqaOutputs(Section):
    metrics: PathValue = Path("metrics/vqa.json")
    report: PathValue = Path("reports/vqa.md")
    model: PathValue = Path("data/vqa")  # <benchmark>/: the answer model and its vocabulary


DEMO_BENCHMARKS = (
    VqaBenchmarkSpec(name="vqa-rad", path="data/benchmarks/vqa/vqa_rad"),
    VqaBenchmarkSpec(name="slake", path="data/benchmarks/vqa/slake"),
)


class VqaParams(Section):
    """`biomedclip vqa`: an answer model on the pipeline's encoders, scored without leaks."""

    model: str | None = None  # default: the train stage's model
    benchmarks: Annotated[tuple[VqaBenchmarkSpec, ...],
                          Field(strict=False, min_length=1)] = DEMO_BENCHMARKS
    languages: Annotated[tuple[str, ...], Field(strict=False, min_length=1)] = ("en",)
    s3: S3Params = S3Params()
    fusion: FusionParams = FusionParams()
    freeze_encoders: bool = True
    lr: Annotated[float, Field(gt=0, strict=False)] = 5e-6  # the encoders' when fine-tuned
    fusion_lr_multiplier: Annotated[float, Field(gt=0, strict=False)] = 5.0
    head_lr_multiplier: Annotated[float, Field(gt=0, strict=False)] = 50.0
    frozen_lr: Annotated[float, Field(gt=0, strict=False)] = 1e-3  # fusion, head: encoders frozen
    weight_decay: Annotated[float, Field(ge=0, strict=False)] = 0.01
    warmup_fraction: Rate = 0.1  # of the steps, then cosine decay
    batch_size: Annotated[int, Field(ge=1)] = 32  # questions per step, over all processes
    epochs: Annotated[int, Field(ge=1)] = 30
    patience: Annotated[int, Field(ge=1)] | None = 8  # epochs without a better validation score
    # VQA-RAD has no validation split: this part of its train images is held out for selection.
    val_fraction: Annotated[float, Field(gt=0, lt=1, strict=False)] = 0.1
    seed: Annotated[int, Field(ge=0)] = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast, as the trainer's
    nproc: Annotated[int, Field(ge=1)] = 1  # processes (torchrun) when fine-tuning the encoders
    embed_batch_size: Annotated[int, Field(ge=1)] = 32
    cache: PathValue = Path(".cache/features")  # the linear probe's feature cache, shared
    top_k: Annotated[int, Field(ge=1)] = 5  # answers `biomedclip vqa ask` prints
    outputs: VqaOutputs = VqaOutputs()

    @model_validator(mode="after")
    def _names_unique(self) -> Self:
        names = [spec.name for spec in self.benchmarks]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"benchmark names must be unique: {doubled} appear more than once")
        if self.nproc > 1 and self.freeze_encoders:
            raise ValueError("nproc > 1 trains the encoders with DDP: set freeze_encoders: false "
                             "(frozen encoders train the answer model in one process)")
        return self

    def benchmark(self, name: str) -> VqaBenchmarkSpec:
        """The benchmark called `name` (an error naming the configured ones)."""
        for spec in self.benchmarks:
            if spec.name == name:
                return spec
        raise ValueError(f"no VQA benchmark {name!r} in vqa.benchmarks "
                         f"({', '.join(s.name for s in self.benchmarks)})")
