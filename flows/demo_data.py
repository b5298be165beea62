"""Prefect flow `demo-data`: the embedded demo corpus and its zero-shot benchmark.

Wiring only: one library call per task, a markdown artifact with what was written. DVC runs it
as the `demo_benchmark` stage (`--no-corpus`); `biomedclip demo-data` is the same work without
Prefect, for people at a terminal.

    python flows/demo_data.py [--params params.yaml] [--no-corpus] [--no-benchmark]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from biomedclip.config import BenchmarkParams, DemoParams, load_params
from biomedclip.demo import generate_benchmark, generate_corpus


@task(name="write-corpus")
def write_corpus(params: DemoParams) -> str:
    return generate_corpus(params, workers=2).markdown()


@task(name="write-benchmark")
def write_benchmark(params: BenchmarkParams) -> str:
    report = generate_benchmark(params)
    return f"Benchmark `{report.path}`: {report.classes} classes, {report.images} images."


@flow(name="demo-data")
def demo_data(params_path: str = "params.yaml", corpus: bool = True, benchmark: bool = True) -> str:
    params = load_params(Path(params_path)).demo
    sections = []
    if corpus:
        sections.append(write_corpus(params))
    if benchmark:
        sections.append(write_benchmark(params.benchmark))
    summary = "\n\n".join(sections)
    create_markdown_artifact(key="demo-data", markdown=summary, description="Demo data written")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-corpus", dest="corpus", action="store_false", help="skip the corpus")
    parser.add_argument("--no-benchmark", dest="benchmark", action="store_false",
                        help="skip the benchmark")
    args = parser.parse_args(argv)
    demo_data(args.params, args.corpus, args.benchmark)


if __name__ == "__main__":
    main()
