"""Measure the training FLOPs per image-text pair of a model profile and size a PMC-15M run from them.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on a small batch (random init,
offline, CPU) at the profile's image size and full context length (open_clip pads every caption
to it), per tower: forward, forward+backward, and forward+backward with gradient checkpointing
(the recipe's: each block's forward is recomputed in backward up to the last tensor backward
needs, so a pre-norm ViT block skips its last matmul, a post-norm BERT layer does not). The
contrastive loss is counted at the global batch (DDP's sharded loss: the same work, summed).

The sizing table is an ESTIMATE: total FLOPs = measured FLOPs per pair x pairs x epochs, and
GPU-hours = total / (dense bf16 peak x an assumed utilisation). With checkpointing the recompute
is counted as executed work at the same utilisation of the peak.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

PEAK_BF16 = {"H100 SXM": 989e12, "A100": 312e12}  # dense bf16 tensor-core peak, FLOP/s
VIT_B16_224_GMACS = 17.58  # timm's published figure for vit_base_patch16_224 at 224 px
CAPTIONS = ["Figure 1. Axial CT of the chest showing a spiculated nodule in the right upper lobe.",
            "Haematoxylin and eosin stain of a lymph node section with metastatic carcinoma."]


def gflops(run: Callable[[], Any], n: int) -> float:
    """GFLOPs per sample of `run` on a batch of n (the math SDPA kernel: its matmuls are counted)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        run()
    return counter.get_total_flops() / n / 1e9


def forward_backward(fn: Callable[[], torch.Tensor], n: int) -> dict[str, float]:
    """GFLOPs per sample of `fn`: forward (no grad) and forward+backward."""

    def forward() -> None:
        with torch.no_grad():
            fn()
    return {"forward": gflops(forward, n), "train": gflops(lambda: fn().sum().backward(), n)}


def measure(profile: str, batch: int, global_batch: int) -> dict[str, Any]:
    from biomedclip.train.model import build
    from biomedclip.train.step import clip_loss
    from biomedclip.train.tokenizer import build_tokenizer, text_directory

    start = time.perf_counter()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer(iter(CAPTIONS), Path(tmp) / "tokenizer", vocab_size=200, min_frequency=1)
        bundle = build(profile, text_directory(profile, Path(tmp) / "tokenizer", Path(tmp) / "text"))
    model, config = bundle.model.train(), bundle.config  # train mode: checkpointing applies then
    size, context = config["vision_cfg"]["image_size"], config["text_cfg"]["context_length"]
    images = torch.randn(batch, 3, size, size)
    texts = bundle.tokenizer((CAPTIONS * batch)[:batch])
    encode = {"image": lambda: model.encode_image(images), "text": lambda: model.encode_text(texts)}
    towers = {name: forward_backward(fn, batch) for name, fn in encode.items()}
    model.set_grad_checkpointing(True)  # last: open_clip's HF tower cannot switch it off again
    for name, fn in encode.items():
        towers[name]["checkpointed"] = gflops(lambda fn=fn: fn().sum().backward(), batch)
    features = [torch.randn(global_batch, config["embed_dim"], requires_grad=True) for _ in range(2)]
    scale = torch.tensor(1 / 0.07, requires_grad=True)
    towers["loss"] = forward_backward(lambda: clip_loss(0, 1)(*features, scale), global_batch)
    towers["loss"]["checkpointed"] = towers["loss"]["train"]
    towers["total"] = {k: sum(towers[t][k] for t in encode) + towers["loss"][k] for k in towers["loss"]}
    bert = model.text.transformer.config
    encoder = sum(p.numel() for p in model.text.transformer.encoder.parameters() if p.dim() == 2)
    attention = 4 * bert.num_hidden_layers * context**2 * bert.hidden_size
    reference = {"text": {"gflops": (2 * encoder * context + attention) / 1e9,
                          "source": f"2 x {encoder / 1e6:.2f}M params x {context} tokens + attention"}}
    if config["vision_cfg"].get("timm_model_name") == "vit_base_patch16_224" and size == 224:
        reference["image"] = {"gflops": 2 * VIT_B16_224_GMACS, "source": f"timm: {VIT_B16_224_GMACS} GMACs"}
    return {"profile": profile, "image_size": size, "context_length": context, "batch": batch,
            "global_batch": global_batch, "gflops_per_pair": towers, "reference_forward": reference,
            "seconds": round(time.perf_counter() - start, 1)}


