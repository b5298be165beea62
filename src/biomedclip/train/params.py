"""The `train` section: the recipe, the tokenizer, the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import PathValue, Section


class TokenizerParams(Section):
    """The text tower's tokenizer: PubMedBERT's when a local copy exists, else one built here."""

    pubmedbert_dir: PathValue | None = None  # a local HF directory (vocab.txt, tokenizer files)
    vocab_size: Annotated[int, Field(ge=100, le=100_000)] = 8192  # WordPiece built from captions
    min_frequency: Annotated[int, Field(ge=1)] = 2
    out: PathValue = Path("data/tokenizer")


class TrainOutputs(Section):
    dir: PathValue = Path("data/train")  # checkpoints/, final/ (the model), text/ (tokenizer + config)
    run_info: PathValue = Path("data/train/run.json")  # MLflow run id and what later stages need
    loss_curve: PathValue = Path("metrics/train_loss.csv")  # DVC plot
    metrics: PathValue = Path("metrics/train.json")


class TrainParams(Section):
    """`biomedclip train`: contrastive pretraining with open_clip (the BiomedCLIP recipe)."""

    profile: Literal["biomedclip", "biomedclip-tiny"] = "biomedclip-tiny"
    # Continue from a model: a published-layout folder, hf-hub:<org>/<repo> (local cache), a model
    # of this project, models:/ or runs:/ (its weights must fit `profile`; the tokenizer stage then
    # takes its vocabulary).
    init_from: str | None = None
    tokenizer: TokenizerParams = TokenizerParams()
    epochs: Annotated[int, Field(ge=1)] = 16
    samples_per_epoch: Annotated[int, Field(ge=1)] | None = None  # default: the train split's size
    global_batch: Annotated[int, Field(ge=2)] = 64  # over all processes and accumulation steps
    accum_freq: Annotated[int, Field(ge=1)] = 1  # micro-batches per step (features cached, open_clip style)
    lr: Annotated[float, Field(gt=0, strict=False)] = 5e-4
    weight_decay: Annotated[float, Field(ge=0, strict=False)] = 0.2
    betas: Annotated[tuple[float, float], Field(strict=False)] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0, strict=False)] = 1e-6
    warmup_steps: Annotated[int, Field(ge=0)] = 40  # the paper: 2000
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (the paper's AMP)
    grad_checkpointing: bool = False
    seed: Annotated[int, Field(ge=0)] = 0
    workers: Annotated[int, Field(ge=0)] = 1  # data-loading processes per training process
    shuffle_buffer: Annotated[int, Field(ge=1)] = 1000
    nproc: Annotated[int, Field(ge=1)] = 1  # training processes on this machine (torchrun)
    checkpoint_every: Annotated[int, Field(ge=1)] = 50  # steps
    log_every: Annotated[int, Field(ge=1)] = 10  # steps
    outputs: TrainOutputs = TrainOutputs()

    @model_validator(mode="after")
    def _batch_divides(self) -> Self:
        if self.global_batch % self.accum_freq:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of "
                             f"accum_freq ({self.accum_freq})")
        return self
