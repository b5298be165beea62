"""Benchmark the trainer against open_clip's own (`open_clip_train.main`) on the same work.

Same shards (data/shards/train), same model (the biomedclip-tiny profile, random init), batch
size, worker count, torch thread count and number of steps; each trainer runs in a fresh
process, one after the other. Rates are steady-state samples/s: the mean batch time of every
logging interval after the first (start-up and warm-up excluded). Also: our data loader alone
(shards -> augmented, tokenised batches), beside the step rate.

open_clip_train 3.3.0 needs webdataset 0.2.86 (it crashes with 1.x), so the reference runs with
that version first on its path: `pip install --no-deps --target build/ref-webdataset
webdataset==0.2.86` (this script does it when missing). It loads the HF text tower's weights, so
a randomly initialised BERT is saved into its text folder.

    python bench/train.py [--steps 30] [--batch 64] [--workers 1] [--threads 2]
    (after `dvc repro shard tokenizer`)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REF_WEBDATASET = REPO / "build" / "ref-webdataset"

REFERENCE = r"""
import json, sys
import open_clip
open_clip.add_model_config(sys.argv[1])
from open_clip_train.main import main
main(sys.argv[2:])
"""

OURS = r"""
import json, sys, torch
from pathlib import Path
from biomedclip.params import load_params
from biomedclip.console import configure_logging
from biomedclip.train.loop import Resume, train
configure_logging("WARNING")
params = load_params(Path(sys.argv[1]))
train(params.train, params.shard, params.tracking, resume=Resume.NEVER)
state = torch.load(Path(params.train.outputs.dir) / "checkpoints"
                   / (Path(params.train.outputs.dir) / "checkpoints" / "latest").read_text() / "state.pt",
                   weights_only=True)
print(json.dumps(state["history"]))
"""

LOADER = r"""
import json, sys, time, torch
from pathlib import Path
from biomedclip.params import load_params
from biomedclip.train.data import ShardStream, loader, train_shards
from biomedclip.train.model import build
from biomedclip.train.tokenizer import text_directory
params = load_params(Path(sys.argv[1])).train
shards = load_params(Path(sys.argv[1])).shard
steps, batch = int(sys.argv[2]), int(sys.argv[3])
text = text_directory(params.profile, params.tokenizer.out, Path(sys.argv[4]))
bundle = build(params.profile, text)
urls, _ = train_shards(shards.outputs.shards)
stream = ShardStream(urls, seed=0, rank=0, batch_size=batch, batches_per_epoch=steps, start=0, total=steps,
                     shuffle_buffer=params.shuffle_buffer, preprocess=bundle.preprocess_train,
                     tokenizer=bundle.tokenizer)
batches = iter(loader(stream, params.workers))
next(batches)
start = time.perf_counter()
n = sum(1 for _ in batches)
print(json.dumps({"samples_per_s": n * batch / (time.perf_counter() - start)}))
"""


def run(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=5)
    args = parser.parse_args()
    import yaml

    from biomedclip.params import load_params
    from biomedclip.train.model import profile_config
    from biomedclip.train.tokenizer import text_directory

    params = load_params(args.params)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    samples = args.steps * args.batch
    shards = sorted((params.shard.outputs.shards / "train").glob("*.tar"))
    if not shards:
        raise SystemExit("no train shards: run `dvc repro shard tokenizer` first")
    if not (REF_WEBDATASET / "webdataset").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(REF_WEBDATASET), "webdataset==0.2.86"], check=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        # Ours: the same params, this many steps, no tracking.
        mine = yaml.safe_load(args.params.read_text())
        mine["tracking"] = {**mine.get("tracking", {}), "enabled": False}
        mine["train"].update(epochs=1, samples_per_epoch=samples, global_batch=args.batch, workers=args.workers,
                             log_every=args.log_every, checkpoint_every=10**6, nproc=1,
                             outputs={"dir": str(tmp / "ours"), "run_info": str(tmp / "ours" / "run.json"),
                                      "loss_curve": str(tmp / "loss.csv"), "metrics": str(tmp / "train.json")})
        ours_params = tmp / "params.yaml"
        ours_params.write_text(yaml.safe_dump(mine, sort_keys=False))
        start = time.perf_counter()
        history = json.loads(run(OURS, str(ours_params), env=env).stdout.strip().splitlines()[-1])
        ours_wall = time.perf_counter() - start
        ours_rate = statistics.mean(r["samples_per_s"] for r in history[1:])
        data_time = statistics.mean(r["data_time_fraction"] for r in history[1:])

        # The reference: the same model config with its text tower in a folder holding weights.
        text = text_directory(params.train.profile, params.train.tokenizer.out, tmp / "ref-text")
        from transformers import AutoConfig, AutoModel

        AutoModel.from_config(AutoConfig.from_pretrained(text)).save_pretrained(text)
        config = profile_config(params.train.profile, text)
        config["text_cfg"].pop("hf_model_pretrained", None)
        (tmp / "configs").mkdir()
        (tmp / "configs" / "bench-tiny.json").write_text(json.dumps(config))
        brace = f"{shards[0].parent}/{{{shards[0].stem}..{shards[-1].stem}}}.tar"
        argv = ["--model", "bench-tiny", "--train-data", brace, "--dataset-type", "webdataset",
                "--dataset-resampled", "--train-num-samples", str(samples), "--batch-size", str(args.batch),
                "--workers", str(args.workers), "--epochs", "1", "--lr", "5e-4", "--wd", "0.2", "--warmup", "10",
                "--precision", "fp32", "--seed", "0", "--logs", str(tmp / "ref-logs"), "--name", "ref",
                "--log-every-n-steps", str(args.log_every), "--save-frequency", "0", "--report-to", "",
                "--local-loss", "--gather-with-grad", "--device", "cpu"]
        ref_env = {**env, "PYTHONPATH": str(REF_WEBDATASET)}
        start = time.perf_counter()
        result = run(REFERENCE, str(tmp / "configs"), *argv, env=ref_env)
        ref_wall = time.perf_counter() - start
        log_text = result.stdout + result.stderr
        times = [float(t) for t in re.findall(r"Batch \(t\): ([\d.]+)", log_text)]
        if len(times) < 2:
            raise SystemExit(f"no batch times in the reference's log:\n{log_text[-3000:]}")
        ref_rate = args.batch / statistics.mean(times[1:])

        loader_rate = json.loads(run(LOADER, str(ours_params), str(args.steps), str(args.batch),
                                     str(tmp / "loader-text"),
                                     env=env).stdout.strip().splitlines()[-1])["samples_per_s"]
    print(f"{params.train.profile}, batch {args.batch}, {args.steps} steps, {args.workers} loader worker(s), "
          f"{args.threads} torch threads")
    print(f"{'trainer':<28} {'samples/s':>10} {'wall s':>8}")
    print(f"{'ours (biomedclip.train)':<28} {ours_rate:>10.1f} {ours_wall:>8.1f}")
    print(f"{'open_clip_train.main':<28} {ref_rate:>10.1f} {ref_wall:>8.1f}")
    print(f"ratio ours / reference: {ours_rate / ref_rate:.2f} (target >= 1.0)")
    print(f"our data loader alone: {loader_rate:.1f} samples/s ({loader_rate / ours_rate:.1f}x the step rate; "
          f"data wait {100 * data_time:.1f}% of step time)")


if __name__ == "__main__":
    main()
