"""Prefect flow `tokenizer`: the text tower's vocabulary (the `train.init_from` checkpoint's,
PubMedBERT's, or built from captions).

DVC runs it as the `tokenizer` stage; its output folder is versioned, so every training run and
every registered model of a data version uses the same vocabulary.

    python flows/tokenizer.py [--params params.yaml]
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import DEFAULT_PARAMS_PATH, TrainParams, load_params
from biomedclip.pipeline.runtime import record_flow_run, stage_main
from biomedclip.train.tokenizer import markdown, prepare_tokenizer


@task(name="build-tokenizer", cache_policy=NO_CACHE)
def tokenizer_task(params: TrainParams, pairs: Path) -> dict:
    return prepare_tokenizer(params.tokenizer, pairs, init_from=params.init_from, tracking=params.tracking)


@flow(name="tokenizer")
def tokenizer_flow(params_path: Path = DEFAULT_PARAMS_PATH) -> dict:
    params = load_params(params_path)
    result = tokenizer_task(params.train, params.ingest.outputs.pairs)
    create_markdown_artifact(key="tokenizer", markdown=markdown(result, params.train.tokenizer.out),
                             description="The text tower's vocabulary")
    record_flow_run(params, "tokenizer")
    return result


def main(argv: list[str] | None = None) -> int:
    return stage_main(tokenizer_flow, argv, description=(__doc__ or "").splitlines()[0],
                      errors=(FileNotFoundError, ValueError))
