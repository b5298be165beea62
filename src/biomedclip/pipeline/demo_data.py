"""Prefect flow `demo-data`: the embedded demo corpus, its zero-shot benchmark, and stand-ins of the
paper's benchmarks in their own formats (PCam HDF5, LC25000 folders, RSNA CSV + DICOM).

DVC runs it as the `demo_benchmark` stage (`--no-corpus`); `biomedclip demo-data` is the same
work without Prefect, for people at a terminal.

    python flows/demo_data.py [--params params.yaml] [--no-corpus] [--no-benchmark]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from biomedclip.config import DEFAULT_PARAMS_PATH, BenchmarkParams, DemoParams, load_params
from biomedclip.demo import generate_benchmark, generate_corpus, write_native
from biomedclip.pipeline.runtime import guarded, record_flow_run


@task(name="write-corpus")
def write_corpus(params: DemoParams) -> str:
    return generate_corpus(params, workers=2).markdown()


@task(name="write-benchmark")
def write_benchmark(params: BenchmarkParams) -> str:
    return generate_benchmark(params).summary()


@task(name="write-native-benchmarks")
def write_native_benchmarks(params: BenchmarkParams) -> str:
    return write_native(params.native, seed=params.seed, per_class=params.per_class).summary()


@flow(name="demo-data")
def demo_data_flow(params_path: Path = DEFAULT_PARAMS_PATH, corpus: bool = True, benchmark: bool = True) -> str:
    params = load_params(params_path)
    sections = []
    if corpus:
        sections.append(write_corpus(params.demo))
    if benchmark:
        sections.append(write_benchmark(params.demo.benchmark))
        sections.append(write_native_benchmarks(params.demo.benchmark))
    summary = "\n\n".join(sections)
    create_markdown_artifact(key="demo-data", markdown=summary, description="Demo data written")
    record_flow_run(params, "demo-data")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS_PATH, help="params file (default: params.yaml)")
    parser.add_argument("--no-corpus", dest="corpus", action="store_false", help="skip the corpus")
    parser.add_argument("--no-benchmark", dest="benchmark", action="store_false", help="skip the benchmark")
    args = parser.parse_args(argv)
    return guarded(lambda: demo_data_flow(args.params, args.corpus, args.benchmark))
