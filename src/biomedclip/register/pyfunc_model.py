"""The registered model's MLflow pyfunc: embeddings and zero-shot probabilities, no repo needed.

Logged as "models from code" (this file is the model; nothing is pickled), with the model folder
in the published layout as its artifact (`open_clip_config.json`, the weights, the text tower's
`config.json` and tokenizer beside them; older versions: in `text/`) and pinned requirements
(torch, open_clip_torch, transformers, pillow). It depends on no module of this repository, so
`mlflow.pyfunc.load_model("models:/biomedclip@champion")` works anywhere.

Input: a DataFrame with an `image` column (raw bytes, base64 text, or a file path) and/or a
`text` column. Output: `image_embedding` / `text_embedding` (L2-normalised lists of floats) and,
when the `class_names` param is given, `probabilities` (softmax over the class prompts) and
`label` for each image.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

TEMPLATES = ("this is an image of {}", "{} presented in image", "a photo of {}")
# What `predict` returns, every column every time (README: "columns: ...").
OUTPUT_COLUMNS = ("image_embedding", "text_embedding", "probabilities", "label")
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")


def _image_bytes(value) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            if len(value) < 4096 and Path(value).is_file():
                return Path(value).read_bytes()
        except OSError:  # not a usable path: base64 then
            pass
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("an image must be bytes, base64 text or an existing file path") from None
    raise ValueError(f"an image must be bytes, base64 text or a path, not {type(value).__name__}")


class BiomedCLIPModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        import open_clip
        import torch

        folder = Path(context.artifacts["open_clip"])
        spec = json.loads((folder / "open_clip_config.json").read_text())
        config = copy.deepcopy(spec["model_cfg"])
        text = str(folder if (folder / "config.json").is_file() else folder / "text")
        config["text_cfg"].update(hf_model_name=text, hf_tokenizer_name=text, hf_model_pretrained=False)
        vision = config["vision_cfg"]
        if vision.get("timm_model_name"):
            vision["timm_model_pretrained"] = False
        model = open_clip.CustomTextCLIP(**config)
        if vision.get("timm_model_name") and vision.get("image_size", 224) != 224:
            model.visual.set_input_size(vision["image_size"])
        weights = next(folder / name for name in WEIGHT_FILES if (folder / name).is_file())
        open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
        self.model = model.eval()
        preprocess = spec.get("preprocess_cfg", {})
        self.preprocess = open_clip.image_transform(vision.get("image_size", 224), is_train=False,
                                                    mean=preprocess.get("mean"), std=preprocess.get("std"))
        self.tokenizer = open_clip.tokenizer.HFTokenizer(text, context_length=config["text_cfg"]["context_length"])
        self.torch = torch

    def _images(self, values) -> np.ndarray:
        from PIL import Image

        tensors = []
        for value in values:
            with Image.open(io.BytesIO(_image_bytes(value))) as image:
                tensors.append(self.preprocess(image.convert("RGB")))
        with self.torch.no_grad():
            return self.model.encode_image(self.torch.stack(tensors), normalize=True).float().numpy()

    def _texts(self, values: list[str]) -> np.ndarray:
        with self.torch.no_grad():
            return self.model.encode_text(self.tokenizer(values), normalize=True).float().numpy()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        # Every column, always (None where a row asked nothing of it): callers index them blind.
        out = pd.DataFrame({column: pd.Series([None] * len(model_input), index=model_input.index, dtype=object)
                            for column in OUTPUT_COLUMNS})
        images = model_input.get("image", None)
        if images is not None and images.notna().any():
            rows = images.notna().to_numpy()
            embeddings = self._images(images[rows].tolist())
            out.loc[rows, "image_embedding"] = pd.Series([e.tolist() for e in embeddings], index=out.index[rows])
            class_names = list(params.get("class_names") or [])
            if class_names:
                templates = list(params.get("templates") or TEMPLATES)
                classes = []
                for name in class_names:
                    prompts = self._texts([t.format(name) for t in templates])
                    mean = prompts.mean(axis=0)
                    classes.append(mean / np.linalg.norm(mean))
                logits = 100.0 * embeddings @ np.stack(classes).T
                logits -= logits.max(axis=1, keepdims=True)
                probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
                out.loc[rows, "probabilities"] = pd.Series([p.tolist() for p in probabilities], index=out.index[rows])
                out.loc[rows, "label"] = pd.Series([class_names[i] for i in probabilities.argmax(axis=1)],
                                                   index=out.index[rows])
        texts = model_input.get("text", None)
        if texts is not None and texts.notna().any():
            rows = texts.notna().to_numpy()
            embeddings = self._texts([str(t) for t in texts[rows]])
            out.loc[rows, "text_embedding"] = pd.Series([e.tolist() for e in embeddings], index=out.index[rows])
        return out


mlflow.models.set_model(BiomedCLIPModel())
