"""Model profiles: open_clip model configs (JSON, registered with `add_model_config`) built offline.

`biomedclip` is the published architecture (ViT-B/16 from timm + BiomedBERT text tower, mlp
projection, CLS pooler, context 256, embed 512: 195,902,721 parameters); `biomedclip-tiny` is the
same family (a 6-layer ViT at 96 px, open_clip's own, + a 2-layer HF BERT) small enough to train on
2 CPU cores, and buildable by open_clip's own trainer as it is (the reference in bench/train.py).
The tiny text tower mean-pools its tokens: a freshly initialised 2-layer BERT gives nearly the
same CLS vector for every caption (cosine 0.9999), which holds the loss at chance for tens of
steps; the mean starts apart (0.96) and learns from the first steps. The HF text tower is built
from a local folder (BERT config + tokenizer, see `tokenizer.text_directory`), never the Hub.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from biomedclip.models import load_weights, located
from biomedclip.tracking import TrackingParams

log = logging.getLogger(__name__)

PROFILES = Path(__file__).with_name("profiles")
_registered = False


def register_profiles() -> None:
    """Make the profiles known to open_clip (`open_clip.list_models()`), once."""
    global _registered
    if not _registered:
        open_clip.add_model_config(PROFILES)
        _registered = True


def profile_config(profile: str, text_dir: Path, *, text_weights: bool = False) -> dict[str, Any]:
    """The open_clip model config of `profile` with its text tower pointed at `text_dir`."""
    register_profiles()
    config = open_clip.get_model_config(profile)
    if config is None:
        raise ValueError(f"unknown model profile {profile!r}; known: biomedclip, biomedclip-tiny")
    config = copy.deepcopy(config)
    config["text_cfg"].update(hf_model_name=str(text_dir), hf_tokenizer_name=str(text_dir),
                              hf_model_pretrained=text_weights)
    return config


class Bundle(NamedTuple):
    model: open_clip.CustomTextCLIP
    preprocess_train: Any  # PIL image -> tensor (RandomResizedCrop, the paper's augmentation)
    preprocess_val: Any  # PIL image -> tensor (resize + centre crop)
    tokenizer: Any  # list[str] -> LongTensor (N, context_length)
    config: dict[str, Any]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(profile: str, text_dir: Path, *, init_from: str | None = None, tracking: TrackingParams | None = None,
          text_weights: bool = False) -> Bundle:
    """Instantiate a profile offline: random weights, or those of `init_from` (any model source:
    a published-layout folder, `hf-hub:` from the local cache, an MLflow URI read from `tracking`'s
    store, or an open_clip checkpoint file); `text_weights` loads the BERT weights found in
    `text_dir` (a local PubMedBERT) into the text tower."""
    config = profile_config(profile, text_dir, text_weights=text_weights)
    model = open_clip.CustomTextCLIP(**config)
    image_size = config["vision_cfg"]["image_size"]
    if config["vision_cfg"].get("timm_model_name") and image_size != 224:
        model.visual.set_input_size(image_size)  # timm builds its ViTs for 224 px
    if init_from is not None:
        if Path(init_from).is_file():  # a bare checkpoint file
            load_weights(model, Path(init_from))
        else:
            with located(init_from, tracking=tracking) as files:
                load_weights(model, files.weights)
        log.info("initialised %s from %s", profile, init_from)
    preprocess_train = open_clip.image_transform(image_size, is_train=True,
                                                 mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    preprocess_val = open_clip.image_transform(image_size, is_train=False,
                                               mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir),
                                                context_length=config["text_cfg"]["context_length"])
    return Bundle(model, preprocess_train, preprocess_val, tokenizer, config)
