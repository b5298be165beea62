"""`params.yaml` → frozen, validated config objects.

The file is read once, at the entry point, by `load_params`. Every section is a pydantic model
with `extra="forbid"` and strict scalar types, so a typo'd key or a wrong type fails at start-up
with the file and the dotted key in the message, before any work is done.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PARAMS_PATH = Path("params.yaml")

# Paths and dates arrive from YAML as strings: they are the only fields coerced.
PathValue = Annotated[Path, Field(strict=False)]
DateValue = Annotated[dt.date, Field(strict=False)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and every bad key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Range(Section):
    """A closed interval: subclasses declare the two fields named in `BOUNDS` (default `min` and
    `max`) with their types and limits; the lower may not exceed the upper."""

    BOUNDS: ClassVar[tuple[str, str]] = ("min", "max")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        low, high = self.BOUNDS
        if getattr(self, low) > getattr(self, high):
            raise ValueError(f"{low} ({getattr(self, low)}) is greater than {high} ({getattr(self, high)})")
        return self


class IntRange(_Range):
    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1)]


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
                raise ValueError(f"unknown preset {value!r}: one of {', '.join(cls.PRESETS)}, or {{min, max[, median]}}")
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


class BenchmarkParams(Section):
    """The labelled zero-shot benchmark written beside the demo corpus, and demo stand-ins of the
    paper's benchmarks in their own formats (`native`)."""

    name: Slug = "pmc-figure-types"
    out: PathValue = Path("data/benchmarks")
    per_class: Annotated[int, Field(ge=1)] = 20
    seed: Annotated[int, Field(ge=0)] = 1
    image_side: SideRange = SideRange(min=160, max=320)

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
        outputs = {"out": self.out, "benchmark.out/name": self.benchmark.out / self.benchmark.name}
        if self.legacy_out is not None:
            outputs["legacy_out"] = self.legacy_out
        names = list(outputs)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                if _nested(outputs[first], outputs[second]):
                    raise ValueError(f"{first} ({outputs[first]}) and {second} "
                                     f"({outputs[second]}) must not contain one another")
        return self


