"""The `demo` section: the synthetic PMC corpus `biomedclip demo-data` writes, and its benchmarks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, model_validator

from biomedclip.config import DateValue, IntRange, PathValue, Rate, Section, Slug


class SideRange(IntRange):
    """An image's long side in pixels, big enough for every figure type to be drawn recognisably:
    uniform in [min, max], or, with `median`, log-normal around it (sigma `SPREAD` in log space)
    and clipped to [min, max]. A preset's name stands for its range (`PRESETS`): `demo`, the
    demo's small figures, or `pmc`, PMC's journal figures (BiomedCLIP: over 75% of PMC-15M's
    images are above 336 px; journal JPEGs are commonly 1,000 to 3,000 px)."""

    SPREAD: ClassVar[float] = 0.5
    PRESETS: ClassVar[dict[str, dict[str, int]]] = {
        "demo": {"min": 160, "max": 560},
        "pmc": {"min": 300, "max": 4000, "median": 1200},
    }

    min: Annotated[int, Field(ge=64, le=4096)]
    max: Annotated[int, Field(ge=64, le=4096)]
    median: Annotated[int, Field(ge=64, le=4096)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in cls.PRESETS:
                raise ValueError(f"unknown preset {value!r}: one of {', '.join(cls.PRESETS)}, "
                                 "or {min, max[, median]}")
            return cls.PRESETS[value]
        return value

    @model_validator(mode="after")
    def _median_inside(self) -> Self:
        if self.median is not None and not self.min <= self.median <= self.max:
            raise ValueError(f"median ({self.median}) is outside [{self.min}, {self.max}]")
        return self


class NoiseRates(Section):
    """How often each kind of real-PMC mess appears in the demo corpus.

    Article-level rates are per article; figure-level rates are per figure. Kinds that are
    alternatives of one another (an image has one encoding; a graphic has one condition) are
    drawn from one categorical choice, so their rates must sum to at most 1.
    """

    # Article level.
    non_commercial_license: Rate = 0.08
    non_cc_license: Rate = 0.03
    retracted: Rate = 0.015
    multiple_versions: Rate = 0.05
    floats_group: Rate = 0.1
    no_figures: Rate = 0.03
    supplementary_material: Rate = 0.15
    graphical_abstract: Rate = 0.04  # a <fig> in the abstract, with neither label nor caption
    table_graphic: Rate = 0.08  # a <table-wrap> whose table is an image (not a figure)
    formula_graphic: Rate = 0.04  # a <disp-formula> drawn as an image (not a figure)
    jats_namespace: Rate = 0.05  # JATS in its default namespace, as OAI-PMH serves it
    # Figure structure.
    composite: Rate = 0.2
    fig_group: Rate = 0.03
    multiple_graphics: Rate = 0.03
    alternatives: Rate = 0.03
    back_matter: Rate = 0.02
    no_caption: Rate = 0.02
    duplicate_image: Rate = 0.03
    thumbnail: Rate = 0.03
    # Caption content.
    mathml: Rate = 0.05
    inline_graphic: Rate = 0.03
    citation: Rate = 0.15
    # Graphic condition (one of; the rest are fine).
    missing_media: Rate = 0.015
    corrupt_image: Rate = 0.015
    tiny_image: Rate = 0.01
    huge_image: Rate = 0.005
    # Image encoding (one of; the rest are the figure type's usual JPEG or PNG).
    cmyk_jpeg: Rate = 0.02
    greyscale: Rate = 0.03
    palette_png: Rate = 0.03
    png16: Rate = 0.015
    rgba_png: Rate = 0.02
    tiff: Rate = 0.02
    gif: Rate = 0.02

    LICENSES: ClassVar[tuple[str, ...]] = ("non_commercial_license", "non_cc_license")
    CONDITIONS: ClassVar[tuple[str, ...]] = ("missing_media", "corrupt_image", "tiny_image", "huge_image")
    ENCODINGS: ClassVar[tuple[str, ...]] = ("cmyk_jpeg", "greyscale", "palette_png", "png16", "rgba_png", "tiff", "gif")

    @model_validator(mode="after")
    def _exclusive_groups_fit(self) -> Self:
        for group in (self.LICENSES, self.CONDITIONS, self.ENCODINGS):
            total = sum(getattr(self, name) for name in group)
            if total > 1.0:
                raise ValueError(f"rates of {', '.join(group)} sum to {total:.3f} > 1")
        return self


class VqaDemoParams(Section):
    """The VQA stand-ins `biomedclip demo-data` writes beside the other benchmarks."""

    out: PathValue = Path("data/benchmarks/vqa")  # vqa_rad/ and slake/ under it; default: benchmark.out/vqa
    seed: Annotated[int, Field(ge=0)] = 3
    vqa_rad_images: Annotated[int, Field(ge=4)] = 128
    slake_images: Annotated[int, Field(ge=8)] = 128
    image_side: SideRange = SideRange(min=160, max=256)


class BenchmarkParams(Section):
    """The labelled zero-shot benchmark written beside the demo corpus, and demo stand-ins of the
    paper's benchmarks in their own formats (`native`)."""

    name: Slug = "pmc-figure-types"
    out: PathValue = Path("data/benchmarks")
    per_class: Annotated[int, Field(ge=1)] = 20
    seed: Annotated[int, Field(ge=0)] = 1
    image_side: SideRange = SideRange(min=160, max=320)
    vqa: VqaDemoParams = VqaDemoParams()  # VQA-RAD and SLAKE stand-ins, in their own formats

    @model_validator(mode="before")
    @classmethod
    def _vqa_beside_the_others(cls, data: Any) -> Any:
        """The VQA stand-ins go under `out` unless `vqa.out` says where: a params file that moves
        the benchmarks moves them all."""
        if isinstance(data, dict) and isinstance(data.get("vqa", {}), dict) and "out" not in data.get("vqa", {}):
            out = Path(data.get("out", cls.model_fields["out"].default))
            data = {**data, "vqa": {**data.get("vqa", {}), "out": out / "vqa"}}
        return data

    @property
    def native(self) -> Path:
        """Where the paper's benchmarks' demo stand-ins go, in their own formats (PCam HDF5,
        LC25000 folders, RSNA CSV + DICOM): `out/native/{pcam,lc25000,rsna_pneumonia}`."""
        return self.out / "native"


