"""Benchmark visual question answering: token features, the answer model's training, the
full-size fine-tuning step, and memory at SLAKE's size.

1. Token features per second (`vqa.features`: images through the image tower's last block,
   questions through the text tower) of the tiny profile and the full-size `biomedclip` profile
   (ViT-B/16 at 224 + BERT-base, random weights, built offline), against the pooled embedding of
   the same images and questions (`evaluate.embedding`) measured in the same process: the same
   forward passes, so the ratio is what the token path costs beyond the embedding path.
2. Answer-model training steps per second on cached features (`vqa.train`, fusion + classifier,
   forward, backward, AdamW) at both profiles' token shapes, the default fusion and METER's
   (6 layers, width 768, 12 heads), with the FLOP rate it reaches against a plain matmul's
   measured in the same process.
3. The full-size fine-tuning step (encoders + fusion + classifier, `EncodedAnswerModel`) on CPU
   at batch 4, fp32 and bf16 autocast.
4. Peak RSS at SLAKE's size (642 images, 7,033 English questions, up to 32 tokens, the
   full-size profile's token shapes, float16), as two runs of the stage: computing and caching
   the features (the real path, the towers replaced by random tokens of their output shapes),
   then reading them and training the default answer model 20 steps and scoring the test split;
   at a quarter of SLAKE for the slope, and at one question a split for the baseline.

    python bench/vqa.py [--device cpu|cuda] [--skip-full]

Absolute figures depend on the machine's load (printed); the ratios are measured within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peak import PEAK_RSS  # bench/peak.py: a child process's own peak RSS
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What imaging modality was used?", "Is this image normal?",
             "Which part of the body is shown?", "What sequence is this MRI?",
             "Is the abnormality on the left side of the chest radiograph?", "Was contrast given?",
             "What abnormality is seen in the right lower lobe of the lung?"]
SLAKE = {"images": {"train": 450, "val": 96, "test": 96},
         "questions": {"train": 4919, "val": 1053, "test": 1061}}  # SLAKE 1.0, English
SLAKE_TOKENS = 32  # SLAKE's English questions fit in 32 WordPiece tokens
ANSWERS = 500  # classes of the answer model (VQA-RAD's training answers are about that many)


def load() -> str:
    average = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {average} on {os.cpu_count()} cores"


def timed(step: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Seconds per call, after `warmup` calls."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - start) / repeat


def flops(step: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device) -> float:
    """What a plain fp32 matmul reaches here: the reference for the answer model's FLOP rate."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    seconds = timed(lambda: torch.mm(a, b), repeat=10)
    return 2 * 1024**3 / seconds / 1e9


def encoder(profile: str, device: torch.device):
    from biomedclip.evaluate.embedding import ModelEncoder
    from biomedclip.train.model import build
    from biomedclip.train.tokenizer import build_tokenizer, text_directory

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        vocab, text = Path(tmp) / "tokenizer", Path(tmp) / "text"
        build_tokenizer(iter(QUESTIONS * 4), vocab, vocab_size=300, min_frequency=1)
        bundle = build(profile, text_directory(profile, vocab, text))
    return ModelEncoder(bundle.model.to(device).eval(), bundle.preprocess_val, bundle.tokenizer)


def images(n: int) -> list:
    from biomedclip.demo.figures import render

    kinds = ("chest_xray", "ct", "mri", "ultrasound")
    return [render(kinds[i % 4], i, 256, 256)[0] for i in range(n)]


