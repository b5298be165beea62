"""Load any model the same way: the training's model folder, a local open_clip / BiomedCLIP
folder (hf-hub style: `open_clip_config.json`, weights, `text/`), or an MLflow model URI
(`models:/biomedclip@champion`, `models:/biomedclip/3`, `runs:/<id>/model`).

Weights load from safetensors, or `torch.load(weights_only=True)`: never arbitrary pickles.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

from biomedclip.config import TrackingParams
from biomedclip.train.model import WEIGHT_FILES

log = logging.getLogger(__name__)
CONFIG = "open_clip_config.json"


class LoadedModel(NamedTuple):
    model: torch.nn.Module
    preprocess: Any  # PIL image -> tensor (evaluation transform)
    tokenizer: Any  # list[str] -> LongTensor
    folder: Path
    config: dict[str, Any]


def find_model_folder(root: Path) -> Path:
    """The folder holding `open_clip_config.json` at or below `root` (MLflow artifacts nest it)."""
    if (root / CONFIG).is_file():
        return root
    found = sorted(root.rglob(CONFIG))
    if not found:
        raise FileNotFoundError(f"{root}: no {CONFIG} (not an open_clip model folder)")
    return found[0].parent


def load_folder(folder: Path, device: torch.device | str = "cpu") -> LoadedModel:
    folder = find_model_folder(folder)
    spec = json.loads((folder / CONFIG).read_text())
    config = copy.deepcopy(spec["model_cfg"])
    text = folder / "text"
    if "hf_model_name" in config.get("text_cfg", {}):
        if not (text / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no text/ folder with the text tower's config and tokenizer")
        config["text_cfg"].update(hf_model_name=str(text), hf_tokenizer_name=str(text), hf_model_pretrained=False)
        model = open_clip.CustomTextCLIP(**config)
    else:
        model = open_clip.CLIP(**config)
    vision = config["vision_cfg"]
    if vision.get("timm_model_name") and vision.get("image_size", 224) != 224:
        model.visual.set_input_size(vision["image_size"])
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder}: no weights file ({', '.join(WEIGHT_FILES)})")
    open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
    model.to(device).eval()
    preprocess_cfg = spec.get("preprocess_cfg", {})
    preprocess = open_clip.image_transform(vision.get("image_size", 224), is_train=False,
                                           mean=preprocess_cfg.get("mean", OPENAI_DATASET_MEAN),
                                           std=preprocess_cfg.get("std", OPENAI_DATASET_STD))
    context = config.get("text_cfg", {}).get("context_length", 77)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text), context_length=context) \
        if "hf_model_name" in config.get("text_cfg", {}) else open_clip.get_tokenizer("ViT-B-32")
    return LoadedModel(model, preprocess, tokenizer, folder, spec)


def load_model(source: str | Path, device: torch.device | str = "cpu", download_to: Path | None = None,
               tracking: TrackingParams | None = None) -> LoadedModel:
    """A folder path, or an MLflow URI (`models:/...`, `runs:/...`) downloaded first from the
    tracking store `tracking` names (default: MLFLOW_TRACKING_URI, else the embedded store)."""
    text = str(source)
    if text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from biomedclip.tracking import download

        tracking = tracking or TrackingParams()
        if download_to is not None:
            return load_folder(download(text, download_to, tracking), device)
        with tempfile.TemporaryDirectory(prefix="biomedclip-model-") as tmp:  # loaded into memory, then gone
            return load_folder(download(text, Path(tmp), tracking), device)
    folder = Path(text)
    if not folder.exists():
        raise FileNotFoundError(f"model {folder} does not exist (a folder, or models:/name@alias)")
    return load_folder(folder, device)
