"""Prefect flow `dataset-card`: the corpus as a page people read (`reports/dataset/index.html`).

One library call (`biomedclip.card.stage.card_from_params`: counts, charts, the figure types
estimated by the train stage's model or `card.figure_types.model`), its summary as a markdown
artifact. DVC runs it as the `dataset_card` stage.

    python flows/dataset_card.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from biomedclip.card import CardInputError, card_markdown
from biomedclip.card.stage import card_from_params
from biomedclip.config import DEFAULT_PARAMS_PATH, load_params
from biomedclip.pipeline.runtime import record_flow_run, stage_main


@flow(name="dataset-card")
def dataset_card_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    summary = card_from_params(params)
    create_markdown_artifact(key="dataset-card", markdown=card_markdown(summary, params.card.out),
                             description=f"The dataset card: {params.card.out / 'index.html'}")
    record_flow_run(params, "dataset-card")
    return summary


def main(argv: list[str] | None = None) -> int:
    return stage_main(dataset_card_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(CardInputError, FileNotFoundError))
