"""The train stage on one process: profiles, learning, exact resume, accumulation, shards, MLflow.

1. The published `biomedclip` profile builds offline with BiomedCLIP's exact architecture.
2. The tiny profile learns: the logged loss falls well below chance (tests/test_session_model.py,
   on the session's model, in the xdist group that shares it).
3. A run killed with SIGKILL and resumed ends with the weights and loss curve of an uninterrupted
   run; `--resume` without a checkpoint, and checkpoints of other runs, are handled.
4. Gradient accumulation gives the loss and gradients of one batch of the same samples.
5. A missing or corrupt shard stops training with an error naming it.
6. MLflow (a real SQLite store) holds params, metrics, the dataset, tags and the model; with
   tracking off the same run trains identically and writes no store.
7. Retrieval metrics equal a naive full-matrix reference, ties included.

Inputs are the real ingest output of the noisy demo corpus (`ingested_noisy`), cut down to 28 pairs
(one figure per article, distinct captions and images): 16 train pairs in 2 shards, 8 val, 4 test.
Everything trains on CPU, also on a machine with a GPU.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from biomedclip.evaluate.retrieval import match_ranks, rank_metrics, retrieval_metrics
from biomedclip.ingest.params import IngestOutputs, IngestParams
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.shard.writer import write_shards
from biomedclip.tracking import TrackingParams
from biomedclip.train import checkpoint
from biomedclip.train.data import ShardError, train_shards
from biomedclip.train.loop import Resume, TrainingError, train
from biomedclip.train.model import build, register_profiles
from biomedclip.train.params import TokenizerParams, TrainOutputs, TrainParams
from biomedclip.train.step import clip_loss, contrastive_backward
from biomedclip.train.tokenizer import prepare_tokenizer, text_directory

SPLIT_SIZES = {"train": 16, "val": 8, "test": 4}
PER_SHARD = 8
# Variables that would make a child join a process group, or track to a store, we did not set up.
FOREIGN = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
           "GROUP_RANK", "TORCHELASTIC_RUN_ID", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
           "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def corpus(ingested_noisy, tmp_path_factory) -> SimpleNamespace:
    """28 pairs of the real ingest (one per article), their shards and a tokenizer."""
    ingest, _, _ = ingested_noisy
    root = tmp_path_factory.mktemp("train-corpus")
    table = pq.read_table(ingest.outputs.pairs)
    chosen, seen = [], {"pmcid": set(), "caption": set(), "image_sha256": set()}
    for row in sorted(table.to_pylist(), key=lambda r: r["pair_id"]):
        if any(row[key] in values for key, values in seen.items()):
            continue
        for key, values in seen.items():
            values.add(row[key])
        chosen.append(row)
    splits = [split for split, n in SPLIT_SIZES.items() for _ in range(n)]
    assert len(chosen) >= len(splits), "test precondition: enough distinct articles in the demo ingest"
    rows = [dict(row, split=split) for row, split in zip(chosen[:len(splits)], splits, strict=True)]
    pairs = root / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), pairs)
    shards = ShardParams(samples_per_shard=PER_SHARD, outputs=ShardOutputs(
        shards=root / "shards", manifest=root / "shards" / "manifest.json", report=root / "shard.json"))
    write_shards(IngestParams(outputs=IngestOutputs(pairs=pairs, images=ingest.outputs.images)), shards)
    tokenizer = TokenizerParams(out=root / "tokenizer", min_frequency=1)
    prepare_tokenizer(tokenizer, pairs)
    return SimpleNamespace(root=root, pairs=pairs, shards=shards, tokenizer=tokenizer,
                           captions=[r["caption"] for r in rows if r["split"] == "train"])


@pytest.fixture
def cpu(monkeypatch):
    """Train on CPU in this process, as the children do (CUDA_VISIBLE_DEVICES="")."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


OFF = TrackingParams(enabled=False)


def train_params(corpus, out: Path, **changes) -> TrainParams:
    """A few tiny steps, no tracking, every output under `out`."""
    base = dict(tokenizer=corpus.tokenizer, epochs=1, samples_per_epoch=16, global_batch=8, lr=5e-4,
                warmup_steps=2, workers=0, shuffle_buffer=16, checkpoint_every=1000, log_every=1,
                outputs=TrainOutputs(dir=out / "train", run_info=out / "train" / "run.json",
                                     loss_curve=out / "loss.csv", metrics=out / "train.json"))
    return TrainParams(**{**base, **changes})


