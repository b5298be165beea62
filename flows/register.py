"""Prefect flow `register`: the trained model into the MLflow registry, with its lineage.

Wiring only: one library call (pyfunc logged into the training's run, a registered version
tagged with git, data, manifest, validation, shard and dvc.lock digests, params, the Prefect flow
runs of each stage and the evaluation; alias `challenger`), a markdown artifact. Promotion is a
separate, gated decision: `biomedclip promote`. DVC runs this as the `register` stage.

    python flows/register.py [--params params.yaml]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from biomedclip.config import load_params
from biomedclip.register.stage import register_trained


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def register_task(params_path: Path) -> dict:
    return register_trained(load_params(params_path), params_path)


@flow(name="register")
def register_flow(params_path: Path) -> dict:
    result = register_task(params_path)
    rows = "\n".join(f"| {k.removeprefix('biomedclip.')} | {v} |" for k, v in sorted(result["tags"].items()))
    state = "registered" if result["created"] else "already registered (unchanged)"
    create_markdown_artifact(key="registered-model", markdown=(
        f"## `{result['uri']}` {state}\n\nAlias `challenger`; promote with `biomedclip promote`.\n\n"
        f"| lineage | value |\n|---|---|\n{rows}\n"), description="Registered model version")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    return register_flow(args.params)


if __name__ == "__main__":
    main()
