"""Training on several processes: real `torchrun`, 2 gloo processes, no mocks.

1. The sharded contrastive loss (open_clip's ClipLoss, local_loss + gather_with_grad) under
   DistributedDataParallel gives the loss and every gradient of one process on the whole batch.
2. `biomedclip train --nproc 2` end to end: one MLflow run (rank 0 alone tracks), one set of
   outputs, checkpoints holding both ranks' RNG states.
3. SLURM's variables map onto torch.distributed's.
4. A global batch that does not split over the processes stops with the numbers named.

Inputs for 2 and 4 are the real shards and tokenizer of the noisy demo corpus (`ingested_noisy`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from biomedclip.train.distributed import _from_slurm
from biomedclip.train.tokenizer import build_tokenizer, text_directory

from .conftest import REPO

CLI = Path(sys.executable).parent / "biomedclip"
# Variables that would make a child join (or skip) a process group we did not start.
FOREIGN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
           "GROUP_RANK", "TORCHELASTIC_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    env["CUDA_VISIBLE_DEVICES"] = ""  # gloo on CPU, also on a machine with GPUs
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(command: list, *, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-8000:]}"


# ---------------------------------------------------------------------------------------------
# 1. Loss and gradients: 2 processes == 1 process on the whole batch

GLOBAL_BATCH = 8
CAPTIONS = [
    "Axial MRI of the brain shows a hyperintense lesion in the left frontal lobe.",
    "Western blot of protein expression in treated and untreated cells.",
    "Kaplan-Meier survival curves of patients with high and low gene expression.",
    "Histology of liver tissue stained with hematoxylin and eosin at high magnification.",
    "Chest radiograph showing bilateral infiltrates in the lower lobes.",
    "Bar chart of mean cell viability after treatment with increasing doses.",
    "Confocal microscopy of neurons labelled with a green fluorescent marker.",
    "Flow chart of patient selection and exclusion in the cohort study.",
]

EQUIVALENCE_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from biomedclip.train.distributed import close_world, init_world
    from biomedclip.train.model import build
    from biomedclip.train.step import clip_loss, contrastive_backward

    text_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    captions = sys.argv[3].split("|")
    world = init_world()
    torch.manual_seed(0)
    bundle = build("biomedclip-tiny", text_dir)
    model = bundle.model.eval()  # no dropout: the two runs compute the same function
    generator = torch.Generator().manual_seed(1234)
    images = torch.randn(len(captions), 3, 96, 96, generator=generator)
    texts = bundle.tokenizer(captions)
    per = len(captions) // world.size
    rows = slice(world.rank * per, (world.rank + 1) * per)
    net = DistributedDataParallel(model) if world.distributed else model
    loss = contrastive_backward(net, clip_loss(world.rank, world.size), [(images[rows], texts[rows])])
    if world.distributed:
        dist.all_reduce(loss)
        loss /= world.size
    if world.is_main:
        torch.save({"world": world.size, "loss": loss,
                    "grads": {n: (None if p.grad is None else p.grad.detach().clone())
                              for n, p in model.named_parameters()}}, out)
    close_world(world)
""")


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory) -> Path:
    """A WordPiece vocabulary of a few synthetic captions and the tiny profile's BERT config."""
    root = tmp_path_factory.mktemp("text")
    build_tokenizer(iter(CAPTIONS * 3), root / "tokenizer", vocab_size=300, min_frequency=1)
    return text_directory("biomedclip-tiny", root / "tokenizer", root / "text")


@pytest.mark.integration
def test_two_processes_give_the_loss_and_gradients_of_one(tiny_text_dir, tmp_path):
    script = tmp_path / "equivalence.py"
    script.write_text(EQUIVALENCE_SCRIPT)
    captions = "|".join(CAPTIONS)
    assert len(CAPTIONS) == GLOBAL_BATCH
    two = run([*torchrun(2), script, tiny_text_dir, tmp_path / "two.pt", captions], cwd=tmp_path)
    assert two.returncode == 0, explain(two)
    one = run([sys.executable, script, tiny_text_dir, tmp_path / "one.pt", captions], cwd=tmp_path)
    assert one.returncode == 0, explain(one)

    distributed = torch.load(tmp_path / "two.pt", weights_only=True)
    single = torch.load(tmp_path / "one.pt", weights_only=True)
    assert (distributed["world"], single["world"]) == (2, 1)
    assert torch.isfinite(single["loss"]) and single["loss"] > 0
    torch.testing.assert_close(distributed["loss"], single["loss"], rtol=1e-5, atol=0)

    assert distributed["grads"].keys() == single["grads"].keys()
    missing = [n for n, g in single["grads"].items() if g is None]
    assert not missing, f"parameters without a gradient (DDP would need find_unused_parameters): {missing}"
    # The batch is not trivial: the gradients are far from zero, so matching them means something.
    assert single["grads"]["logit_scale"].abs() > 1e-4
    assert sum(float(g.abs().sum()) for g in single["grads"].values()) > 1.0
    mismatched = [n for n, g in single["grads"].items()
                  if distributed["grads"][n] is None
                  or not torch.allclose(distributed["grads"][n], g, atol=1e-6, rtol=1e-4)]
    assert not mismatched, f"{len(mismatched)} of {len(single['grads'])} gradients differ: {mismatched[:10]}"


# ---------------------------------------------------------------------------------------------
# Real shards + tokenizer, and a params file pointing into tmp_path


@pytest.fixture(scope="module")
def train_inputs(ingested_noisy, tiny_world) -> dict[str, Path]:
    """The session's shards of the noisy corpus (64 samples each) and its WordPiece tokenizer."""
    ingest, _, _ = ingested_noisy
    assert tiny_world.split_sizes["train"] >= 64
    return {"pairs": ingest.outputs.pairs, "images": ingest.outputs.images,
            "shards": tiny_world.shards.outputs.shards, "tokenizer": tiny_world.tokenizer}