def sizing(per_pair: dict[str, float], pairs: float, epochs: int, global_batch: int, mfu: float) -> dict[str, Any]:
    samples = pairs * epochs
    runs = {"no_checkpointing": "train", "checkpointing": "checkpointed"}
    total = {k: per_pair[v] * 1e9 * samples for k, v in runs.items()}
    hours = {gpu: {k: v / (peak * mfu) / 3600 for k, v in total.items()} for gpu, peak in PEAK_BF16.items()}
    return {"pairs": pairs, "epochs": epochs, "samples": samples, "mfu": mfu,
            "steps": int(pairs // global_batch) * epochs,  # the trainer's: whole steps per epoch
            "total_flops": total, "gpu_hours": hours}


def report(m: dict[str, Any], s: dict[str, Any]) -> None:
    g = m["gflops_per_pair"]
    print(f"{m['profile']}: FLOPs measured with FlopCounterMode, batch {m['batch']}, {m['image_size']} px, "
          f"{m['context_length']} text tokens, random init on CPU ({m['seconds']:.0f} s)")
    print(f"{'GFLOPs per pair':<32}{'forward':>9}{'fwd+bwd':>9}{'+recompute':>11}  reference forward")
    labels = {"image": f"image tower ({m['image_size']} px)", "text": f"text tower ({m['context_length']} tokens)",
              "loss": f"contrastive loss (batch {m['global_batch']})", "total": "total"}
    for key, label in labels.items():
        ref = m["reference_forward"].get(key)
        cited = f"  {ref['gflops']:.3f} ({ref['source']})" if ref else ""
        print(f"{label:<32}{g[key]['forward']:>9.3f}{g[key]['train']:>9.3f}{g[key]['checkpointed']:>11.3f}{cited}")
    redo = {k: (g[k]["checkpointed"] - g[k]["train"]) / g[k]["forward"] for k in ("image", "text")}
    backward = (g["total"]["train"] - g["total"]["forward"]) / g["total"]["forward"]
    print(f"backward = {backward:.2f} x forward; gradient checkpointing recomputes {redo['image']:.2f} of the image "
          f"and {redo['text']:.2f} of the text forward: x{g['total']['checkpointed'] / g['total']['train']:.2f} FLOPs")
    print(f"\nESTIMATE for {s['pairs'] / 1e6:g}M pairs x {s['epochs']} epochs = {s['samples'] / 1e6:,.1f}M samples; "
          f"global batch {m['global_batch']}: {s['steps']:,} steps")
    print(f"training FLOPs: {s['total_flops']['no_checkpointing']:.3g} without, "
          f"{s['total_flops']['checkpointing']:.3g} with gradient checkpointing")
    print(f"GPU-hours = FLOPs / (dense bf16 peak x {s['mfu']:.0%} assumed utilisation):")
    print(f"{'GPU':<12}{'peak TFLOP/s':>13}{'no ckpt':>10}{'with ckpt':>11}")
    for gpu, hours in s["gpu_hours"].items():
        print(f"{gpu:<12}{PEAK_BF16[gpu] / 1e12:>13.0f}{hours['no_checkpointing']:>10,.1f}"
              f"{hours['checkpointing']:>11,.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="FLOPs do not depend on precision (bf16 AMP does the same matmuls). Data loading, "
               "communication and storage are not counted.")
    parser.add_argument("--profile", default="biomedclip", help="model profile (biomedclip-tiny: ~20 s on 2 cores)")
    parser.add_argument("--batch", type=int, default=2, help="batch the towers are measured on")
    parser.add_argument("--global-batch", type=int, default=4096, help="contrastive batch over all GPUs")
    parser.add_argument("--pairs", type=float, default=13.9e6, help="training pairs (PMC-15M's train split)")
    parser.add_argument("--epochs", type=int, default=32, help="epochs (the recipe's 32)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed fraction of the dense bf16 peak")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' checkpointing rename
    measured = measure(args.profile, args.batch, args.global_batch)
    sized = sizing(measured["gflops_per_pair"]["total"], args.pairs, args.epochs, args.global_batch, args.mfu)
    if args.json:
        print(json.dumps({**measured, "estimate": sized}, indent=2))
    else:
        report(measured, sized)


if __name__ == "__main__":
    main()