class S3Params(Section):
    """How to reach an S3 (or S3-compatible) source; credentials come from the usual AWS chain."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO / moto
    region: str = "us-east-1"
    unsigned: bool = False  # anonymous access, as the public s3://pmc-oa-opendata allows
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 10  # attempts per request: throttling, 5xx, resets


class LicenseParams(Section):
    allowed: Annotated[tuple[str, ...], Field(strict=False)] = ("CC0", "CC BY", "CC BY-SA", "CC BY-ND", "PD")
    allow_non_commercial: bool = False  # adds CC BY-NC, CC BY-NC-SA, CC BY-NC-ND

    @model_validator(mode="after")
    def _known_codes(self) -> Self:
        from biomedclip.ingest.licenses import CODES

        unknown = sorted(set(self.allowed) - set(CODES))
        if unknown:
            raise ValueError(f"unknown licence codes {unknown}; known: {', '.join(CODES)}")
        return self


class CaptionParams(_Range):
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


class MedianRange(_Range):
    min: Annotated[float, Field(ge=0, strict=False)]
    max: Annotated[float, Field(ge=0, strict=False)]


class ValidateOutputs(Section):
    result: PathValue = Path("metrics/validate.json")  # per check: success, observed value
    data_docs: PathValue = Path("reports/validation")  # Great Expectations Data Docs (HTML)


class PanelChecks(Section):
    """Bounds on the panel table (with ingest.panels.enabled)."""

    max_overlap: Rate = 0.05  # of the smaller box: how much two panels of a figure may share
    per_figure: IntRange = IntRange(min=2, max=16)  # panels of one split figure


class ValidateParams(Section):
    """`biomedclip validate`: the quality gate between ingest and shard.

    Bounds on single values (caption words, image sides, licences, split names and fractions)
    come from the `ingest` section, so the gate checks what the ingest was asked to produce.
    """

    min_pairs: Annotated[int, Field(ge=1)] = 100
    split_tolerance: Annotated[float, Field(gt=0, le=0.5)] = 0.03  # |article fraction - target|
    max_reject_rate: Rate = 0.3  # of the last ingest (rejected / (rejected + kept))
    # Distribution checks that catch a silently broken parser (captions cut, figures merged).
    caption_words_median: MedianRange = MedianRange(min=8, max=250)
    figures_per_article_median: MedianRange = MedianRange(min=1, max=15)
    warn_only: Annotated[tuple[str, ...], Field(strict=False)] = (
        "caption_words_median", "figures_per_article_median")  # reported, never fatal
    panels: PanelChecks = PanelChecks()
    batch_rows: Annotated[int, Field(ge=1000)] = 5_000  # manifest rows staged per batch (memory flat past it)
    outputs: ValidateOutputs = ValidateOutputs()

    @model_validator(mode="after")
    def _known_checks(self) -> Self:
        from biomedclip.validate.checks import CHECKS

        unknown = sorted(set(self.warn_only) - set(CHECKS))
        if unknown:
            raise ValueError(f"unknown checks {unknown} in warn_only; known: {', '.join(CHECKS)}")
        return self


# ImageCLEF 2015 medical modality classes: the official codes, each with a name that reads as a
# zero-shot prompt ("this is an image of {}").
IMAGECLEF_2015: dict[str, str] = {
    # Diagnostic images: radiology.
    "DRUS": "ultrasound",
    "DRMR": "magnetic resonance imaging",
    "DRCT": "computed tomography",
    "DRXR": "x-ray radiography",
    "DRAN": "angiography",
    "DRPE": "positron emission tomography",
    "DRCO": "combined radiology modalities",
    # Diagnostic images: visible light photography.
    "DVDM": "dermatology skin photograph",
    "DVEN": "endoscopy",
    "DVOR": "photograph of other organs",
    # Diagnostic images: printed signals and waves.
    "DSEE": "electroencephalography",
    "DSEC": "electrocardiography",
    "DSEM": "electromyography",
    # Diagnostic images: microscopy.
    "DMLI": "light microscopy",
    "DMEL": "electron microscopy",
    "DMTR": "transmission microscopy",
    "DMFL": "fluorescence microscopy",
    # Diagnostic images: 3D reconstructions.
    "D3DR": "3D reconstruction",
    # Generic biomedical illustrations.
    "GTAB": "table",
    "GPLI": "program listing",
    "GFIG": "statistical chart or graph",
    "GSCR": "screenshot",
    "GFLO": "flowchart",
    "GSYS": "system overview diagram",
    "GGEN": "gene sequence",
    "GGEL": "chromatography or gel",
    "GCHE": "chemical structure",
    "GMAT": "mathematical formula",
    "GNCP": "non-clinical photograph",
    "GHDR": "hand-drawn sketch",
}


class FigureTypeParams(Section):
    """The card's estimate of what the corpus's figures show: zero-shot with a trained model over
    a figure-type taxonomy (default: ImageCLEF 2015's modality classes, as the paper's Figure 1)."""

    enabled: bool = True
    model: str | None = None  # null: the train stage's model (as evaluate.model); a folder, hf-hub:, models:/
    sample: Annotated[int, Field(ge=1)] = 500  # images, every k-th pair of the manifest
    batch_size: Annotated[int, Field(ge=1)] = 32
    classes: Annotated[dict[str, str], Field(strict=False, min_length=2)] = dict(IMAGECLEF_2015)


class CardParams(Section):
    """`biomedclip card` / dvc stage `dataset_card`: the corpus as a page people read."""

    out: PathValue = Path("reports/dataset")  # index.html, its charts, summary.json
    context_length: Annotated[int, Field(ge=8)] = 256  # the text tower's: the share of captions that fit
    token_sample: Annotated[int, Field(ge=1)] = 20_000  # captions tokenised (every k-th)
    figure_types: FigureTypeParams = FigureTypeParams()


class ShardOutputs(Section):
    shards: PathValue = Path("data/shards")  # {train,val,test}/NNNNNN.tar + sizes.json
    manifest: PathValue = Path("data/shards/manifest.json")  # shard -> samples, bytes, sha256
    report: PathValue = Path("metrics/shard.json")


class ShardParams(Section):
    """`biomedclip shard`: the validated manifest → WebDataset tar shards per split."""

    samples_per_shard: Annotated[int, Field(ge=1)] = 256  # PMC-15M: 10000 (about 1 GB a shard)
    seed: Annotated[int, Field(ge=0)] = 0  # the train order's shuffle
    # What a sample is: whole figures (PMC-15M); panel pairs where the ingest split a figure and
    # the figure where it did not; or both (needs ingest.panels.enabled for any panels).
    unit: Literal["figure", "panel", "both"] = "figure"
    outputs: ShardOutputs = ShardOutputs()

    @model_validator(mode="after")
    def _manifest_inside(self) -> Self:
        if self.outputs.manifest.parent != self.outputs.shards:
            raise ValueError(f"outputs.manifest ({self.outputs.manifest}) must sit directly in "
                             f"outputs.shards ({self.outputs.shards})")
        return self


class TokenizerParams(Section):
    """The text tower's tokenizer: PubMedBERT's when a local copy exists, else one built here."""

    pubmedbert_dir: PathValue | None = None  # a local HF directory (vocab.txt, tokenizer files)
    vocab_size: Annotated[int, Field(ge=100, le=100_000)] = 8192  # WordPiece built from captions
    min_frequency: Annotated[int, Field(ge=1)] = 2
    out: PathValue = Path("data/tokenizer")


class TrackingParams(Section):
    """MLflow: on by default; the tracking URI comes from MLFLOW_TRACKING_URI, else `uri`."""

    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "biomedclip"
    system_metrics: bool = True


class TrainOutputs(Section):
    dir: PathValue = Path("data/train")  # checkpoints/, final/ (the model), text/ (tokenizer + config)
    run_info: PathValue = Path("data/train/run.json")  # MLflow run id and what later stages need
    loss_curve: PathValue = Path("metrics/train_loss.csv")  # DVC plot
    metrics: PathValue = Path("metrics/train.json")


class TrainParams(Section):
    """`biomedclip train`: contrastive pretraining with open_clip (the BiomedCLIP recipe)."""

    profile: Literal["biomedclip", "biomedclip-tiny"] = "biomedclip-tiny"
    # Continue from a model: a published-layout folder, hf-hub:<org>/<repo> (local cache), a model
    # of this project, models:/ or runs:/ (its weights must fit `profile`; the tokenizer stage then
    # takes its vocabulary).
    init_from: str | None = None
    tokenizer: TokenizerParams = TokenizerParams()
    epochs: Annotated[int, Field(ge=1)] = 16
    samples_per_epoch: Annotated[int, Field(ge=1)] | None = None  # default: the train split's size
    global_batch: Annotated[int, Field(ge=2)] = 64  # over all processes and accumulation steps
    accum_freq: Annotated[int, Field(ge=1)] = 1  # micro-batches per step (features cached, open_clip style)
    lr: Annotated[float, Field(gt=0, strict=False)] = 5e-4
    weight_decay: Annotated[float, Field(ge=0, strict=False)] = 0.2
    betas: Annotated[tuple[float, float], Field(strict=False)] = (0.9, 0.98)
    eps: Annotated[float, Field(gt=0, strict=False)] = 1e-6
    warmup_steps: Annotated[int, Field(ge=0)] = 40  # the paper: 2000
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast (the paper's AMP)
    grad_checkpointing: bool = False
    seed: Annotated[int, Field(ge=0)] = 0
    workers: Annotated[int, Field(ge=0)] = 1  # data-loading processes per training process
    shuffle_buffer: Annotated[int, Field(ge=1)] = 1000
    nproc: Annotated[int, Field(ge=1)] = 1  # training processes on this machine (torchrun)
    checkpoint_every: Annotated[int, Field(ge=1)] = 50  # steps
    log_every: Annotated[int, Field(ge=1)] = 10  # steps
    tracking: TrackingParams = TrackingParams()
    outputs: TrainOutputs = TrainOutputs()

    @model_validator(mode="after")
    def _batch_divides(self) -> Self:
        if self.global_batch % self.accum_freq:
            raise ValueError(f"global_batch ({self.global_batch}) must be a multiple of "
                             f"accum_freq ({self.accum_freq})")
        return self


BENCHMARK_FORMATS = ("auto", "labels_csv", "class_folders", "pcam", "lc25000", "rsna_pneumonia", "tcga_til")
BENCHMARK_PRESETS = ("pcam", "lc25000_lung", "lc25000_colon", "tcga_til", "rsna_pneumonia")


class BenchmarkSpec(Section):
    """A labelled benchmark in the format users download it in, local or S3 (see the README)."""

    name: Slug
    path: str  # a folder or s3://bucket/prefix
    format: Literal[BENCHMARK_FORMATS] = "auto"  # auto: detected from the files
    preset: Literal[BENCHMARK_PRESETS] | None = None  # the paper's prompts, templates and headline metric
    # A list: the class names (= prompts) in order; a mapping: dataset label -> class prompt.
    classes: Annotated[tuple[str, ...], Field(strict=False)] | dict[str, str] | None = None
    templates: Annotated[tuple[str, ...], Field(strict=False, min_length=1)] | None = None  # default: preset's, else global

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
    outputs: EvaluateOutputs = EvaluateOutputs()

    @model_validator(mode="after")
    def _templates_have_a_slot(self) -> Self:
        bad = [t for t in self.templates if t.count("{}") != 1]
        if bad:
            raise ValueError(f"templates need exactly one {{}} for the class name: {bad}")
        return self


class GateParams(Section):
    """The promotion gate: champion and challenger re-evaluated on the challenger's data."""

    primary: str = "retrieval/image_to_text/recall_at_10"  # a key of the evaluation, `/`-joined
    min_improvement: Annotated[float, Field(ge=0, strict=False)] = 0.0  # challenger - champion >= this
    guards: Annotated[tuple[str, ...], Field(strict=False)] = (
        "retrieval/text_to_image/recall_at_10", "zero_shot/pmc-figure-types/top1")
    tolerance: Annotated[float, Field(ge=0, strict=False)] = 0.02  # a guard may drop at most this
    # An alias (e.g. `baseline`, Microsoft's model registered with `biomedclip register --model`)
    # the challenger must also not fall below on the primary metric, beyond the tolerance.
    reference: Slug | None = None


