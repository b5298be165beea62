"""Ask a saved answer model about one image: `biomedclip vqa ask IMAGE "question"`.

The answer model is rebuilt from its folder (`vqa.model_folder`) on the encoders it was trained
on: the source model it names (whose weights must still have the recorded sha256: an answer model
read against other encoders would answer nonsense), with the fine-tuned encoder weights loaded
over it where the encoders were trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from biomedclip.evaluate.benchmarks import MAX_PIXELS
from biomedclip.evaluate.formats import decoded
from biomedclip.models import LoadedModel, load_model
from biomedclip.vqa.features import image_tokens, text_tokens
from biomedclip.vqa.fusion import AnswerModel
from biomedclip.vqa.model_folder import AnswerModelError, read_answer_model


@dataclass(frozen=True)
class Answer:
    answer: str
    probability: float


@dataclass
class Answerer:
    """An answer model on its encoders, ready for questions."""

    encoder: LoadedModel
    model: AnswerModel
    vocabulary: list[str]

    @torch.no_grad()
    def ask(self, image: Image.Image, question: str, top_k: int = 5) -> list[Answer]:
        """The `top_k` most probable answers, most probable first."""
        device = next(self.encoder.model.parameters()).device
        pixels = self.encoder.preprocess(image.convert("RGB")).unsqueeze(0).to(device)
        ids = self.encoder.tokenizer([question]).to(device)
        text, mask = text_tokens(self.encoder.model, ids)  # (1, T, Dt), (1, T)
        logits = self.model(image_tokens(self.encoder.model, pixels), text, mask)  # (1, A)
        probabilities = torch.softmax(logits.float(), dim=-1)[0].cpu()
        top = probabilities.topk(min(top_k, len(self.vocabulary)))
        return [Answer(self.vocabulary[i], float(p))
                for p, i in zip(top.values, top.indices, strict=True)]


def load_answerer(folder: Path, *, model: str | None = None, tracking: Any = None,
                  device: torch.device | str = "cpu") -> Answerer:
    """The answer model in `folder` on its encoders: the source model it records, or `model`
    (which must hold the same weights)."""
    saved = read_answer_model(folder)
    source = model or saved.encoder_model
    encoder = load_model(source, device=device, tracking=tracking)
    if encoder.digest != saved.encoder_digest:
        raise AnswerModelError(f"{folder}: the answer model was trained on encoders with weights "
                               f"sha256 {saved.encoder_digest[:12]}, and {source} holds "
                               f"{encoder.digest[:12]}: run `biomedclip vqa` again for this model")
    if saved.fine_tuned:
        encoder.model.load_state_dict(saved.encoder_state())
    return Answerer(encoder, saved.answer_model().to(device), saved.vocabulary)


def read_image(path: Path) -> Image.Image:
    """An image file as RGB (the pixel limit of the benchmarks applies)."""
    try:
        return decoded(path.read_bytes(), MAX_PIXELS)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None


def ask(folder: Path, image: Path | Image.Image, question: str, *, top_k: int = 5,
        model: str | None = None, tracking: Any = None) -> list[Answer]:
    """One question about one image: the top answers with their probabilities."""
    picture = read_image(image) if isinstance(image, Path) else image
    return load_answerer(folder, model=model, tracking=tracking).ask(picture, question, top_k)


def answers_markdown(question: str, answers: list[Answer]) -> str:
    """The answers as a small table (what the CLI prints)."""
    lines = [f"**{question}**", "", "| answer | probability |", "|---|---:|"]
    lines += [f"| {a.answer} | {a.probability:.3f} |" for a in answers]
    return "\n".join(lines) + "\n"
