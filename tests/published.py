"""Checkpoints in the layout Microsoft published BiomedCLIP in, and a Hugging Face cache laid out
as the hub client writes it, for tests of the real loading path (no weights can be downloaded
here: the weights are random, the vocabulary is the real PubMedBERT one from ../shared/fixtures).

The published repo holds `open_clip_config.json` (text tower named by hub id, in today's or the
older key spelling), `open_clip_pytorch_model.bin` (a plain torch state dict that still carries
`text.transformer.embeddings.position_ids`) and, in some copies, the tokenizer files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Literal

import pytest
import torch

PUBMEDBERT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pubmedbert"
XRAY = PUBMEDBERT.parent / "images" / "nih_cxr14" / "00000003_000.png"
CAPTIONS = ["Chest X-ray showing bilateral opacities.", "H&E stain of a lymph node metastasis (x40)."]
needs_pubmedbert = pytest.mark.skipif(not PUBMEDBERT.is_dir(), reason=f"{PUBMEDBERT} is absent (the shared "
                                      "fixtures live beside the project in this workplace only)")

BIOMEDCLIP = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"  # today's name of the text tower
OLD_BERT = "microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract"  # older downloads' name
PUBMEDBERT_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# PubMedBERT's config.json; `small` keeps its vocabulary (30,522 rows) and shrinks the rest.
BERT_CONFIG = {"architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
               "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
               "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
               "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
               "type_vocab_size": 2, "vocab_size": 30522}
SMALL_BERT = {**BERT_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
              "num_hidden_layers": 2}


def model_cfg(size: Literal["small", "full"], spelling: Literal["current", "legacy"], bert: str = BERT) -> dict:
    """The published `model_cfg` (ViT-B/16 from timm, PubMedBERT, mlp projection, CLS pooler,
    context 256); `small` swaps in timm's ViT-Ti/16 so a test builds it in a second."""
    text = {"hf_model_name": bert, "hf_tokenizer_name": bert, "context_length": 256}
    if spelling == "current":
        text.update(hf_proj_type="mlp", hf_pooler_type="cls_last_hidden_state_pooler")
    else:
        text.update(proj="mlp", pooler_type="cls_last_hidden_state_pooler")
    vision = {"timm_model_name": "vit_base_patch16_224" if size == "full" else "vit_tiny_patch16_224",
              "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    return {"embed_dim": 512, "vision_cfg": vision, "text_cfg": text}


PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


def published_checkpoint(out: Path, pubmedbert: Path, *, size: Literal["small", "full"] = "small",
                         spelling: Literal["current", "legacy"] = "current", tokenizer_files: bool = True,
                         seed: int = 0) -> tuple[Path, dict]:
    """Write a random-weight BiomedCLIP in the published layout into `out`; returns the folder and
    the BERT config its text tower was built with (it belongs in the cache, not the folder)."""
    import open_clip

    bert = SMALL_BERT if size == "small" else BERT_CONFIG
    text_dir = out.parent / f"{out.name}-bert"
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "config.json").write_text(json.dumps(bert))
    shutil.copyfile(pubmedbert / "vocab.txt", text_dir / "vocab.txt")
    cfg = model_cfg(size, "current")
    cfg["text_cfg"].update(hf_model_name=str(text_dir), hf_tokenizer_name=str(text_dir), hf_model_pretrained=False)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**cfg)
    state = model.state_dict()
    state["text.transformer.embeddings.position_ids"] = torch.arange(bert["max_position_embeddings"]).unsqueeze(0)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / "open_clip_pytorch_model.bin")
    (out / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg(size, spelling, BERT if spelling == "current" else OLD_BERT),
         "preprocess_cfg": PREPROCESS}, indent=2))
    if tokenizer_files:
        for name in PUBMEDBERT_FILES:
            shutil.copyfile(pubmedbert / name, out / name)
    shutil.rmtree(text_dir)
    return out, bert


def add_to_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], *, commit: str | None = None) -> Path:
    """Put `files` into `cache` as huggingface_hub does: content in `blobs/`, `snapshots/<commit>/`
    symlinks to them, `refs/main` naming the commit. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../..") / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def hf_home(home: Path, checkpoint: Path, bert: dict, pubmedbert: Path, *, bert_ids=(BERT, OLD_BERT)) -> Path:
    """A Hugging Face home (`HF_HOME`) whose cache holds the published repo and its text tower,
    as a user's does after running the official snippet once. Returns `home`."""
    cache = home / "hub"
    add_to_hf_cache(cache, BIOMEDCLIP, {p.name: p.read_bytes() for p in sorted(checkpoint.iterdir()) if p.is_file()})
    for bert_id in bert_ids:  # the BERT repo has its config and vocabulary, no tokenizer_config
        add_to_hf_cache(cache, bert_id, {"config.json": json.dumps(bert).encode(),
                                         "vocab.txt": (pubmedbert / "vocab.txt").read_bytes()})
    return home
