"""A synthetic PMC corpus that looks like the real one: the pipeline's embedded default data."""

from biomedclip.demo.benchmark import BenchmarkReport, generate_benchmark
from biomedclip.demo.corpus import CorpusReport, generate_corpus
from biomedclip.demo.native import NativeReport, write_native

__all__ = ["BenchmarkReport", "CorpusReport", "NativeReport", "generate_benchmark", "generate_corpus", "write_native"]
