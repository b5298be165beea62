"""Benchmark the published BiomedCLIP's loading path at full size: load time and embedding throughput.

A full-size checkpoint in Microsoft's published layout (ViT-B/16 + PubMedBERT, 195.9M parameters,
the ~784 MB `open_clip_pytorch_model.bin`; random weights: none can be downloaded here, and the
timing does not depend on their values) is put into a Hugging Face cache laid out as the hub
client writes it, with the real PubMedBERT vocabulary (../shared/fixtures/pubmedbert). Then, each
in a fresh process with HF_HUB_OFFLINE=1:

- the official snippet (`open_clip.create_model_from_pretrained('hf-hub:...')` + `get_tokenizer`),
- the pipeline's loader (`biomedclip.models.load_model('hf-hub:...')`),

load the model (seconds, imports excluded), then embed the 7 real chest X-rays of the fixtures
(repeated to `--images`, decode + preprocess at 224 px + encode) and `--captions` captions
(tokenise to 256 + encode), reporting images/s and captions/s, peak RSS, and the cosine of the
two loaders' embeddings (they must agree: >= 0.9999).

    python -m bench.published [--images 64] [--captions 128] [--threads 2] [--device cpu|cuda]

(run from the repository root, as a module: it builds the checkpoint with the tests' own helper,
`tests/published.py`)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS

REPO = Path(__file__).resolve().parents[1]
PUBMEDBERT = REPO.parent / "shared" / "fixtures" / "pubmedbert"  # tests/published.py names it too
IMAGES = REPO.parent / "shared" / "fixtures" / "images" / "nih_cxr14"
HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
CHILD = PEAK_RSS + r"""
import json, sys, time
mode, images_dir, n_images, n_captions, threads, device = sys.argv[1:7]
import torch, open_clip
from pathlib import Path
from PIL import Image
torch.set_num_threads(int(threads))
source = "hf-hub:" + sys.argv[7]
start = time.perf_counter()
if mode == "official":
    model, preprocess = open_clip.create_model_from_pretrained(source)
    tokenizer = open_clip.get_tokenizer(source)
    model.eval()
else:
    from biomedclip.models import load_model
    loaded = load_model(source)
    model, preprocess, tokenizer = loaded.model, loaded.preprocess, loaded.tokenizer
model.to(device)
load_s = time.perf_counter() - start
files = sorted(Path(images_dir).glob("*.png"))
paths = [files[i % len(files)] for i in range(int(n_images))]
captions = [f"Chest radiograph {i}: bilateral patchy opacities, more marked in the right lower zone."
            for i in range(int(n_captions))]
batch = 16
def images():
    out = []
    for i in range(0, len(paths), batch):
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[i:i + batch]]).to(device)
        out.append(model.encode_image(pixels, normalize=True).float().cpu())
    return torch.cat(out)
def texts():
    out = []
    for i in range(0, len(captions), batch):
        out.append(model.encode_text(tokenizer(captions[i:i + batch]).to(device), normalize=True).float().cpu())
    return torch.cat(out)
with torch.no_grad():
    images(); texts()  # warm-up
    if device == "cuda": torch.cuda.synchronize()
    t = time.perf_counter(); image_embeddings = images(); image_s = time.perf_counter() - t
    t = time.perf_counter(); text_embeddings = texts(); text_s = time.perf_counter() - t
torch.save({"image": image_embeddings[:7], "text": text_embeddings[:4]}, sys.argv[8])
print(json.dumps({"load_s": load_s, "images_per_s": len(paths) / image_s, "captions_per_s": len(captions) / text_s,
                  "rss_mib": peak_rss_mib(),
                  "parameters": sum(p.numel() for p in model.parameters())}))
"""


def build_cache(root: Path) -> Path:
    from tests.published import hf_home, published_checkpoint

    start = time.perf_counter()
    checkpoint, bert = published_checkpoint(root / "checkpoint", PUBMEDBERT, size="full", tokenizer_files=True)
    home = hf_home(root / "hf", checkpoint, bert, PUBMEDBERT)
    size = (checkpoint / "open_clip_pytorch_model.bin").stat().st_size
    print(f"built a full-size checkpoint in the published layout ({size / 2**20:.0f} MiB) and its cache "
          f"in {time.perf_counter() - start:.1f} s", flush=True)
    return home


def run(mode: str, home: Path, args: argparse.Namespace, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(IMAGES), str(args.images), str(args.captions),
                             str(args.threads), args.device, HUB_ID, str(out)], capture_output=True, text=True,
                            env=env, cwd=REPO)
    if result.returncode:
        sys.exit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--captions", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if not PUBMEDBERT.is_dir():
        sys.exit(f"{PUBMEDBERT} is absent: the benchmark needs the shared fixtures beside the project")
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-published-") as tmp:
        root = Path(tmp)
        home = build_cache(root)
        figures = {mode: run(mode, home, args, root / f"{mode}.pt") for mode in ("official", "ours")}
        a, b = torch.load(root / "official.pt"), torch.load(root / "ours.pt")
        cosine = min(torch.nn.functional.cosine_similarity(a[k], b[k], dim=1).min().item() for k in ("image", "text"))
    print(f"\nfull-size BiomedCLIP ({figures['ours']['parameters']:,} parameters), {args.device}, "
          f"{args.threads} thread(s), batch 16, {args.images} images (224 px), {args.captions} captions (context 256)")
    print(f"{'loader':<22}{'load s':>8}{'images/s':>10}{'captions/s':>12}{'peak RSS MiB':>14}")
    for mode, label in (("official", "official snippet"), ("ours", "biomedclip.models")):
        f = figures[mode]
        print(f"{label:<22}{f['load_s']:>8.2f}{f['images_per_s']:>10.2f}{f['captions_per_s']:>12.2f}{f['rss_mib']:>14.0f}")
    o, p = figures["official"], figures["ours"]
    print(f"ratio ours/official: load {p['load_s'] / o['load_s']:.2f}x, "
          f"images/s {p['images_per_s'] / o['images_per_s']:.2f}x, "
          f"captions/s {p['captions_per_s'] / o['captions_per_s']:.2f}x; lowest embedding cosine {cosine:.6f}")
    if cosine < 0.9999:
        sys.exit("the two loaders disagree")


if __name__ == "__main__":
    main()