def write_params(folder: Path, inputs: dict, **train) -> Path:
    """The repo's params.yaml with shard/train paths in `folder` and `train` keys changed."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["outputs"].update(pairs=str(inputs["pairs"]), images=str(inputs["images"]))
    params["shard"]["outputs"].update(shards=str(inputs["shards"]),
                                      manifest=str(inputs["shards"] / "manifest.json"),
                                      report=str(folder / "metrics" / "shard.json"))
    section = params["train"]
    section["tokenizer"]["out"] = str(inputs["tokenizer"])
    section["outputs"] = {"dir": str(folder / "out"), "run_info": str(folder / "out" / "run.json"),
                          "loss_curve": str(folder / "metrics" / "train_loss.csv"),
                          "metrics": str(folder / "metrics" / "train.json")}
    params["tracking"].update(uri=f"sqlite:///{folder / 'mlflow.db'}", experiment="ddp-test",
                              system_metrics=False)
    for key, value in train.items():
        if key == "tracking":
            params["tracking"].update(value)
        elif isinstance(value, dict):
            section[key].update(value)
        else:
            section[key] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# 2. End to end under torchrun


@pytest.mark.integration
def test_train_under_torchrun_tracks_and_writes_once(train_inputs, tmp_path):
    steps = 4
    params_path = write_params(tmp_path, train_inputs, epochs=1, samples_per_epoch=8 * steps,
                               global_batch=8, workers=0, shuffle_buffer=64, checkpoint_every=2,
                               log_every=1, warmup_steps=1, tracking={"enabled": True})
    result = run([CLI, "--params", params_path, "train", "--nproc", "2"], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, explain(result)
    log = result.stdout + result.stderr

    # Only rank 0 writes: one final model, one run.json, one checkpoint per save.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "final", "run.json", "text"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest", "step-00000002", "step-00000004"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    final = {p.name for p in (out / "final").iterdir()}
    assert {"README.md", "config.json", "open_clip_config.json", "open_clip_model.safetensors", "vocab.txt"} <= final
    assert not [name for name in final if name.startswith(".") or name == "text"], final
    assert not [p for p in tmp_path.rglob(".*") if ".partial-" in p.name or ".old-" in p.name]
    assert log.count("trained biomedclip-tiny") == 1, explain(result)
    assert log.count("checkpoint " + str(out / "checkpoints")) == 2, explain(result)
    curve = (tmp_path / "metrics" / "train_loss.csv").read_text().splitlines()
    assert curve[0] == "step,epoch,loss,lr,logit_scale" and len(curve) == 1 + steps

    # The checkpoint carries every rank's RNG state, and they differ (per-rank dropout seeds).
    for name in ("step-00000002", "step-00000004"):
        state = torch.load(out / "checkpoints" / name / "state.pt", weights_only=True)
        assert len(state["rng"]) == 2
        assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert state["step"] == steps and len(state["history"]) == steps

    # One MLflow run (rank 0 alone tracks), finished, with the metrics of every step.
    from mlflow.tracking import MlflowClient

    info = json.loads((out / "run.json").read_text())
    assert info["steps"] == steps and state["mlflow_run_id"] == info["mlflow_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ddp-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [info["mlflow_run_id"]]
    tracked = runs[0]
    assert tracked.info.status == "FINISHED"
    assert tracked.data.params["global_batch"] == "8"
    assert {"loss", "lr", "logit_scale", "samples_per_s", "epoch"} <= tracked.data.metrics.keys()
    losses = client.get_metric_history(tracked.info.run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, steps + 1))
    final_loss = json.loads((tmp_path / "metrics" / "train.json").read_text())["final_loss"]
    assert final_loss == pytest.approx(max(losses, key=lambda m: m.step).value)
    assert [h["loss"] for h in state["history"]] == [m.value for m in sorted(losses, key=lambda m: m.step)]


# ---------------------------------------------------------------------------------------------
# 3. SLURM


@pytest.mark.unit
def test_slurm_variables_map_onto_torch_distributed():
    env = {"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}
    _from_slurm(env)
    assert env["RANK"] == "1" and env["WORLD_SIZE"] == "4" and env["LOCAL_RANK"] == "1"
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["MASTER_PORT"] == "29500"

    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.7",
           "MASTER_PORT": "12345"}
    _from_slurm(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("3", "4", "0")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.0.0.7", "12345")


@pytest.mark.unit
@pytest.mark.parametrize("env", [
    {"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "1", "SLURM_NTASKS": "4"},  # torchrun inside srun
    {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"},  # a one-task allocation
    {"SLURM_PROCID": "0"},  # SLURM_NTASKS unset: one task
])
def test_slurm_variables_left_alone(env):
    before = dict(env)
    _from_slurm(env)
    assert env == before


# ---------------------------------------------------------------------------------------------
# 4. A global batch that does not split over the processes


@pytest.mark.integration
def test_global_batch_that_does_not_split_fails_naming_the_numbers(train_inputs, tmp_path):
    params_path = write_params(tmp_path, train_inputs, epochs=1, samples_per_epoch=18, global_batch=9,
                               workers=0, tracking={"enabled": False})
    result = run([CLI, "--params", params_path, "train", "--nproc", "2"], cwd=tmp_path, timeout=180)
    assert result.returncode == 1, explain(result)
    assert "error: global_batch 9 / accum_freq 1 = 9 does not split evenly over 2 processes" in result.stderr
    assert "Traceback" not in result.stderr.split("does not split evenly")[0], explain(result)
    assert not (tmp_path / "out" / "final").exists() and not (tmp_path / "out" / "run.json").exists()
