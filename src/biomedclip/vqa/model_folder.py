"""The saved answer model of one benchmark: `vqa.outputs.model/<benchmark>/`, written atomically.

- `answer_model.safetensors`: the fusion and classifier (`vqa.fusion.AnswerModel`);
- `encoders.safetensors`: the fine-tuned encoders (open_clip's state dict), only when the
  encoders were trained; with frozen encoders the answer model reads the source model's own;
- `vocabulary.json`: the answers, in class order (`{"answers": [...]}`);
- `rejects.json`: every question of the benchmark left out, with its file, qid, reason, detail;
- `vqa_model.json`: what rebuilds it: the encoder model it was trained on (as referenced, and
  the sha256 of its weights), the token widths, the fusion's shape, the benchmark and how the
  epoch was chosen.

Safetensors and JSON only: nothing is unpickled when it is read back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from biomedclip.atomic_io import atomic_directory
from biomedclip.vqa.fusion import AnswerModel
from biomedclip.vqa.params import FusionParams

ANSWER_WEIGHTS, ENCODER_WEIGHTS = "answer_model.safetensors", "encoders.safetensors"
VOCABULARY, CONFIG, REJECTS = "vocabulary.json", "vqa_model.json", "rejects.json"


class AnswerModelError(ValueError):
    """A saved answer model that cannot be used (names the folder and what is wrong)."""


@dataclass(frozen=True)
class SavedAnswerModel:
    folder: Path
    config: dict[str, Any]
    vocabulary: list[str]

    @property
    def encoder_model(self) -> str:
        return self.config["encoder"]["model"]

    @property
    def encoder_digest(self) -> str:
        return self.config["encoder"]["digest"]

    @property
    def fine_tuned(self) -> bool:
        return bool(self.config["encoder"]["fine_tuned"])

    def answer_model(self) -> AnswerModel:
        from safetensors.torch import load_file

        widths = self.config["widths"]
        model = AnswerModel(widths["image"], widths["text"], len(self.vocabulary),
                            FusionParams.model_validate(self.config["fusion"], strict=False))
        model.load_state_dict(load_file(str(self.folder / ANSWER_WEIGHTS)))
        return model.eval()

    def encoder_state(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.folder / ENCODER_WEIGHTS))


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous copies that share no memory (safetensors refuses shared storage)."""
    return {name: value.detach().to("cpu").contiguous().clone() for name, value in state.items()}


def write_answer_model(final: Path, *, answer_state: dict[str, torch.Tensor], vocabulary: list[str],
                       config: dict[str, Any], rejects: list[dict[str, str]] | None = None,
                       encoder_state: dict[str, torch.Tensor] | None = None) -> None:
    """Write the folder `final` atomically (a killed run leaves the previous one or none)."""
    from safetensors.torch import save_file

    with atomic_directory(final) as staging:
        save_file(_tensors(answer_state), str(staging / ANSWER_WEIGHTS))
        if encoder_state is not None:
            save_file(_tensors(encoder_state), str(staging / ENCODER_WEIGHTS))
        answers = json.dumps({"answers": vocabulary}, ensure_ascii=False, indent=1)
        (staging / VOCABULARY).write_text(answers + "\n", encoding="utf-8")
        described = json.dumps(config, ensure_ascii=False, indent=2, sort_keys=True)
        (staging / CONFIG).write_text(described + "\n", encoding="utf-8")
        listed = json.dumps(rejects or [], ensure_ascii=False, indent=1)
        (staging / REJECTS).write_text(listed + "\n", encoding="utf-8")


def read_answer_model(folder: Path) -> SavedAnswerModel:
    missing = [n for n in (ANSWER_WEIGHTS, VOCABULARY, CONFIG) if not (folder / n).is_file()]
    if missing:
        raise AnswerModelError(f"{folder}: not an answer model folder (missing "
                               f"{', '.join(missing)}); "
                               "`biomedclip vqa` writes one per benchmark under vqa.outputs.model")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        vocabulary = json.loads((folder / VOCABULARY).read_text(encoding="utf-8"))["answers"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AnswerModelError(f"{folder}: unreadable {CONFIG} or {VOCABULARY} ({exc})") from None
    saved = SavedAnswerModel(folder, config, list(vocabulary))
    if saved.fine_tuned and not (folder / ENCODER_WEIGHTS).is_file():
        raise AnswerModelError(f"{folder}: the encoders were fine-tuned but {ENCODER_WEIGHTS} "
                               "is missing")
    return saved
