"""The `card` section: the dataset card (`biomedclip card`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from biomedclip.card.imageclef import IMAGECLEF_2015
from biomedclip.config import PathValue, Section


class FigureTypeParams(Section):
    """The card's estimate of what the corpus's figures show: zero-shot with a trained model over
    a figure-type taxonomy (default: ImageCLEF 2015's modality classes, as the paper's Figure 1)."""

    enabled: bool = True
    model: str | None = None  # null: the train stage's model (as evaluate.model); a folder, hf-hub:, models:/
    sample: Annotated[int, Field(ge=1)] = 500  # images, every k-th pair of the manifest
    batch_size: Annotated[int, Field(ge=1)] = 32
    classes: Annotated[dict[str, str], Field(strict=False, min_length=2,
                                              default_factory=lambda: dict(IMAGECLEF_2015))]


class CardParams(Section):
    """`biomedclip card` / dvc stage `card`: the corpus as a page people read."""

    out: PathValue = Path("reports/dataset")  # index.html, its charts, summary.json
    context_length: Annotated[int, Field(ge=8)] = 256  # the text tower's: the share of captions that fit
    token_sample: Annotated[int, Field(ge=1)] = 20_000  # captions tokenised (every k-th)
    figure_types: FigureTypeParams = FigureTypeParams()
