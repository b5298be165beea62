"""The `evaluate` section: retrieval, zero-shot benchmarks, linear probes, model tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import PathValue, S3Params, Section, Slug

BENCHMARK_FORMATS = ("auto", "labels_csv", "class_folders", "pcam", "lc25000", "rsna_pneumonia", "tcga_til")
BENCHMARK_PRESETS = ("pcam", "lc25000_lung", "lc25000_colon", "tcga_til", "rsna_pneumonia")
DETAILS = "details.json"  # every number of an evaluation, beside the plots' data (not a DVC metric)


class BenchmarkSpec(Section):
    """A labelled benchmark in the format users download it in, local or S3 (see the README)."""

    name: Slug
    path: str  # a folder or s3://bucket/prefix
    format: Literal[BENCHMARK_FORMATS] = "auto"  # auto: detected from the files
    preset: Literal[BENCHMARK_PRESETS] | None = None  # the paper's prompts, templates and headline metric
    # A list: the class names (= prompts) in order; a mapping: dataset label -> class prompt.
    classes: Annotated[tuple[str, ...], Field(strict=False)] | dict[str, str] | None = None
    # default: preset's, else global
    templates: Annotated[tuple[str, ...], Field(strict=False, min_length=1)] | None = None

    @model_validator(mode="after")
    def _fits(self) -> Self:
        bad = [t for t in self.templates or () if t.count("{}") != 1]
        if bad:
            raise ValueError(f"templates need exactly one {{}} for the class name: {bad}")
        if self.format == "lc25000" and self.preset not in ("lc25000_lung", "lc25000_colon"):
            raise ValueError("format lc25000 holds two tasks: set preset to lc25000_lung or lc25000_colon")
        return self


class EvaluateOutputs(Section):
    metrics: PathValue = Path("metrics/eval.json")
    plots: PathValue = Path("metrics/eval")  # recall@k curve and confusion matrices (DVC plots)
    report: PathValue = Path("reports/model-tests.md")  # behavioural checks of the model


class LinearProbeParams(Section):
    """Few-shot and full linear probes (ELEVATER's protocol, as the paper on PCam and RSNA): logistic
    regression on frozen, L2-normalised image features of benchmarks that have a train split."""

    enabled: bool = True  # benchmarks without a train split are never probed
    fractions: Annotated[tuple[float, ...], Field(strict=False, min_length=1)] = (0.01, 0.1, 1.0)
    seeds: Annotated[int, Field(ge=1)] = 3  # class-stratified draws per fraction below 1
    c_grid: Annotated[tuple[float, ...], Field(strict=False, min_length=1)] = (0.01, 0.1, 1.0, 10.0, 100.0)
    val_fraction: Annotated[float, Field(gt=0, lt=1, strict=False)] = 0.2  # carved from train without a val split
    max_iter: Annotated[int, Field(ge=10)] = 1000
    cache: PathValue = Path(".cache/features")  # image features per (model, benchmark version, split)

    @model_validator(mode="after")
    def _fractions_in_range(self) -> Self:
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must be in (0, 1]: {bad}")
        return self


class EvaluateParams(Section):
    """`biomedclip evaluate`: retrieval on the test split and zero-shot classification."""

    model: str | None = None  # default: the train stage's model; or a folder, or models:/name@alias
    batch_size: Annotated[int, Field(ge=1)] = 128
    split: Literal["train", "val", "test"] = "test"
    ks: Annotated[tuple[int, ...], Field(strict=False, min_length=1)] = (1, 5, 10)
    similarity_memory_mb: Annotated[int, Field(ge=16)] = 512  # one block of the similarity matrix
    templates: Annotated[tuple[str, ...], Field(strict=False, min_length=1)] = (
        "this is an image of {}", "{} presented in image", "a photo of {}")
    benchmarks: Annotated[tuple[BenchmarkSpec, ...], Field(strict=False)] = (
        BenchmarkSpec(name="pmc-figure-types", path="data/benchmarks/pmc-figure-types"),
        BenchmarkSpec(name="demo-pcam", path="data/benchmarks/native/pcam", preset="pcam",
                      classes={"0": "H&E histology", "1": "immunohistochemistry"}))
    s3: S3Params = S3Params()
    linear_probe: LinearProbeParams = LinearProbeParams()
    jpeg_quality: Annotated[int, Field(ge=10, le=95)] = 75  # the re-encoding invariance check
    min_jpeg_similarity: Annotated[float, Field(gt=0, le=1, strict=False)] = 0.9
    # Finished evaluations by weights, test shards, benchmarks and params: computed once (not versioned).
    cache: PathValue = Path(".cache/evaluations")
    outputs: EvaluateOutputs = EvaluateOutputs()

    @model_validator(mode="after")
    def _templates_have_a_slot(self) -> Self:
        bad = [t for t in self.templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"templates need exactly one {{}} for the class name: {bad}")
        return self
