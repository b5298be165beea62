"""The pipeline's stages, each defined once.

A stage has one name: its DVC stage in `dvc.yaml`, its Prefect flow, its `biomedclip` command,
its flow-run record (`reports/flow-runs/<name>.json`) and its artifact. This table says, for each,
the library entry that does the work (`run(params, context) -> report`, `biomedclip.stage`), the
outputs it writes (as the params name them), and the errors it expects (reported as one line with
an exit code, never a traceback). The Prefect flows (`biomedclip.pipeline.flows`), the CLI, the
flow-run records (`biomedclip.provenance`), the exit codes and the tests all read it; nothing
keeps a second list. `dvc.yaml` repeats each stage's outputs for DVC, and a test checks that its
deps cover the modules each entry imports.

Adding a stage: its library module with the entry, a row here, its `dvc.yaml` stage, its params
section, `flows/<name>.py` (three lines), its command in `cli.py` where it takes options, its tests.

Nothing here imports Prefect: the CLI reads this table without paying for it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biomedclip.params import Params
    from biomedclip.stage import StageReport

USAGE, FAILED = 2, 1  # exit codes: bad params or options; the work failed
# Errors any entry point reports as one line ("module:Class"), whatever the stage: a bad params
# file or option (USAGE), and failures with a cause the message names (FAILED).
USAGE_ERRORS = ("biomedclip.config:ConfigError", "biomedclip.atomic_io:UnsafeOutput")
COMMON_ERRORS = (
    "biomedclip.storage:ObjectReadError",
    "biomedclip.models:ModelSourceError",
    "biomedclip.tracking:TrackingUnavailable",
    "biomedclip.tracking:NotInStore",
    "biomedclip.register.registry:RegistryError",
    "biomedclip.locks:Busy",
    "builtins:FileNotFoundError",
    "builtins:ValueError",
)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline (see the module's docstring)."""

    name: str
    entry: str  # "module:function", the library entry: run(params, context, **options) -> report
    outputs: Callable[[Params], tuple[Path, ...]]  # what it writes, as the params name them
    summary: str  # one line, for --help and the docs
    errors: tuple[str, ...] = ()  # "module:Class": expected failures of this stage
    builds_model: bool = False  # a registered model is built from its outputs (the lineage)
    retries: int = 0  # the flow retries the whole entry this often (transient failures)
    # Where the flow spreads the entry's work items as tasks of its own: the Dask cluster's size,
    # or None where the entry's own threads do better (they share the work finer than tasks).
    fan_out: Callable[[Params], int | None] | None = None

    @property
    def module(self) -> str:
        return self.entry.split(":", 1)[0]

    def function(self) -> Callable[..., StageReport]:
        module, name = self.entry.split(":", 1)
        return getattr(importlib.import_module(module), name)


