"""The trainer: one process or one of many (torchrun / srun), rank 0 alone logs and writes.

    python -m biomedclip.train [--params params.yaml] [--resume | --fresh]
    torchrun --nproc_per_node 8 -m biomedclip.train        # one node, 8 GPUs (NCCL)
    biomedclip train --nproc 2                               # the same, launched for you

Outputs under `train.outputs.dir`: `checkpoints/step-N/` (resumable), `final/` (the model in the
published BiomedCLIP layout, `biomedclip.models.write_model_folder`: plain open_clip loads it with
`local-dir:`), `text/` (the text tower the model is built from), and
`run.json` (the MLflow run id and digests later stages read), plus the loss curve (DVC plot)
and `metrics/train.json` (final loss and validation retrieval).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes
from biomedclip.console import progress, stderr_is_terminal
from biomedclip.digests import file_sha256
from biomedclip.evaluate.embedding import ModelEncoder, embed_pairs, shard_samples
from biomedclip.evaluate.retrieval import retrieval_metrics
from biomedclip.models import WEIGHT_FILES, TextTower, write_model_folder
from biomedclip.shard.params import ShardParams
from biomedclip.tracking import Tracker, TrackingParams
from biomedclip.tracking import tracker as make_tracker
from biomedclip.train import checkpoint
from biomedclip.train.data import ShardStream, loader, stream_seed, train_shards
from biomedclip.train.distributed import World, close_world, init_world
from biomedclip.train.model import Bundle, build, parameter_count
from biomedclip.train.params import TrainParams
from biomedclip.train.report import loss_figure, model_card
from biomedclip.train.step import MAX_LOGIT_SCALE, clip_loss, contrastive_backward, lr_at
from biomedclip.train.tokenizer import hub_id, text_directory

log = logging.getLogger(__name__)


class Resume(StrEnum):
    """What a training run does with the checkpoints it finds: `auto` continues only a checkpoint
    of the same run (same recipe, shards, vocabulary and process count), `always` insists on one,
    `never` starts over (removing the old run's checkpoints)."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class TrainingError(RuntimeError):
    """A training run that cannot start or continue (names what is wrong)."""


def run_digest(params: TrainParams, shard_manifest_sha: str, tokenizer_dir: Path, processes: int) -> str:
    """What determines the run's result: the recipe, the shards, the vocabulary and the number of
    processes (each has its own data stream). A checkpoint resumes only a run with the same digest."""
    recipe = params.model_dump(mode="json", exclude={"checkpoint_every", "log_every", "outputs", "nproc"})
    vocab = sorted(p.name + ":" + file_sha256(p) for p in tokenizer_dir.iterdir() if p.is_file())
    blob = json.dumps({"recipe": recipe, "shards": shard_manifest_sha, "vocab": vocab, "processes": processes},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def micro_batch(params: TrainParams, processes: int) -> int:
    """Samples per process and micro-batch; the global batch must split evenly."""
    per_step = params.global_batch // params.accum_freq
    if per_step % processes:
        raise TrainingError(f"global_batch {params.global_batch} / accum_freq {params.accum_freq} "
                            f"= {per_step} does not split evenly over {processes} processes")
    return per_step // processes


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on gains, biases, norms, embeddings' scale and the temperature (open_clip)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def _text_weights(params: TrainParams) -> bool:
    folder = params.tokenizer.pubmedbert_dir
    return folder is not None and any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin"))


def _autocast(params: TrainParams, world: World) -> contextlib.AbstractContextManager:
    if params.precision == "bf16":
        return torch.autocast(device_type=world.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _gather_rng(world: World) -> list[dict[str, Any]]:
    state = checkpoint.rng_state()
    if not world.distributed:
        return [state]
    states: list[Any] = [None] * world.size
    dist.all_gather_object(states, state)
    return states


def _mean_over_ranks(value: torch.Tensor, world: World) -> float:
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.size
    return float(value)


@dataclass
class _Position:
    """Where a run is: steps done, the loss curve so far, its MLflow run (restored on resume)."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    run_id: str | None = None


@dataclass
class _Window:
    """Samples and data-loading time since the last logged step (for samples/s)."""

    samples: int = 0
    data: float = 0.0
    start: float = field(default_factory=time.perf_counter)


class Trainer:
    def __init__(self, params: TrainParams, shards: ShardParams, tracking: TrackingParams, world: World) -> None:
        self.params, self.shards, self.tracking, self.world = params, shards, tracking, world
        self.out = params.outputs.dir
        self.urls, self.train_samples = train_shards(shards.outputs.shards)
        self.micro_batch = micro_batch(params, world.size)
        samples = params.samples_per_epoch or self.train_samples
        self.steps_per_epoch = max(1, samples // params.global_batch)
        self.total_steps = self.steps_per_epoch * params.epochs
        self.shard_manifest_sha = file_sha256(shards.outputs.manifest)
        self.digest = run_digest(params, self.shard_manifest_sha, params.tokenizer.out, world.size)

    # -- set-up ------------------------------------------------------------------------------
    def build(self) -> Bundle:
        text_dir = self.out / "text"
        if self.world.is_main:
            tokenizer_dir = self.params.tokenizer.out
            if not (tokenizer_dir / "vocab.txt").is_file() and not (tokenizer_dir / "tokenizer.json").is_file():
                raise TrainingError(f"{tokenizer_dir}: no tokenizer; run the tokenizer stage "
                                    "(`dvc repro tokenizer`) first")
            text_directory(self.params.profile, tokenizer_dir, text_dir)
        if self.world.distributed:
            dist.barrier()
        torch.manual_seed(self.params.seed)  # the same initial weights on every rank
        bundle = build(self.params.profile, text_dir, init_from=self.params.init_from,
                       tracking=self.tracking, text_weights=_text_weights(self.params))
        if self.params.grad_checkpointing:
            bundle.model.set_grad_checkpointing(True)
        torch.manual_seed(stream_seed(self.params.seed, 1, self.world.rank))  # dropout, per rank
        return bundle

    # -- the run -----------------------------------------------------------------------------
    def run(self, *, resume: Resume, tracker: Tracker) -> dict[str, Any]:
        """Train to the last step (resuming as `resume` says: auto, always or never); rank 0 writes
        the outputs and returns the run info."""
        p, world = self.params, self.world
        bundle = self.build()
        model = bundle.model.to(world.device)
        self._announce(model)
        optimizer = torch.optim.AdamW(_param_groups(model, p.weight_decay), lr=p.lr, betas=p.betas, eps=p.eps)
        position = self._restore(resume, model, optimizer)
        ddp = DistributedDataParallel(model) if world.distributed else model
        if world.is_main:
            position.run_id = self._start_tracking(tracker, position)
        batches = self._batches(bundle, position.step)
        self._train(ddp, model, optimizer, batches, position, tracker)
        _drain(batches)
        if world.is_main:
            return self.finish(model, bundle, position.history, tracker, position.run_id)
        return {}

    def _announce(self, model: torch.nn.Module) -> None:
        p, world = self.params, self.world
        if world.is_main:
            log.info("%s: %s parameters; %d steps (%d epochs x %d), global batch %d = %d process(es) "
                     "x %d micro-batch x %d accumulation", p.profile, f"{parameter_count(model):,}",
                     self.total_steps, p.epochs, self.steps_per_epoch, p.global_batch, world.size,
                     self.micro_batch, p.accum_freq)

    def _restore(self, resume: Resume, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> _Position:
        """The latest checkpoint of this run (same digest) into the model, optimizer and RNG, or a
        fresh start (the old run's checkpoints removed). `always` insists on a checkpoint."""
        world = self.world
        ckpt_dir = self.out / "checkpoints"
        found = checkpoint.latest(ckpt_dir) if resume != Resume.NEVER else None
        state = checkpoint.load_state(found) if found is not None else None
        if state is not None and state["digest"] != self.digest:
            if resume == Resume.ALWAYS:
                raise TrainingError(f"{found} belongs to another run (different params, shards, vocabulary "
                                    "or process count); start over with --fresh")
            log.info("ignoring %s: it belongs to another run", found)
            state = None
        position = _Position()
        if state is not None:
            assert found is not None
            checkpoint.load_weights(found, model)
            optimizer.load_state_dict(state["optimizer"])
            position = _Position(state["step"], state["history"], state["mlflow_run_id"] or None)
            checkpoint.set_rng_state(state["rng"][world.rank])
            log.info("resuming from %s at step %d of %d", found, position.step, self.total_steps)
        elif resume == Resume.ALWAYS:
            raise TrainingError(f"--resume: no checkpoint in {ckpt_dir}")
        elif world.is_main and ckpt_dir.exists():  # a fresh start: the old run's checkpoints go
            shutil.rmtree(ckpt_dir)
        if world.distributed:
            dist.barrier()
        return position

    def _start_tracking(self, tracker: Tracker, position: _Position) -> str | None:
        """Start (or continue) the run's MLflow run; a new run records its inputs and digests."""
        p = self.params
        run_id = tracker.start(position.run_id, f"{p.profile}-{self.digest[:8]}", p.model_dump(mode="json"))
        if position.step == 0:
            sizes = json.loads(self.shards.outputs.manifest.read_text())["splits"]
            tracker.log_input("pmc-shards", self.shard_manifest_sha, str(self.shards.outputs.manifest),
                              "training", {s: {"samples": v["samples"], "shards": len(v["shards"])}
                                           for s, v in sizes.items()})
            tracker.set_tags({"biomedclip.digest": self.digest, "biomedclip.profile": p.profile,
                              "biomedclip.shard_manifest_sha256": self.shard_manifest_sha})
        return run_id

    def _batches(self, bundle: Bundle, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The run's one data loader, positioned at `step` (the batches before it skipped unread)."""
        p = self.params
        with torch.random.fork_rng(devices=[]):  # creating a loader draws from the RNG
            return iter(loader(ShardStream(
                self.urls, seed=p.seed, rank=self.world.rank, batch_size=self.micro_batch,
                batches_per_epoch=self.steps_per_epoch * p.accum_freq, start=step * p.accum_freq,
                total=self.total_steps * p.accum_freq, shuffle_buffer=p.shuffle_buffer,
                preprocess=bundle.preprocess_train, tokenizer=bundle.tokenizer), p.workers))

    def _train(self, ddp: torch.nn.Module, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batches: Iterator[tuple[torch.Tensor, torch.Tensor]], position: _Position, tracker: Tracker) -> None:
        p, world = self.params, self.world
        loss_fn = clip_loss(world.rank, world.size)
        autocast = _autocast(p, world)
        ddp.train()
        window = _Window()
        steps = range(position.step, self.total_steps)
        for step in progress(steps, total=len(steps), description="training") if world.is_main else steps:
            waited = time.perf_counter()
            micro = [next(batches) for _ in range(p.accum_freq)]
            micro = [(i.to(world.device, non_blocking=True), t.to(world.device, non_blocking=True)) for i, t in micro]
            window.data += time.perf_counter() - waited
            lr = lr_at(step, base=p.lr, warmup=p.warmup_steps, total=self.total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = contrastive_backward(ddp, loss_fn, micro, autocast=autocast)
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            window.samples += p.global_batch
            done = position.step = step + 1
            if done % p.log_every == 0 or done == self.total_steps:
                self._log_step(done, loss, lr, float(model.logit_scale.detach().exp()), window, position, tracker)
                window = _Window()
            if done % p.checkpoint_every == 0 or done == self.total_steps:
                self._checkpoint(done, model, optimizer, position)

    def _log_step(self, done: int, loss: torch.Tensor, lr: float, logit_scale: float, window: _Window,
                  position: _Position, tracker: Tracker) -> None:
        """One row of the loss curve (the loss averaged over ranks), to the history and MLflow."""
        mean_loss = _mean_over_ranks(loss.float(), self.world)
        seconds = time.perf_counter() - window.start
        row = {"step": done, "epoch": round(done / self.steps_per_epoch, 4), "loss": round(mean_loss, 6),
               "lr": lr, "logit_scale": round(logit_scale, 4),
               "samples_per_s": round(window.samples / seconds, 2),
               "data_time_fraction": round(window.data / seconds, 4)}
        position.history.append(row)
        tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step=done)
        if self.world.is_main and not stderr_is_terminal():  # plain lines where no bar is drawn
            log.info("step %d/%d loss %.4f lr %.2e %.1f samples/s", done, self.total_steps,
                     mean_loss, lr, row["samples_per_s"])

    def _checkpoint(self, done: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    position: _Position) -> None:
        rngs = _gather_rng(self.world)  # every rank takes part; rank 0 writes
        if self.world.is_main:
            checkpoint.save(self.out / "checkpoints", done, model, {
                "step": done, "optimizer": optimizer.state_dict(), "rng": rngs,
                "digest": self.digest, "history": position.history, "mlflow_run_id": position.run_id or ""})

    # -- outputs -----------------------------------------------------------------------------
    def finish(self, model: torch.nn.Module, bundle: Bundle, history: list[dict], tracker: Tracker,
               run_id: str | None) -> dict[str, Any]:
        p = self.params
        final = self.out / "final"
        validation = validation_retrieval(model, bundle, self.shards.outputs.shards / "val")
        # The tower has a hub id only where both its vocabulary and its config are the published
        # ones: the checkpoint's own vocabulary, in the profile that is the published architecture.
        tower_id = hub_id(p.tokenizer.out) if p.profile == "biomedclip" else None
        facts = {"profile": p.profile, "parameters": f"{parameter_count(model):,}",
                 "image size": bundle.config["vision_cfg"]["image_size"],
                 "context length": bundle.config["text_cfg"]["context_length"],
                 "initialised from": p.init_from or "random weights",
                 "training steps": f"{self.total_steps} x {p.global_batch} pairs",
                 "shard manifest sha256": self.shard_manifest_sha, "MLflow run": run_id or "(not tracked)"}
        with atomic_directory(final) as staging:
            write_model_folder(staging, final=final, weights=checkpoint.model_weights(model), model_cfg=bundle.config,
                               text=TextTower(self.out / "text", self.out / "text", tower_id),
                               card=model_card(title=f"BiomedCLIP ({p.profile})", facts=facts, hub_id=tower_id,
                                               folder=str(final),
                                               metrics={f"val/{k}": round(v, 4) for k, v in validation.items()}))
        metrics = {"steps": self.total_steps, "final_loss": history[-1]["loss"] if history else None,
                   "parameters": parameter_count(model), **{f"val/{k}": round(v, 6) for k, v in validation.items()}}
        atomic_write_bytes(p.outputs.metrics, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
        self._loss_curve(history)
        tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("val/")}, step=self.total_steps)
        tracker.log_artifact(final, "model")
        tracker.log_artifact(p.outputs.loss_curve)
        figure = loss_figure(history)
        if figure is not None:
            tracker.log_figure(figure, "loss_curve.png")
        info = {"mlflow_run_id": run_id, "digest": self.digest, "profile": p.profile,
                "model_dir": str(final), "shard_manifest_sha256": self.shard_manifest_sha,
                "model_sha256": file_sha256(final / WEIGHT_FILES[0]), "steps": self.total_steps}
        atomic_write_bytes(p.outputs.run_info, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
        tracker.finish()
        log.info("trained %s: final loss %s; validation %s", p.profile, metrics["final_loss"],
                 ", ".join(f"{k} {v:.3f}" for k, v in validation.items() if "recall_at" in k))
        return {**info, "metrics": metrics}

    def _loss_curve(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["step", "epoch", "loss", "lr", "logit_scale"],
                                extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_bytes(self.params.outputs.loss_curve, buffer.getvalue().encode())


def _drain(batches) -> None:
    """An epoch's loader is spent when its last batch is taken; reading on to the end lets its
    worker processes finish cleanly instead of being torn down mid-stream."""
    if batches is not None:
        for _ in batches:
            raise TrainingError("the data loader produced more batches than planned")


def validation_retrieval(model: torch.nn.Module, bundle: Bundle, folder: Path) -> dict[str, float]:
    """Retrieval on the validation split, embedded the way `evaluate` embeds (one rank, whole split)."""
    model.eval()
    image_features, text_features = embed_pairs(ModelEncoder(model, bundle.preprocess_val, bundle.tokenizer),
                                                shard_samples(folder), batch_size=128)
    if not len(image_features):
        log.warning("no validation shards in %s: skipping validation retrieval", folder)
        return {}
    metrics = retrieval_metrics(image_features, text_features)
    metrics["pairs"] = float(len(image_features))
    metrics["chance_recall_at_1"] = 1.0 / len(image_features)
    return metrics


def train(params: TrainParams, shards: ShardParams, tracking: TrackingParams, *,
          resume: Resume = Resume.AUTO) -> dict[str, Any]:
    """Run (or resume) the training of this process's rank; returns the run info on rank 0."""
    world = init_world()
    tracker = make_tracker(tracking, is_main=world.is_main)  # MLflow on rank 0 only
    try:
        trainer = Trainer(params, shards, tracking, world)
        return trainer.run(resume=resume, tracker=tracker)
    except BaseException:
        tracker.finish("FAILED") if tracker.run_id else None
        raise
    finally:
        close_world(world)