class RegisterParams(Section):
    """`biomedclip register / promote / rollback / lineage`: the MLflow model registry."""

    model_name: Slug = "biomedclip"
    gate: GateParams = GateParams()
    decision_log: PathValue = Path("registry/decisions.jsonl")  # append-only, versioned in git
    output: PathValue = Path("metrics/register.json")  # the registered version (DVC stage output)


# The aliases Prefect's schedules (croniter) accept, as the 5 fields they stand for.
CRON_ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a standard 5-field cron expression (or an alias), None if it is."""
    from cronsim import CronSim, CronSimError

    fields = CRON_ALIASES.get(expression.strip(), expression)
    if (count := len(fields.split())) != 5:
        return f"{count} fields, where cron has 5: minute hour day-of-month month day-of-week"
    try:
        CronSim(fields, dt.datetime(2026, 1, 1))
    except CronSimError as exc:
        return str(exc).lower()
    return None


class ScheduleParams(Section):
    """When the retrain deployment runs (`biomedclip schedule`, `prefect.yaml`)."""

    deployment: Slug = "weekly"  # the deployment is `retrain/<this>`
    cron: str = "0 3 * * 1"  # Mondays 03:00
    timezone: str = "UTC"  # an IANA name: Europe/London, America/New_York, ...

    @model_validator(mode="after")
    def _valid(self) -> Self:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if problem := cron_problem(self.cron):
            raise ValueError(f"cron: {self.cron!r} is not a cron expression ({problem}; e.g. '0 3 * * 1')")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: {self.timezone!r} is not an IANA time zone") from None
        return self


class RetrainParams(Section):
    """`biomedclip retrain` / `schedule`: sync new PMC versions, dvc repro, push, register, gate."""

    source: str | None = None  # a folder or s3://bucket/prefix in PMC's layout; null: no sync step
    listing: Literal["prefix", "inventory"] = "prefix"
    s3: S3Params = S3Params()
    workers: Annotated[int, Field(ge=1, le=64)] = 8  # concurrent listings and downloads
    max_removed_fraction: Rate = 0.05  # a sync removing more local versions than this stops
    state_dir: PathValue = Path("data/sync-state")  # what was mirrored (not versioned)
    data_dvc: PathValue = Path("data.dvc")  # the .dvc file recording ingest.source
    push: bool = True  # dvc push after dvc repro
    promote: bool = True  # run the promotion gate on the registered version
    git_branch: str | None = None  # commit the data version (data.dvc, dvc.lock, ...) on this branch
    git_paths: Annotated[tuple[str, ...], Field(strict=False)] = ("data.dvc", "dvc.lock", "metrics", "registry",
                                                                  "reports/flow-runs")
    on_busy: Literal["skip", "wait"] = "skip"  # a retrain already running: skip this one, or wait
    wait_timeout_s: Annotated[int, Field(ge=1)] = 6 * 3600
    lock: PathValue = Path(".retrain.lock")
    schedule: ScheduleParams = ScheduleParams()


class PipelineParams(Section):
    """What the orchestration layer (the Prefect flows) keeps beside the stages' outputs."""

    flow_runs: PathValue = Path("reports/flow-runs")  # <flow>.json: the flow run behind each stage's outputs