def shards_copy(corpus, dest: Path) -> ShardParams:
    """A copy of the shard folder, to damage."""
    shutil.copytree(corpus.shards.outputs.shards, dest)
    return corpus.shards.model_copy(update={"outputs": ShardOutputs(
        shards=dest, manifest=dest / "manifest.json", report=dest.parent / "shard-copy.json")})


def loss_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def final_weights(params: TrainParams) -> dict[str, torch.Tensor]:
    return load_file(str(params.outputs.dir / "final" / "open_clip_model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:5]}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith("SLURM_")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    return env


def write_params_file(path: Path, shards: ShardParams, params: TrainParams) -> Path:
    """A whole params.yaml, tracking off: the stages before training keep their defaults."""
    path.write_text(yaml.safe_dump({"shard": shards.model_dump(mode="json"), "train": params.model_dump(mode="json"),
                                    "tracking": OFF.model_dump(mode="json")}, sort_keys=False))
    return path


def trainer_command(params_file: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "biomedclip.train", "--params", str(params_file), *flags]


def run_trainer(params_file: Path, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(trainer_command(params_file, *flags), cwd=cwd, env=child_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr[-6000:]}"
    return result


# ---------------------------------------------------------------------------------------------
# 1. The published architecture


@pytest.mark.unit
def test_biomedclip_profile_builds_offline_with_the_published_architecture(corpus, tmp_path):
    register_profiles()
    assert {"biomedclip", "biomedclip-tiny"} <= set(open_clip.list_models())
    text_dir = text_directory("biomedclip", corpus.tokenizer.out, tmp_path / "text")
    bundle = build("biomedclip", text_dir)
    model = bundle.model

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model.visual) == 86_191_872  # ViT-B/16 + linear projection to 512
    assert count(model.text) == 109_710_848  # BERT-base (BiomedBERT's 30,522 tokens) + mlp projection
    assert count(model) == 195_902_721  # + the logit scale
    assert model.text.transformer.embeddings.word_embeddings.num_embeddings == 30_522
    assert bundle.config["text_cfg"]["context_length"] == 256
    tokens = bundle.tokenizer(["Figure 1. Axial CT of the chest showing a nodule."])
    assert tokens.shape == (1, 256)
    pixels = bundle.preprocess_val(Image.new("RGB", (300, 200), (120, 30, 200))).unsqueeze(0)
    assert pixels.shape == (1, 3, 224, 224)
    model.eval()
    with torch.no_grad():
        assert model.encode_image(pixels).shape == (1, 512)
        assert model.encode_text(tokens).shape == (1, 512)


# ---------------------------------------------------------------------------------------------
# 2. The tiny profile learns: tests/test_session_model.py (the session's model, trained once)


# ---------------------------------------------------------------------------------------------
# 3. Resume


@pytest.mark.integration
def test_killed_run_resumes_to_the_uninterrupted_result(corpus, tmp_path):
    """12 steps over 2 epochs, checkpoints every 4: SIGKILL after the first, then --resume."""
    resume_params = dict(epochs=2, samples_per_epoch=48, checkpoint_every=4)  # 6 steps an epoch
    a = train_params(corpus, tmp_path / "a", **resume_params)
    b = train_params(corpus, tmp_path / "b", **resume_params)
    file_a = write_params_file(tmp_path / "a.yaml", corpus.shards, a)
    file_b = write_params_file(tmp_path / "b.yaml", corpus.shards, b)
    run_trainer(file_a, cwd=tmp_path)

    latest = b.outputs.dir / "checkpoints" / checkpoint.LATEST
    log = tmp_path / "b-killed.log"
    with log.open("w") as stderr:  # a file, not a pipe: a full pipe would stall the child
        child = subprocess.Popen(trainer_command(file_b), cwd=tmp_path, env=child_env(),
                                 stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 240
        while not latest.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.poll() is None, f"run B ended before it could be killed:\n{log.read_text()[-4000:]}"
        assert latest.exists(), "run B wrote no checkpoint in time"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (b.outputs.dir / "final").exists()
    interrupted_at = int(latest.read_text().strip().removeprefix("step-"))
    assert 4 <= interrupted_at < 12

    resumed = run_trainer(file_b, "--resume", "always", cwd=tmp_path)
    # It did resume (a fresh start would also end with A's weights): the log names the checkpoint.
    assert f"step-{interrupted_at:08d}" in resumed.stderr and "resuming" in resumed.stderr
    assert_same_weights(final_weights(a), final_weights(b))
    rows_a, rows_b = loss_rows(a.outputs.loss_curve), loss_rows(b.outputs.loss_curve)
    assert [int(r["step"]) for r in rows_a] == list(range(1, 13))
    assert rows_b == rows_a
    info_a, info_b = (json.loads(p.outputs.run_info.read_text()) for p in (a, b))
    assert info_b["model_sha256"] == info_a["model_sha256"] and info_b["digest"] == info_a["digest"]
    # A checkpoint is plain tensors and containers: it loads without unpickling objects.
    state = torch.load(b.outputs.dir / "checkpoints" / "step-00000012" / "state.pt", weights_only=True)
    assert state["step"] == 12 and state["digest"] == info_b["digest"]
    assert [row["step"] for row in state["history"]] == list(range(1, 13))
    assert set(state["optimizer"]) == {"state", "param_groups"}


@pytest.mark.unit
def test_resume_without_a_checkpoint_is_an_error_naming_the_folder(corpus, tmp_path, cpu):
    params = train_params(corpus, tmp_path)
    with pytest.raises(TrainingError, match="no checkpoint") as error:
        train(params, corpus.shards, OFF, resume=Resume.ALWAYS)
    assert str(params.outputs.dir / "checkpoints") in str(error.value)
    assert not (params.outputs.dir / "final").exists()


@pytest.mark.unit
def test_a_checkpoint_of_other_params_is_refused_or_ignored(corpus, tmp_path, cpu):
    """Another lr: `always` refuses it, `auto` trains from scratch (as a fresh run would)."""
    old = train_params(corpus, tmp_path / "run", lr=2e-3, checkpoint_every=1)
    train(old, corpus.shards, OFF)
    old_state = torch.load(checkpoint.latest(old.outputs.dir / "checkpoints") / "state.pt", weights_only=True)
    new = old.model_copy(update={"lr": 5e-4})
    with pytest.raises(TrainingError, match="another run"):
        train(new, corpus.shards, OFF, resume=Resume.ALWAYS)
    train(new, corpus.shards, OFF, resume=Resume.AUTO)
    fresh = train_params(corpus, tmp_path / "fresh", checkpoint_every=1)
    train(fresh, corpus.shards, OFF, resume=Resume.NEVER)
    assert_same_weights(final_weights(new), final_weights(fresh))
    assert loss_rows(new.outputs.loss_curve) == loss_rows(fresh.outputs.loss_curve)
    state = torch.load(checkpoint.latest(new.outputs.dir / "checkpoints") / "state.pt", weights_only=True)
    assert state["digest"] != old_state["digest"]


@pytest.mark.unit
def test_a_checkpoint_of_another_vocabulary_is_refused_or_ignored(corpus, tmp_path, cpu):
    """A rebuilt tokenizer (another vocabulary size) changes the run: its old checkpoints go unused."""
    old = train_params(corpus, tmp_path / "run", checkpoint_every=1)
    train(old, corpus.shards, OFF)
    tokenizer = TokenizerParams(out=tmp_path / "tokenizer", min_frequency=3)
    prepare_tokenizer(tokenizer, corpus.pairs)
    assert (tokenizer.out / "vocab.txt").read_text() != (corpus.tokenizer.out / "vocab.txt").read_text()
    new = old.model_copy(update={"tokenizer": tokenizer})
    with pytest.raises(TrainingError, match="another run"):
        train(new, corpus.shards, OFF, resume=Resume.ALWAYS)
    info = train(new, corpus.shards, OFF, resume=Resume.AUTO)
    assert info["steps"] == 2


@pytest.mark.unit
def test_every_checkpoint_is_resumable_when_it_is_written(corpus, tmp_path, monkeypatch, cpu):
    """A run that ignores another run's checkpoints (higher step numbers) must not delete its own."""
    old = train_params(corpus, tmp_path / "run", lr=2e-3, samples_per_epoch=32, checkpoint_every=1)
    train(old, corpus.shards, OFF)  # 4 steps: step-3 and step-4 kept
    written = []
    save = checkpoint.save

    def save_and_check(folder, step, *args, **kwargs):
        path = save(folder, step, *args, **kwargs)
        written.append((step, checkpoint.latest(folder)))
        return path

    monkeypatch.setattr(checkpoint, "save", save_and_check)
    new = old.model_copy(update={"lr": 5e-4, "samples_per_epoch": 16})  # 2 steps
    train(new, corpus.shards, OFF, resume=Resume.AUTO)
    assert [step for step, _ in written] == [1, 2]
    for step, found in written:
        assert found is not None and found.name == f"step-{step:08d}", \
            f"after writing step {step}, the latest resumable checkpoint is {found}"


# ---------------------------------------------------------------------------------------------
# 4. Gradient accumulation


@pytest.mark.unit
def test_accumulated_micro_batches_give_the_loss_and_gradients_of_one_batch(corpus, tmp_path):
    torch.manual_seed(0)
    bundle = build("biomedclip-tiny", text_directory("biomedclip-tiny", corpus.tokenizer.out, tmp_path / "text"))
    side = bundle.config["vision_cfg"]["image_size"]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, side, side, generator=generator)
    texts = bundle.tokenizer(corpus.captions[:16])
    whole = bundle.model.eval()  # no dropout: accumulation is exact only without it
    accumulated = copy.deepcopy(whole)
    loss_whole = contrastive_backward(whole, clip_loss(0, 1), [(images, texts)])
    loss_accumulated = contrastive_backward(
        accumulated, clip_loss(0, 1), [(images[i:i + 4], texts[i:i + 4]) for i in range(0, 16, 4)])
    assert torch.allclose(loss_accumulated, loss_whole, atol=1e-6), (loss_accumulated, loss_whole)
    checked = 0
    for (name, p), (_, q) in zip(whole.named_parameters(), accumulated.named_parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:
            continue
        assert torch.allclose(q.grad, p.grad, atol=1e-5, rtol=1e-4), \
            f"{name}: max |difference| {float((q.grad - p.grad).abs().max()):.3g}"
        checked += 1
    assert checked == sum(1 for _ in whole.parameters())
    for tower in (whole.visual, whole.text):
        assert any(float(p.grad.abs().max()) > 0 for p in tower.parameters())
    assert float(whole.logit_scale.grad.abs()) > 0


# ---------------------------------------------------------------------------------------------
# 5. Missing and corrupt shards


@pytest.mark.unit
def test_a_missing_shard_is_named(corpus, tmp_path, cpu):
    shards = shards_copy(corpus, tmp_path / "shards")
    gone = shards.outputs.shards / "train" / "000001.tar"
    gone.unlink()
    with pytest.raises(ShardError, match=r"000001\.tar") as error:
        train_shards(shards.outputs.shards)
    assert str(gone) in str(error.value)
    with pytest.raises(ShardError) as error:
        train(train_params(corpus, tmp_path), shards, OFF)
    assert str(gone) in str(error.value)


def _garbage(data: bytes) -> bytes:
    return bytes((i * 7919 + 13) % 256 for i in range(len(data)))


def _cut_mid_member(data: bytes) -> bytes:
    return data[:len(data) // 2 + 100]


def _cut_at_member_boundary(data: bytes) -> bytes:
    """The first sample's members, whole: what an interrupted copy leaves behind."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    third = members[2]  # jpg, txt, json of the first sample
    return data[:third.offset_data + -(-third.size // 512) * 512]


@pytest.mark.unit
@pytest.mark.parametrize("damage", [_garbage, _cut_mid_member, _cut_at_member_boundary],
                         ids=["garbage", "truncated", "truncated-at-member-boundary"])
def test_a_corrupt_shard_stops_training_naming_it(corpus, tmp_path, damage, cpu):
    shards = shards_copy(corpus, tmp_path / "shards")
    bad = shards.outputs.shards / "train" / "000001.tar"
    bad.write_bytes(damage(bad.read_bytes()))
    # The default data path (a worker process) and a shuffle buffer that reads every shard at once.
    params = train_params(corpus, tmp_path, workers=1, shuffle_buffer=1000)
    with pytest.raises(ShardError) as error:
        train(params, shards, OFF)
    assert str(bad) in str(error.value)
    assert not (params.outputs.dir / "final").exists()


# ---------------------------------------------------------------------------------------------
# 6. MLflow


@pytest.fixture
def clean_mlflow(monkeypatch):
    """No tracking URI, experiment or system-metrics switch leaks in from, or out to, other tests."""
    import mlflow

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                 "MLFLOW_RUN_ID", "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"):
        monkeypatch.delenv(name, raising=False)
    previous = mlflow.get_tracking_uri()
    try:
        yield mlflow
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


@pytest.mark.unit
def test_mlflow_run_records_params_metrics_dataset_and_model(corpus, tmp_path, monkeypatch, clean_mlflow, cpu):
    mlflow = clean_mlflow
    tracked_dir, untracked_dir = tmp_path / "tracked", tmp_path / "untracked"
    tracked_dir.mkdir()
    untracked_dir.mkdir()
    uri = f"sqlite:///{tracked_dir / 'mlflow.db'}"
    tracking = TrackingParams(uri=uri, experiment="train-test")
    tracked = train_params(corpus, tracked_dir, samples_per_epoch=32)  # 4 steps
    monkeypatch.chdir(tracked_dir)  # MLflow's default artifact root, ./mlruns, lands here
    info = train(tracked, corpus.shards, tracking)
    run_id = info["mlflow_run_id"]
    assert run_id and json.loads(tracked.outputs.run_info.read_text())["mlflow_run_id"] == run_id

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "train-test"
    params = run.data.params
    assert float(params["lr"]) == tracked.lr and params["profile"] == "biomedclip-tiny"
    assert params["global_batch"] == "8" and params["tokenizer.min_frequency"] == "1"

    rows = loss_rows(tracked.outputs.loss_curve)
    for key in ("loss", "lr", "logit_scale", "samples_per_s", "data_time_fraction"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == [1, 2, 3, 4], key
    losses = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert losses == {int(r["step"]): float(r["loss"]) for r in rows}
    val = {k: v for k, v in info["metrics"].items() if k.startswith("val/")}
    for direction in ("image_to_text", "text_to_image"):
        for name in ("recall_at_1", "recall_at_5", "recall_at_10", "mean_rank", "median_rank"):
            key = f"val/{direction}/{name}"
            assert key in val and run.data.metrics[key] == pytest.approx(val[key], abs=1e-6), key
    assert val["val/pairs"] == SPLIT_SIZES["val"]

    manifest_sha = sha256(corpus.shards.outputs.manifest)
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "pmc-shards"
    assert len(dataset.digest) >= 8 and manifest_sha.startswith(dataset.digest)
    assert {t.key: t.value for t in inputs[0].tags}.get("mlflow.data.context") == "training"
    tags = run.data.tags
    assert tags["biomedclip.digest"] == info["digest"]
    assert tags["biomedclip.shard_manifest_sha256"] == manifest_sha

    def artifacts(path: str | None = None) -> set[str]:
        found = set()
        for item in client.list_artifacts(run_id, path):
            found |= artifacts(item.path) if item.is_dir else {item.path}
        return found

    logged = artifacts()
    assert {"model/open_clip_model.safetensors", "model/open_clip_config.json", "model/vocab.txt",
            "loss_curve.png", tracked.outputs.loss_curve.name} <= logged, sorted(logged)
    downloaded = Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="model/open_clip_model.safetensors", tracking_uri=uri,
        dst_path=str(tmp_path / "download")))
    assert sha256(downloaded) == info["model_sha256"]
    assert Path(run.info.artifact_uri.removeprefix("file://")).is_relative_to(tracked_dir)

    # The same run untracked: the same model, and no store anywhere.
    monkeypatch.chdir(untracked_dir)
    untracked = train_params(corpus, untracked_dir, samples_per_epoch=32)
    plain = train(untracked, corpus.shards, tracking.model_copy(update={"enabled": False}))
    assert plain["mlflow_run_id"] is None
    assert plain["model_sha256"] == info["model_sha256"]
    assert loss_rows(untracked.outputs.loss_curve) == rows
    assert sorted(p.name for p in untracked_dir.iterdir()) == ["loss.csv", "train", "train.json"]


# ---------------------------------------------------------------------------------------------
# 7. Retrieval metrics


def naive_ranks(queries: torch.Tensor, candidates: torch.Tensor) -> list[int]:
    """Rank of each query's own candidate: how many candidates score strictly higher."""
    sims = queries.double() @ candidates.double().T
    return [int((sims[i] > sims[i, i]).sum()) for i in range(len(sims))]


def naive_metrics(ranks: list[int], ks=(1, 5, 10)) -> dict[str, float]:
    n = len(ranks)
    assert n % 2 == 1, "the median of an odd count is one element"
    out = {f"recall_at_{k}": sum(r < k for r in ranks) / n for k in ks}
    out["mean_rank"] = sum(ranks) / n + 1
    out["median_rank"] = sorted(ranks)[n // 2] + 1
    return out


def check_against_reference(images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    metrics = retrieval_metrics(images, texts, chunk=10)
    for direction, (q, c) in {"image_to_text": (images, texts), "text_to_image": (texts, images)}.items():
        ranks = naive_ranks(q, c)
        assert match_ranks(q, c, chunk=10).tolist() == ranks
        assert match_ranks(q, c, chunk=1000).tolist() == ranks
        expected = naive_metrics(ranks)
        assert rank_metrics(torch.tensor(ranks)) == pytest.approx(expected, abs=1e-12)
        for name, value in expected.items():
            assert metrics[f"{direction}/{name}"] == pytest.approx(value, abs=1e-12), (direction, name)
    return metrics


@pytest.mark.unit
def test_retrieval_metrics_match_a_full_matrix_reference():
    generator = torch.Generator().manual_seed(27)  # a seed without near-ties (checked below)
    n, d = 257, 16
    images = torch.nn.functional.normalize(torch.randn(n, d, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(images + 0.9 * torch.randn(n, d, generator=generator), dim=1)
    for sims in (images.double() @ texts.double().T, texts.double() @ images.double().T):
        gaps = (sims - sims.diagonal().unsqueeze(1)).abs() + torch.eye(n, dtype=torch.double)
        assert float(gaps.min()) > 1e-5, "test precondition: no near-ties that float32 rounding could flip"
    metrics = check_against_reference(images, texts)
    assert 0 < metrics["image_to_text/recall_at_1"] < metrics["image_to_text/recall_at_10"] < 1


@pytest.mark.unit
def test_retrieval_metrics_count_ties_in_the_querys_favour():
    """Entries of +-1/4 in 16 dimensions: unit vectors whose dot products float32 computes exactly,
    so ties are exact; duplicated vectors add ties with the true match."""
    generator = torch.Generator().manual_seed(1)
    n, d = 257, 16
    signs = lambda: torch.randint(0, 2, (n, d), generator=generator).float() * 2 - 1  # noqa: E731
    images, texts = signs() / 4, signs() / 4
    texts[:40] = images[:40]  # matched exactly: rank 0 however many candidates tie
    texts[100:110] = texts[90]  # duplicated candidates: ties for queries 90..109
    images[200:205] = images[199]
    assert torch.allclose(images.norm(dim=1), torch.ones(n)) and torch.allclose(texts.norm(dim=1), torch.ones(n))
    sims = images @ texts.T
    tied = int((sims == sims.diagonal().unsqueeze(1)).sum()) - n
    assert tied > 100, "test precondition: many ties with the true match"
    check_against_reference(images, texts)


@pytest.mark.unit
def test_perfect_features_rank_first():
    generator = torch.Generator().manual_seed(2)
    features = torch.nn.functional.normalize(torch.randn(57, 32, generator=generator), dim=1)
    metrics = retrieval_metrics(features, features.clone(), chunk=10)
    for direction in ("image_to_text", "text_to_image"):
        assert metrics[f"{direction}/recall_at_1"] == 1.0
        assert metrics[f"{direction}/mean_rank"] == 1.0 and metrics[f"{direction}/median_rank"] == 1.0
    with pytest.raises(ValueError, match="aligned"):
        match_ranks(features, features[:-1])