def _nested(a: Path, b: Path) -> bool:
    a, b = a.absolute(), b.absolute()
    return a == b or a in b.parents or b in a.parents


class DemoParams(Section):
    """`biomedclip demo-data`: a synthetic corpus in PMC's own layouts."""

    out: PathValue = Path("data/raw")
    articles: Annotated[int, Field(ge=1)] = 600
    seed: Annotated[int, Field(ge=0)] = 0
    first_pmcid: Annotated[int, Field(ge=1)] = 11_000_000
    snapshot_date: DateValue = dt.date(2026, 11, 1)
    legacy_out: PathValue | None = None
    figures_per_article: IntRange = IntRange(min=1, max=6)
    image_side: SideRange = SideRange(min=160, max=560)  # longer side; aspect ratios vary
    noise: NoiseRates = NoiseRates()
    benchmark: BenchmarkParams = BenchmarkParams()

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.snapshot_date < dt.date(2015, 3, 1):
            raise ValueError("snapshot_date must be 2015-03-01 or later (articles date from 2015)")
        outputs = {"out": self.out, "benchmark.out/name": self.benchmark.out / self.benchmark.name,
                   "benchmark.vqa.out": self.benchmark.vqa.out}
        if self.legacy_out is not None:
            outputs["legacy_out"] = self.legacy_out
        names = list(outputs)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                if _nested(outputs[first], outputs[second]):
                    raise ValueError(f"{first} ({outputs[first]}) and {second} "
                                     f"({outputs[second]}) must not contain one another")
        return self
