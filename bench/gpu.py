"""GPU throughput of a full training step of the full-size model: fp32 against bf16, with and without
gradient checkpointing, and the same step under DDP on the NCCL backend.

The trainer's own pieces: `train.model.build` (the `biomedclip` profile, ViT-B/16 + PubMedBERT-size
text tower at context 256, random init, offline), `train.step.contrastive_backward` with the sharded
`clip_loss`, AdamW; synthetic batches on the GPU (images at 224 px, token ids across the vocabulary),
so the figure is the model's and not the loader's. Steady state: CUDA-event time over `--steps`
steps after `--warmup`. Model FLOPs utilisation uses the training FLOPs per pair measured by
`bench/flops.py` (242.9 GFLOPs; 312.5 with checkpointing's recompute) against the dense bf16 peak.

    python bench/gpu.py --text DIR [--batch 256] [--steps 20] [--warmup 5]
    torchrun --nproc_per_node 1 bench/gpu.py --text DIR --ddp     # DDP over NCCL (one GPU: world 1)

`--text` is a tokenizer folder (vocab.txt), e.g. the shared fixtures' PubMedBERT one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from biomedclip.train.distributed import close_world, init_world
from biomedclip.train.model import build, parameter_count
from biomedclip.train.step import clip_loss, contrastive_backward
from biomedclip.train.tokenizer import text_directory

FLOPS_PER_PAIR = {False: 242.9e9, True: 312.5e9}  # bench/flops.py: training, without / with checkpointing
PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16 tensor-core peak, FLOP/s


def measure(model: torch.nn.Module, loss_fn, vocab: int, context: int, side: int, *, batch: int, steps: int,
            warmup: int, bf16: bool, device: torch.device) -> dict[str, float]:
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(batch, 3, side, side, device=device, generator=generator)
    texts = torch.randint(1000, vocab, (batch, context), device=device, generator=generator)
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2, fused=cuda)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync = torch.cuda.synchronize if cuda else (lambda _: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses, start = [], 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses.append(contrastive_backward(model, loss_fn, [(images, texts)], autocast=autocast))
        optimizer.step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    return {"batch": batch, "step_s": round(seconds, 4), "samples_per_s": round(batch / seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1) if cuda else None,
            "loss_first": round(float(losses[0]), 3), "loss_last": round(float(losses[-1]), 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, required=True, help="a tokenizer folder with vocab.txt (PubMedBERT's)")
    parser.add_argument("--profile", default="biomedclip", help="model profile (default: the full-size biomedclip)")
    parser.add_argument("--batch", type=int, default=256, help="per-GPU batch of the bf16 runs (fp32 runs at half)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN/cuBLAS autotuning)")
    parser.add_argument("--ddp", action="store_true", help="wrap the model in DDP over NCCL (run under torchrun)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--cpu", action="store_true", help="a smoke run on the CPU (e.g. --profile biomedclip-tiny "
                        "--batch 8 --steps 2 --warmup 1): checks the script, measures nothing useful")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures a GPU (--cpu for a smoke run)")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the reference for bf16
    torch.backends.cudnn.allow_tf32 = False
    world = init_world()
    if args.ddp and not torch.distributed.is_initialized():  # one GPU: a world of one, NCCL all the same
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29511")
        torch.distributed.init_process_group("gloo" if args.cpu else "nccl", rank=world.rank, world_size=world.size)
    device = world.device
    with tempfile.TemporaryDirectory() as tmp:
        text_dir = text_directory(args.profile, args.text, Path(tmp) / "text")
        start = time.perf_counter()
        bundle = build(args.profile, text_dir)
        built = time.perf_counter() - start
    vocab = bundle.model.text.transformer.config.vocab_size
    context = bundle.config["text_cfg"]["context_length"]
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "profile": args.profile,
               "parameters": parameter_count(bundle.model), "build_s": round(built, 1),
               "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
               "world_size": world.size, "runs": []}
    loss_fn = clip_loss(world.rank, world.size)
    for bf16, checkpointing, batch in ((False, False, args.batch // 2), (True, False, args.batch),
                                       (True, True, args.batch), (True, True, 2 * args.batch)):
        model = bundle.model.to(device)
        model.set_grad_checkpointing(checkpointing)
        ids = [device.index] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids) if args.ddp else model
        run = measure(wrapped, loss_fn, vocab, context, bundle.config["vision_cfg"]["image_size"], batch=batch,
                      steps=args.steps, warmup=args.warmup, bf16=bf16, device=device)
        run |= {"precision": "bf16" if bf16 else "fp32", "grad_checkpointing": checkpointing,
                "mfu_of_bf16_peak": round(run["samples_per_s"] * FLOPS_PER_PAIR[checkpointing] / PEAK_BF16, 3)
                if args.profile == "biomedclip" else None}  # FLOPs per pair measured for the full size only
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        del wrapped
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if world.is_main:
        print("\n| precision | checkpointing | batch | samples/s | step (s) | peak GiB | MFU (bf16 peak) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for r in results["runs"]:
            print(f"| {r['precision']} | {'yes' if r['grad_checkpointing'] else 'no'} | {r['batch']} | "
                  f"{r['samples_per_s']:,} | {r['step_s']} | {r['peak_gib'] or '-'} | "
                  f"{format(r['mfu_of_bf16_peak'], '.1%') if r['mfu_of_bf16_peak'] is not None else '-'} |")
        print(f"\n{results['device']}, torch {results['torch']}, {results['parameters']:,} parameters, "
              f"backend {results['backend'] or 'none (one process)'}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    close_world(world)
    if args.ddp and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