class Params(Section):
    """The whole `params.yaml`: one section per stage."""

    demo: DemoParams = DemoParams()
    ingest: IngestParams = IngestParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    shard: ShardParams = ShardParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    card: CardParams = CardParams()
    register_: RegisterParams = Field(RegisterParams(), alias="register")
    retrain: RetrainParams = RetrainParams()
    pipeline: PipelineParams = PipelineParams()


# What the embedded demo's params.yaml turns on that the library leaves off (a new feature is
# off for everyone else until it has proved itself): params.yaml is the defaults plus these.
DEMO_SWITCHES: dict[str, Any] = {"ingest.panels.enabled": True, "shard.unit": "both"}


def demo_defaults() -> Params:
    """The defaults with `DEMO_SWITCHES` applied: what the repository's params.yaml holds."""
    data = Params().model_dump(by_alias=True)
    for dotted, value in DEMO_SWITCHES.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return Params.model_validate(data, strict=False)


S = TypeVar("S", bound=Section)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict | list | tuple):  # a whole section: its fields say enough
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def parse_params(data: Any, *, source: str = "params") -> Params:
    """Validate an already-loaded mapping; `source` names it in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        lines = "\n".join(f"  {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source}: invalid configuration\n{lines}") from None


def load_params(path: Path = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate a params file. Raises `ConfigError` naming the file and bad keys."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(data, source=str(path))


def override(section: S, **changes: Any) -> S:
    """A copy of `section` with the non-None `changes` applied and validated again."""
    updates = {key: value for key, value in changes.items() if value is not None}
    if not updates:
        return section
    merged = {**section.model_dump(), **updates}
    try:
        return type(section).model_validate(merged, strict=False)
    except ValidationError as exc:
        lines = "\n".join(f"  {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"command-line options: invalid value\n{lines}") from None