STAGES: tuple[Stage, ...] = (
    Stage("demo-data", "biomedclip.demo.stage:run",
          lambda p: (p.demo.benchmark.out / p.demo.benchmark.name, p.demo.benchmark.native, p.demo.benchmark.vqa.out),
          "the demo's zero-shot benchmark, and stand-ins of the paper's benchmarks (VQA too) in their own formats"),
    Stage("benchmark-hashes", "biomedclip.ingest.benchmark_hashes:run",
          lambda p: (p.ingest.decontaminate.hashes,),
          "the pHash of every benchmark image, which the ingest decontaminates the corpus against",
          errors=("biomedclip.evaluate.benchmarks:BenchmarkError",), builds_model=True, retries=2),
    Stage("ingest", "biomedclip.ingest.stage:run",
          lambda p: (p.ingest.outputs.pairs, p.ingest.outputs.rejects, p.ingest.outputs.images, p.ingest.outputs.panels,
                     p.ingest.outputs.panel_examples, p.ingest.outputs.report),
          "PMC articles -> the figure-caption pairs manifest, panel pairs, rejects and image store",
          builds_model=True, fan_out=lambda p: p.ingest.workers if p.ingest.task_runner == "dask" else None),
    Stage("validate", "biomedclip.validate.stage:run",
          lambda p: (p.validate.outputs.result, p.validate.outputs.data_docs),
          "the Great Expectations gate on the manifest: a failing critical check stops the pipeline",
          errors=("biomedclip.validate.gate:ValidationFailed", "biomedclip.validate.staging:ValidationInputError"),
          builds_model=True),
    Stage("shard", "biomedclip.shard.stage:run",
          lambda p: (p.shard.outputs.shards, p.shard.outputs.report),
          "WebDataset tar shards per split, open_clip's layout",
          errors=("biomedclip.shard.writer:ShardInputError",), builds_model=True, retries=1),
    Stage("tokenizer", "biomedclip.train.tokenizer:run",
          lambda p: (p.train.tokenizer.out,),
          "the text tower's vocabulary: the init checkpoint's, PubMedBERT's, or WordPiece from the captions",
          builds_model=True),
    Stage("train", "biomedclip.train.stage:run",
          lambda p: (p.train.outputs.dir, p.train.outputs.metrics, p.train.outputs.loss_curve),
          "contrastive pretraining with open_clip, one process or many (torchrun)",
          errors=("biomedclip.train.loop:TrainingError", "biomedclip.train.data:ShardError",
                  "biomedclip.train.launch:TrainingFailed"), builds_model=True, retries=1),
    Stage("evaluate", "biomedclip.evaluate.stage:run",
          lambda p: (p.evaluate.outputs.metrics, p.evaluate.outputs.plots, p.evaluate.outputs.report,
                     p.evaluate.outputs.report.with_suffix("")),
          "retrieval, zero-shot and few-shot classification and model tests, as the paper measured",
          errors=("biomedclip.evaluate.benchmarks:BenchmarkError",), builds_model=True),
    Stage("card", "biomedclip.card.stage:run",
          lambda p: (p.card.out,),
          "the dataset card: the corpus as a page people read",
          errors=("biomedclip.card.stats:CardInputError",)),
    Stage("register", "biomedclip.register.stage:run",
          lambda p: (p.register.output,),
          "the trained model as a new registry version (alias challenger), with its lineage",
          retries=2),
    Stage("vqa", "biomedclip.vqa.stage:run",
          lambda p: (p.vqa.outputs.model, p.vqa.outputs.metrics, p.vqa.outputs.report),
          "visual question answering on VQA-RAD and SLAKE: an answer model on the pipeline's encoders",
          errors=("biomedclip.vqa.formats:VqaFormatError", "biomedclip.vqa.features:TokenError",
                  "biomedclip.vqa.model_folder:AnswerModelError", "biomedclip.vqa.stage:VqaFailed")),
    Stage("embed", "biomedclip.embed.stage:run",
          lambda p: (p.embed.out,),
          "every kept pair and panel pair of the corpus embedded by one model (float16, resumable)",
          errors=("biomedclip.embed.inputs:EmbedInputError",)),
    Stage("index", "biomedclip.search.stage:run",
          lambda p: (p.index.out, p.index.metrics),
          "the vector index over the corpus's image embeddings, with what a search result shows",
          errors=("biomedclip.search.build:IndexInputError",)),
)
BY_NAME = {stage.name: stage for stage in STAGES}


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"no pipeline stage is named {name!r}; the stages: {', '.join(BY_NAME)}") from None


def model_input_stages() -> tuple[str, ...]:
    """The stages a registered model is built from, in pipeline order (its lineage)."""
    return tuple(s.name for s in STAGES if s.builds_model)


def _is_one_of(exc: BaseException, names: Iterable[str]) -> bool:
    """`exc` is an instance of one of the classes named. A module never imported cannot have
    raised its errors, so none is imported just to check."""
    for name in names:
        module, cls = name.split(":", 1)
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, cls)):
            return True
    return False


def exit_code(exc: BaseException, extra: Iterable[str] = ()) -> int | None:
    """The exit code of an expected error (of any stage, or one of `extra`), None for anything
    else: a bug, whose traceback shows."""
    if _is_one_of(exc, USAGE_ERRORS):
        return USAGE
    stage_errors = (name for s in STAGES for name in s.errors)
    if _is_one_of(exc, (*COMMON_ERRORS, *stage_errors, *extra)):
        return FAILED
    return None


# Expected, yet worth a retry: an unreachable tracking server or object store may be back soon.
TRANSIENT = ("biomedclip.tracking:TrackingUnavailable", "biomedclip.storage:ObjectReadError")


def expected_by(stage_: Stage, exc: BaseException) -> bool:
    """`exc` is a failure of `stage_`'s input or params, which no retry can fix."""
    return _is_one_of(exc, (*USAGE_ERRORS, *COMMON_ERRORS, *stage_.errors)) and not _is_one_of(exc, TRANSIENT)
