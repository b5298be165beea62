"""The `ingest` section: which PMC articles, figures and images become pairs, and where they go."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from biomedclip.config import Interval, PathValue, Rate, S3Params, Section
from biomedclip.ingest.licenses import CODES


class LicenseParams(Section):
    allowed: Annotated[tuple[str, ...], Field(strict=False)] = ("CC0", "CC BY", "CC BY-SA", "CC BY-ND", "PD")
    allow_non_commercial: bool = False  # adds CC BY-NC, CC BY-NC-SA, CC BY-NC-ND

    @model_validator(mode="after")
    def _known_codes(self) -> Self:
        unknown = sorted(set(self.allowed) - set(CODES))
        if unknown:
            raise ValueError(f"unknown licence codes {unknown}; known: {', '.join(CODES)}")
        return self


class CaptionParams(Interval):
    BOUNDS = ("min_words", "max_words")

    min_words: Annotated[int, Field(ge=1)] = 5
    max_words: Annotated[int, Field(ge=1)] = 1000


class ImageParams(Section):
    max_pixels: Annotated[int, Field(ge=1)] = 50_000_000  # refuse beyond: decompression bombs
    min_side: Annotated[int, Field(ge=1)] = 32
    max_side: Annotated[int, Field(ge=16)] = 512  # longer side resized down to this
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 90
    # Decode no more than needed: JPEG DCT scaling / integer reduce for images ≥ 2x the target.
    reduced_decode: bool = True


class DedupParams(Section):
    near: bool = True  # also drop perceptually identical images with the same caption
    max_distance: Annotated[int, Field(ge=0, le=16)] = 4  # Hamming distance of 64-bit pHashes


class DecontaminateParams(Section):
    """Drop corpus pairs whose image is within `max_distance` pHash bits of a benchmark image
    (`evaluate.benchmarks`, every split), hashed once per benchmark version into `hashes`."""

    enabled: bool = True  # false: nothing is checked (the report says so)
    max_distance: Annotated[int, Field(ge=0, le=16)] = 4  # Hamming distance of 64-bit pHashes
    hashes: PathValue = Path("data/benchmark-hashes.parquet")  # written by the benchmark_hashes stage
    cache: PathValue = Path(".cache/benchmark-hashes")  # per benchmark version (not versioned)


class PanelParams(Section):
    """Compound figures into panel pairs (`biomedclip.panels`, README "Panels"): each kept figure
    whose caption names panels by letter and whose image shows as many is cut into panel crops,
    each paired with the shared caption and its own sub-caption; any doubt keeps it whole."""

    enabled: bool = False  # the demo turns it on (params.yaml)
    min_confidence: Rate = 0.5  # below: the figure stays whole (a wrong split is worse than none)
    max_words: Annotated[int, Field(ge=16)] = 180  # a panel's text: the shared part is cut first


class SplitParams(Section):
    """Fractions of articles per split; an article's split is a hash of its PMCID and `salt`."""

    train: Rate = 0.85
    val: Rate = 0.05
    test: Rate = 0.10
    salt: str = "biomedclip-v1"

    @model_validator(mode="after")
    def _sum_to_one(self) -> Self:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class IngestOutputs(Section):
    pairs: PathValue = Path("data/ingest/pairs.parquet")
    rejects: PathValue = Path("data/ingest/rejects.parquet")
    images: PathValue = Path("data/ingest/images")
    panels: PathValue = Path("data/ingest/panels.parquet")  # one row per panel (empty when off)
    panel_examples: PathValue = Path("reports/panels")  # a page of example splits, for people
    report: PathValue = Path("metrics/ingest.json")
    state: PathValue = Path("data/ingest-state/state.sqlite")


class IngestParams(Section):
    """`biomedclip ingest`: PMC articles → the figure-caption pairs manifest."""

    source: str = "data/raw"  # a folder or s3://bucket/prefix
    layout: Literal["opendata", "legacy"] = "opendata"
    listing: Literal["prefix", "inventory"] = "prefix"  # opendata: list folders or read the inventory
    s3: S3Params = S3Params()
    limit: Annotated[int, Field(ge=1)] | None = None  # first N articles (by PMCID) only
    pmcids: PathValue | None = None  # a file with one PMCID per line: only those
    licenses: LicenseParams = LicenseParams()
    caption: CaptionParams = CaptionParams()
    image: ImageParams = ImageParams()
    dedup: DedupParams = DedupParams()
    decontaminate: DecontaminateParams = DecontaminateParams()
    panels: PanelParams = PanelParams()
    split: SplitParams = SplitParams()
    batch_size: Annotated[int, Field(ge=1)] = 16  # articles per task
    workers: Annotated[int, Field(ge=1)] = 2
    task_runner: Literal["threads", "dask"] = "threads"  # the Prefect flow's fan-out
    outputs: IngestOutputs = IngestOutputs()