def token_throughput(profile: str, n_images: int, n_questions: int, repeat: int,
                     device: torch.device) -> dict[str, Any]:
    """Each path timed `repeat` times, the two alternating (a slow spell falls on both); the
    best time of each."""
    from biomedclip.evaluate.embedding import embed_images, embed_texts
    from biomedclip.vqa.features import image_tokens, text_tokens

    enc = encoder(profile, device)
    pictures, questions = images(n_images), (QUESTIONS * 40)[:n_questions]

    @torch.no_grad()
    def tokens_of_images() -> torch.Tensor:
        pixels = torch.stack([enc.preprocess(p) for p in pictures]).to(device)
        return image_tokens(enc.model, pixels)

    @torch.no_grad()
    def tokens_of_questions() -> None:
        for start in range(0, len(questions), 64):
            text_tokens(enc.model, enc.tokenizer(questions[start:start + 64]).to(device))

    def pooled_images() -> None:
        embed_images(enc, pictures, len(pictures))

    def pooled_questions() -> None:
        embed_texts(enc, questions, 64)

    paths = {"image_tokens": tokens_of_images, "pooled_images": pooled_images,
             "question_tokens": tokens_of_questions, "pooled_questions": pooled_questions}
    for fn in paths.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeat):
        for name, fn in paths.items():
            times[name].append(timed(fn, 1, warmup=0))
    best = {name: min(values) for name, values in times.items()}
    return {"image_tokens_per_s": n_images / best["image_tokens"],
            "pooled_images_per_s": n_images / best["pooled_images"],
            "question_tokens_per_s": len(questions) / best["question_tokens"],
            "pooled_questions_per_s": len(questions) / best["pooled_questions"],
            "image_token_shape": tuple(tokens_of_images().shape[1:])}


