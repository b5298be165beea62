"""Prefect flow `tokenizer`: the text tower's vocabulary (PubMedBERT's, or built from captions).

Wiring only. DVC runs it as the `tokenizer` stage; its output folder is versioned, so every
training run and every registered model of a data version uses the same vocabulary.

    python flows/tokenizer.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import load_params
from biomedclip.train.tokenizer import prepare_tokenizer


@task(name="build-tokenizer", cache_policy=NO_CACHE)
def tokenizer_task(params, pairs: Path) -> dict:
    return prepare_tokenizer(params, pairs)


@flow(name="tokenizer")
def tokenizer_flow(params_path: Path) -> dict:
    params = load_params(params_path)
    result = tokenizer_task(params.train.tokenizer, params.ingest.outputs.pairs)
    create_markdown_artifact(key="tokenizer", markdown=(
        f"## Tokenizer `{params.train.tokenizer.out}`\n\n{result['vocab_size']} tokens; source: "
        f"{result['source']}\n"), description="The text tower's vocabulary")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return tokenizer_flow(args.params)


if __name__ == "__main__":
    main()
