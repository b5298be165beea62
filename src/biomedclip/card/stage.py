"""The card from the pipeline's params: which files it reads, and which model labels figure types.

`run` is the `card` stage's entry (its Prefect flow, `dvc repro card`, `biomedclip card`).
The figure types are estimated with `card.figure_types.model` when set, else with the train stage's
model (as `evaluate.model` defaults), and not at all, with the reason on the card, before any model
exists or with `card.figure_types.enabled: false`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomedclip.card.build import build_card
from biomedclip.card.figure_types import FigureTypes
from biomedclip.card.render import card_markdown
from biomedclip.models import model_uri
from biomedclip.params import Params
from biomedclip.stage import StageContext

log = logging.getLogger(__name__)


def figure_type_model(params: Params) -> tuple[str | None, str]:
    """The model that labels figure types, or None and why not."""
    spec = params.card.figure_types
    if not spec.enabled:
        return None, "card.figure_types.enabled is false"
    if spec.model:
        return model_uri(spec.model, params.register.model_name), f"card.figure_types.model ({spec.model})"
    final = params.train.outputs.dir / "final"
    if (final / "open_clip_config.json").is_file():
        return str(final), f"the train stage's model ({final})"
    return None, f"no model yet: the train stage has not written {final} (or set card.figure_types.model)"


def card_from_params(params: Params) -> dict[str, Any]:
    """Build the dataset card the params describe; returns its summary."""
    ingest, spec = params.ingest.outputs, params.card
    model, why = figure_type_model(params)
    types = None
    if model is not None:
        types = FigureTypes(model=model, classes=dict(spec.figure_types.classes), sample=spec.figure_types.sample,
                            templates=tuple(params.evaluate.templates), batch_size=spec.figure_types.batch_size,
                            tracking=params.tracking)
    else:
        log.info("dataset card: figure types not estimated: %s", why)
    tokenizer = params.train.tokenizer.out
    summary = build_card(
        pairs=ingest.pairs, rejects=ingest.rejects, panels=ingest.panels if params.ingest.panels.enabled else None,
        ingest_report=ingest.report, validate_result=params.validate.outputs.result, images=ingest.images,
        out=spec.out, tokenizer=tokenizer if tokenizer.is_dir() else None, context_length=spec.context_length,
        figure_types=types, data_docs=params.validate.outputs.data_docs, token_sample=spec.token_sample,
        figure_types_note=why)
    return summary


@dataclass(frozen=True)
class CardReport:
    summary: Mapping[str, Any]  # the card's numbers (`summary.json`)
    out: Path

    def markdown(self) -> str:
        return card_markdown(self.summary, self.out)


def run(params: Params, context: StageContext) -> CardReport:
    return CardReport(card_from_params(params), params.card.out)