def answer_steps(image_shape: tuple[int, int], text_width: int, fusion: Any, device: torch.device,
                 batch: int = 32, tokens: int = 16, repeat: int = 3) -> dict[str, float]:
    from biomedclip.vqa.fusion import AnswerModel

    torch.manual_seed(0)
    model = AnswerModel(image_shape[1], text_width, ANSWERS, fusion).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    image = torch.randn(batch, *image_shape, device=device)
    text = torch.randn(batch, tokens, text_width, device=device)
    mask = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    labels = torch.randint(0, ANSWERS, (batch,), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(image, text, mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    seconds = timed(step, repeat)
    return {"steps_per_s": 1 / seconds, "gflop_per_step": flops(step) / 1e9,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def full_size_step(device: torch.device, batch: int = 4) -> dict[str, float]:
    """One fine-tuning step through ViT-B/16 + BERT-base + the default fusion."""
    from biomedclip.vqa.fusion import AnswerModel
    from biomedclip.vqa.params import FusionParams
    from biomedclip.vqa.train import EncodedAnswerModel

    enc = encoder("biomedclip", device)
    answer = AnswerModel(768, 768, ANSWERS, FusionParams())
    model = EncodedAnswerModel(enc.model, answer).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-6)
    pixels = torch.stack([enc.preprocess(p) for p in images(batch)]).to(device)
    ids = enc.tokenizer(QUESTIONS[:batch]).to(device)
    labels = torch.randint(0, ANSWERS, (batch,), device=device)
    out = {}
    for precision in ("fp32", "bf16"):
        def step(bf16: bool = precision == "bf16") -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(pixels, ids)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        out[f"{precision}_s_per_step"] = timed(step, repeat=2)
    return out


# The stage's memory at SLAKE's size, in two processes as in two runs. The first computes the
# features through the real path (`compute_features`: the split's tokens written batch by batch
# into one tensor, then streamed to the cache) with the towers replaced by random tokens of
# ViT-B/16's and BERT-base's output shapes: a CPU here would take an hour over the real towers,
# and what is measured is the memory around them. The second reads the cache and trains the
# default answer model for 20 steps, then scores the test split, as the stage does.
MEMORY_SETUP = PEAK_RSS + r"""
import json, sys, tempfile, types, torch
from pathlib import Path
from PIL import Image
from biomedclip.evaluate.feature_cache import cached_tensors
from biomedclip.storage import LocalStore
from biomedclip.vqa.features import TokenFeatures, split_features
from biomedclip.vqa.formats import Question, VqaDataset
torch.set_num_threads(1)
sizes, tokens, scale = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
root = Path(sys.argv[4])
count = {split: (max(1, round(sizes["images"][split] * scale)),
                 max(1, round(sizes["questions"][split] * scale))) for split in sizes["images"]}

class Visual(torch.nn.Module):  # ViT-B/16 at 224: 1 + 196 tokens of 768
    def forward_intermediates(self, x, **_):
        return {"image_intermediates": [torch.randn(len(x), 196, 768)],
                "image_intermediates_prefix": [torch.randn(len(x), 1, 768)]}

class Text(torch.nn.Module):  # BERT-base: 768 a token
    config = types.SimpleNamespace(pad_token_id=0)
    def transformer(self, input_ids, attention_mask):
        return types.SimpleNamespace(last_hidden_state=torch.randn(*input_ids.shape, 768))

class Towers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.visual, self.text, self.anchor = Visual(), Text(), torch.nn.Parameter(torch.zeros(1))

def tokenizer(texts):  # question i has 4 + i % (tokens - 4) real tokens, in a context of 256
    ids = torch.zeros(len(texts), 256, dtype=torch.long)
    for row, text in enumerate(texts):
        ids[row, :int(text)] = 1
    return ids
"""
MEMORY_WRITE = MEMORY_SETUP + r"""
encoder = types.SimpleNamespace(model=Towers(), preprocess=lambda image: torch.zeros(3, 224, 224),
                                tokenizer=tokenizer)
(root / "images").mkdir()
Image.new("RGB", (8, 8)).save(root / "images" / "0.png")
for i in range(1, max(i for i, _ in count.values())):
    (root / "images" / f"{i}.png").write_bytes((root / "images" / "0.png").read_bytes())
def question(q, images, split):  # its text is its length in tokens (see `tokenizer`)
    return Question(str(q), f"{q % images}.png", str(4 + q % (tokens - 4)), "yes", "open", "en",
                    split)
splits = {split: [question(q, i, split) for q in range(n)] for split, (i, n) in count.items()}
dataset = VqaDataset("slake", str(root), "slake", "slake", LocalStore(root / "images"), splits)
stored, keys = 0, {}
for split, questions in splits.items():
    before = set((root / "cache").glob("*.pt"))
    features, _ = split_features(encoder, "digest", dataset, split, questions, cache=root / "cache",
                                 batch_size=64)
    keys[split] = (set((root / "cache").glob("*.pt")) - before).pop().stem
    stored += sum(t.numel() * t.element_size() for t in features.as_dict().values())
    del features
(root / "keys.json").write_text(json.dumps(keys))
print(json.dumps({"rss_mib": peak_rss_mib(), "cached_mib": stored / 2**20,
                  "questions": sum(n for _, n in count.values()),
                  "images": sum(i for i, _ in count.values())}))
"""
MEMORY_READ = MEMORY_SETUP + r"""
from biomedclip.vqa.fusion import AnswerModel
from biomedclip.vqa.params import FusionParams, VqaParams
from biomedclip.vqa.train import fit_on_features, predict_on_features
keys = json.loads((root / "keys.json").read_text())
def read(split):  # the second run: every split from the cache (nothing embedded)
    def compute():
        raise RuntimeError("the cache lost a split")
    return TokenFeatures(**cached_tensors(root / "cache", keys[split], compute)[0])
answers = 222  # SLAKE's English training answers are about that many
def labels(n):
    return torch.randint(0, answers, (n,))
train, val = read("train"), read("val")
train = train.select(range(min(640, len(train.image_of))))  # 20 steps of 32
model = AnswerModel(768, 768, answers, FusionParams())
fit_on_features(model, train, labels(len(train.image_of)), val, labels(len(val.image_of)),
                VqaParams(epochs=1, batch_size=32, patience=None))
del train, val
predict_on_features(model, read("test"), batch_size=64)
print(json.dumps({"rss_mib": peak_rss_mib()}))
"""


def memory(scale: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for phase, child in (("write", MEMORY_WRITE), ("read", MEMORY_READ)):
            command = [sys.executable, "-c", child, json.dumps(SLAKE), str(SLAKE_TOKENS),
                       str(scale), tmp]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO,
                                  env=env)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            out.update({f"{phase}_rss_mib" if k == "rss_mib" else k: v for k, v in result.items()})
    return out


def report_tokens(profiles: list[str], device: torch.device) -> dict[str, tuple[int, int]]:
    print("\n1. token features per second (pooled: the embedding path, the same forward passes)")
    shapes = {}
    for profile in profiles:
        full = profile == "biomedclip"  # ViT-B/16 + BERT-base: seconds an image on a CPU core
        r = token_throughput(profile, 8 if full else 32, 16 if full else 256, 1 if full else 3,
                             device)
        shapes[profile] = r["image_token_shape"]
        image_ratio = r["image_tokens_per_s"] / r["pooled_images_per_s"]
        text_ratio = r["question_tokens_per_s"] / r["pooled_questions_per_s"]
        print(f"  {profile:16} images {r['image_tokens_per_s']:7.1f}/s (pooled "
              f"{r['pooled_images_per_s']:7.1f}/s, ratio {image_ratio:.2f}); questions "
              f"{r['question_tokens_per_s']:7.1f}/s (pooled {r['pooled_questions_per_s']:7.1f}/s, "
              f"ratio {text_ratio:.2f}); image tokens {r['image_token_shape']}")
    return shapes


def report_answer_steps(shapes: dict[str, tuple[int, int]], device: torch.device) -> None:
    from biomedclip.vqa.params import FusionParams

    reference = matmul_gflops(device)
    print(f"\n2. answer-model training steps on cached features (batch 32, 16 question tokens, "
          f"{ANSWERS} answers); a 1024^3 fp32 matmul here: {reference:.1f} GFLOP/s ({load()})")
    default = FusionParams()
    fusions = {f"default ({default.width}, {default.layers} layer, {default.heads} heads)": default,
               "METER (768, 6 layers, 12 heads)": FusionParams(width=768, layers=6, heads=12)}
    text_width = {"biomedclip-tiny": 128, "biomedclip": 768}
    for profile, shape in shapes.items():
        for name, fusion in fusions.items():
            r = answer_steps(shape, text_width[profile], fusion, device,
                             repeat=3 if fusion.width < 768 else 1)
            rate = r["gflop_per_step"] * r["steps_per_s"]
            print(f"  {profile:16} {name:34} {r['parameters_m']:5.1f}M params: "
                  f"{r['steps_per_s']:6.2f} steps/s, {r['gflop_per_step']:6.1f} GFLOP/step, "
                  f"{rate:6.1f} GFLOP/s = {rate / reference:.2f} of the matmul")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--skip-full", action="store_true",
                        help="leave out the full-size profile (minutes on a CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # as the pipeline runs on the shared cores (OMP_NUM_THREADS=1)
    print(f"device {device}; {load()}")
    profiles = ["biomedclip-tiny"] + ([] if args.skip_full else ["biomedclip"])
    report_answer_steps(report_tokens(profiles, device), device)
    if not args.skip_full:
        r = full_size_step(device)
        print(f"\n3. full-size fine-tuning step (ViT-B/16 at 224 + BERT-base + the default fusion, "
              f"batch 4): fp32 {r['fp32_s_per_step']:.1f} s/step, bf16 autocast "
              f"{r['bf16_s_per_step']:.1f} s/step ({load()})")
    print("\n4. memory at SLAKE's size (full-size token features in float16 through the feature "
          "cache, 20 training steps, the test split scored)")
    baseline = memory(0.0)  # one image and one question a split: the interpreter and libraries
    print(f"  {'baseline':>13}: peak RSS {baseline['write_rss_mib']:.0f} MiB computing, "
          f"{baseline['read_rss_mib']:.0f} MiB training")
    for scale in (0.25, 1.0):
        r = memory(scale)
        print(f"  {scale:4.2f} x SLAKE: {r['images']} images, {r['questions']} questions, features "
              f"{r['cached_mib']:.0f} MiB: peak RSS {r['write_rss_mib']:.0f} MiB computing and "
              f"caching (+{r['write_rss_mib'] - baseline['write_rss_mib']:.0f}), "
              f"{r['read_rss_mib']:.0f} MiB reading and training "
              f"(+{r['read_rss_mib'] - baseline['read_rss_mib']:.0f})")


if __name__ == "__main__":
    main()
