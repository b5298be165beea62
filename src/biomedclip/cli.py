"""`biomedclip`: one sub-command per user action, each reading `params.yaml` unless flags override.

Logging is configured here, once; every command loads the params file once, validates it, and
fails with the file and key named (exit code 2) before doing any work. A pipeline stage's command
runs the stage's library entry, as its Prefect flow does (the stage table,
`biomedclip.pipeline.stages`), and prints the same report. What a command can fail with is mapped
to an exit code in one place (`stages.exit_code`): one line on stderr, no traceback
(`--log-level DEBUG` shows it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from biomedclip.config import override
from biomedclip.console import configure_logging
from biomedclip.params import DEFAULT_PARAMS_PATH, Params, load_params
from biomedclip.pipeline.stages import FAILED, exit_code

log = logging.getLogger("biomedclip")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in messages stay copy-pastable

REFUSED = 3  # exit code: the promotion gate said no (USAGE 2: bad params or options; FAILED 1: the work failed)
# Errors commands report as one line beyond every stage's own (`biomedclip.pipeline.stages`).
COMMAND_ERRORS = ("biomedclip.retrain.cycle:RetrainFailed", "biomedclip.search.searcher:IndexModelMismatch")
PREFIXES = {"ValidationFailed": "validation failed"}


class _Commands(TyperGroup):
    """Every command's expected errors become one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            code = exit_code(exc, COMMAND_ERRORS)
            if code is None:
                raise
            log.debug("%s", type(exc).__name__, exc_info=True)
            prefix = PREFIXES.get(type(exc).__name__, "error")
            err.print(f"[bold red]{prefix}:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(code) from None


app = typer.Typer(
    name="biomedclip",
    cls=_Commands,
    help="Build BiomedCLIP models: mine PMC figure-caption pairs, validate, shard, pretrain "
    "with open_clip, evaluate, and register them in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
)


@dataclass
class Context:
    """What every command shares: the params file, read once for the whole process."""

    params_path: Path
    _params: Params | None = None

    def params(self) -> Params:
        if self._params is None:
            self._params = load_params(self.params_path)
        return self._params


def _run_stage(ctx: typer.Context, name: str, params: Params, *, record: bool = True, **options: Any) -> Any:
    """Stage `name`'s library entry, here (holding its lock), with `params` as the command's
    options changed them; its report printed as the flow publishes it. Returns the report.
    `record`: whether the run rewrites the stage's outputs whole (else its record stays)."""
    from rich.markdown import Markdown

    from biomedclip.pipeline.runner import run_here

    state: Context = ctx.obj
    report = run_here(name, params, state.params_path, command=ctx.command_path, record=record, **options)
    out.print(Markdown(report.markdown()))
    return report


def _full_reference(reference: str, params: Params) -> str:
    from biomedclip.models import model_uri

    return model_uri(reference, params.register.model_name)


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@app.callback()
def main(
    ctx: typer.Context,
    params: Annotated[Path, typer.Option("--params", "-p", help="The params file every command "
                                         "reads its defaults from (give it before the command).")]
    = DEFAULT_PARAMS_PATH,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False, help="How much to log.")]
    = LogLevel.INFO,
) -> None:
    configure_logging(log_level.value)
    ctx.obj = Context(params)


@app.command("demo-data")
def demo_data(
    ctx: typer.Context,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Corpus folder, in the "
                                                 "s3://pmc-oa-opendata layout. (default: demo.out)")] = None,
    articles: Annotated[int | None, typer.Option(help="Number of articles. (default: demo.articles)")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed. (default: demo.seed)")] = None,
    legacy_out: Annotated[Path | None, typer.Option(help="Also write the corpus in the retired "
                                                    "FTP layout (oa_package/ tarballs + "
                                                    "oa_file_list.csv) here.")] = None,
    image_side: Annotated[str | None, typer.Option(help="Image size profile, a preset: 'demo' (long "
                                                   "side 160-560 px) or 'pmc' (300-4,000 px, log-normal "
                                                   "around 1,200: PMC's journal figures, for benchmarks). "
                                                   "(default: demo.image_side)")] = None,
    corpus: Annotated[bool, typer.Option(help="Write the corpus.")] = True,
    benchmark: Annotated[bool | None, typer.Option(help="Write the zero-shot benchmark "
                                                   "(demo.benchmark.out/NAME) and the paper's benchmarks' "
                                                   "stand-ins in their own formats (demo.benchmark.out/native): "
                                                   "the demo-data stage's outputs. Default: yes, unless --out "
                                                   "puts the corpus elsewhere than demo.out.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes that draw images.")] = min(2, os.cpu_count() or 1),
    force: Annotated[bool, typer.Option(help="Replace output folders even if demo-data did not "
                                        "write them (never the current folder or its parents).")] = False,
) -> None:
    """Generate the embedded demo dataset: a PMC corpus that looks like the real one.

    Articles in today's **s3://pmc-oa-opendata** layout (PMC{id}.{v}/ with JATS XML, text,
    JSON metadata and media; metadata/ copies; the daily S3 inventory), figures of 16 types with
    captions that describe them, and the mess real PMC has at the rates in **demo.noise**.
    The same --articles and --seed give a byte-identical tree on any machine with the locked
    dependencies, so a fresh clone regenerates exactly the version recorded in data.dvc.
    """
    from biomedclip.atomic_io import check_replaceable
    from biomedclip.demo.corpus import MARKER, generate_corpus

    state: Context = ctx.obj
    everything = state.params()
    params = override(everything.demo, out=out_dir, articles=articles, seed=seed, legacy_out=legacy_out,
                      image_side=image_side)
    # The benchmarks are the demo-data stage's outputs in this workspace: a corpus written
    # elsewhere leaves them (and the stage's flow-run record) alone unless asked.
    if benchmark is None:
        benchmark = out_dir is None or out_dir.absolute() == everything.demo.out.absolute()
    if corpus:
        check_replaceable(params.out, MARKER, force=force)
    if benchmark:
        check_replaceable(params.benchmark.out / params.benchmark.name, MARKER, force=force)
        check_replaceable(params.benchmark.native, MARKER, force=force)
        check_replaceable(params.benchmark.vqa.out, MARKER, force=force)
    if corpus:
        report = generate_corpus(params, workers=workers, force=force)
        table = Table(title=f"demo corpus → {params.out}", show_header=False)
        for name, value in report.sizes():
            table.add_row(name, value)
        noise = Table(title="noise injected (articles or figures)")
        noise.add_column("kind")
        noise.add_column("count", justify="right")
        for kind, count in sorted(report.noise_counts().items()):
            noise.add_row(kind, str(count))
        out.print(table, noise)
        if params.legacy_out is not None:
            out.print(f"legacy layout → {params.legacy_out}")
    if benchmark:
        _run_stage(ctx, "demo-data", everything.model_copy(update={"demo": params}), force=force)


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JATS article: PMC "
                                         "XML, an OAI-PMH GetRecord response, or a publisher .nxml.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the article as JSON (pmcid, pmid, "
                                          "license, figures with caption and graphics).")] = False,
    panels: Annotated[list[Path] | None, typer.Option(
        "--panels", exists=True, dir_okay=False, help="A figure image of the article (its file name "
        "matches a graphic's href): show how it splits into panel pairs. Repeat for several.")] = None,
    min_confidence: Annotated[float | None, typer.Option(min=0, max=1, help="With --panels: below this "
                                                         "layout confidence the figure stays whole. "
                                                         "(default: ingest.panels.min_confidence)")] = None,
    panels_out: Annotated[Path | None, typer.Option("--panels-out", file_okay=False, help="With --panels: "
                                                    "write each image with its panel boxes drawn here.")] = None,
) -> None:
    """Show one article as the ingest sees it: ids, licence, every figure and its caption.

    With **--panels IMAGE**, also how that figure would split into panel pairs: the panels found
    in the image, the caption's shared part and sub-captions, and the pairing (or why the figure
    stays whole), for debugging a real article.
    """
    import json

    from biomedclip.ingest.jats import JatsError, parse_article

    try:
        article = parse_article(file.read_bytes())
    except JatsError as exc:
        err.print(f"[bold red]{exc.reason.value}:[/] {file}: {exc.detail}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(article.to_json(), indent=2, ensure_ascii=False))
        return
    out.print(f"[bold]{article.pmcid or '(no PMCID)'}[/]  PMID {article.pmid or '-'}  "
              f"licence {article.license.code or 'unknown'}  {article.title}", highlight=False)
    table = Table("fig_id", "label", "graphics", "panels", "caption", show_lines=True)
    for fig in article.figures:
        table.add_row(fig.fig_id, fig.label, "\n".join(fig.graphics), str(fig.panels),
                      fig.caption or "[red](no caption)[/]")
    out.print(table)
    if panels:
        state: Context = ctx.obj
        ingest = state.params().ingest  # the ingest's own image and panel settings
        ingest = override(ingest, panels=override(ingest.panels, min_confidence=min_confidence).model_dump())
        for image in panels:
            _show_panels(article, image, ingest, panels_out)


def _show_panels(article: Any, image: Path, ingest: Any, out_dir: Path | None) -> None:
    """`inspect --panels`: what the ingest does with one figure image (biomedclip.panels.inspect)."""
    from rich.markdown import Markdown

    from biomedclip.panels.inspect import inspect_panels

    found = inspect_panels(article, image, ingest)
    out.print(Markdown(found.markdown()))
    if out_dir is not None:
        out.print(f"written: {found.save_drawing(out_dir)}", highlight=False)


@app.command("benchmark-hashes")
def benchmark_hashes(ctx: typer.Context) -> None:
    """Hash every image of every benchmark in `evaluate.benchmarks` (every split) for the ingest's
    decontamination: pairs whose image is within `ingest.decontaminate.max_distance` pHash bits
    of one leave the corpus as `benchmark_overlap` rejects.

    Each (benchmark, split) is hashed once per version (its files, labels and classes) and kept in
    `ingest.decontaminate.cache`; the list is written to `ingest.decontaminate.hashes`.
    """
    state: Context = ctx.obj
    _run_stage(ctx, "benchmark-hashes", state.params())


@app.command("ingest")
def ingest(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Option(help="Folder or s3://bucket/prefix. (default: ingest.source)")] = None,
    layout: Annotated[str | None, typer.Option(help="opendata or legacy. (default: ingest.layout)")] = None,
    listing: Annotated[str | None, typer.Option(help="prefix or inventory. (default: ingest.listing)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N articles.")] = None,
    pmcids: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                help="Only the PMCIDs listed in this file.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Threads. (default: ingest.workers)")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint (MinIO, ...). "
                                                     "(default: ingest.s3.endpoint_url)")] = None,
    unsigned: Annotated[bool | None, typer.Option("--unsigned/--signed", help="Anonymous S3 access, "
                                                  "as the public s3://pmc-oa-opendata allows. "
                                                  "(default: ingest.s3.unsigned)")] = None,
) -> None:
    """Mine figure–caption pairs from PMC articles into the pairs manifest (the PMC-15M stage).

    Reads the source (today's s3://pmc-oa-opendata layout on S3 or on disk, or legacy oa_package
    tarballs), keeps licensed figures with their captions, stores verified, resized JPEGs by
    content hash, removes duplicates, splits by article, and writes pairs.parquet,
    rejects.parquet and the report. Re-runs only re-read new or changed articles.
    """
    state: Context = ctx.obj
    everything = state.params()
    params = everything.ingest
    s3 = override(params.s3, endpoint_url=endpoint_url, unsigned=unsigned)
    params = override(params, source=source, layout=layout, listing=listing, limit=limit,
                      pmcids=pmcids, workers=workers, s3=s3.model_dump())
    _run_stage(ctx, "ingest", everything.model_copy(update={"ingest": params}))


@app.command("validate")
def validate(
    ctx: typer.Context,
    manifest: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="The pairs manifest. "
                                                  "(default: ingest.outputs.pairs)")] = None,
) -> None:
    """Check the pairs manifest with Great Expectations before it costs GPU hours.

    Columns and types, nulls, unique pair ids, caption and image bounds, split names, fractions
    and leakage, licences, the last ingest's reject rate, and distributions that catch a broken
    parser. Writes the result JSON (DVC metrics) and Data Docs HTML; exits 1 naming each failed
    critical check with sample rows. Checks listed in `validate.warn_only` only warn.
    """
    state: Context = ctx.obj
    params = state.params()
    ingest = params.ingest
    if manifest is not None:
        ingest = override(ingest, outputs=override(ingest.outputs, pairs=manifest).model_dump())
    _run_stage(ctx, "validate", params.model_copy(update={"ingest": ingest}))


@app.command("card")
def card(ctx: typer.Context) -> None:
    """Write the dataset card: the corpus as a page people read (`card.out`/index.html).

    Caption lengths in words and in the text tower's tokens (the share that fits the context),
    image sizes, formats and colour modes as published, licences, articles per year, figures per
    article, pairs per split, panel pairs, rejects by reason with examples, the gate's verdict,
    and the figure types estimated by zero-shot with the train stage's model or
    `card.figure_types.model` (ImageCLEF 2015's modality classes). Offline HTML and PNG charts;
    the same inputs give the same bytes. Run after the ingest (and the gate).
    """
    state: Context = ctx.obj
    _run_stage(ctx, "card", state.params())


@app.command("shard")
def shard(
    ctx: typer.Context,
    samples_per_shard: Annotated[int | None, typer.Option(min=1, help="Samples per tar shard. "
                                                          "(default: shard.samples_per_shard)")] = None,
    unit: Annotated[str | None, typer.Option(help="What a sample is: figure (whole figures, as PMC-15M), "
                                             "panel (panel pairs where the ingest split a figure, the "
                                             "figure elsewhere) or both. (default: shard.unit)")] = None,
) -> None:
    """Write the validated manifest as WebDataset tar shards per split (open_clip's layout).

    `shards/{train,val,test}/NNNNNN.tar` with `KEY.jpg/.txt/.json` samples (figures by pair_id,
    panels by panel_id), a sizes.json per split and a shard manifest (samples, bytes, sha256 per
    shard). Byte-reproducible; a killed run resumes where it stopped.
    """
    state: Context = ctx.obj
    params = state.params()
    config = override(params.shard, samples_per_shard=samples_per_shard, unit=unit)
    _run_stage(ctx, "shard", params.model_copy(update={"shard": config}))


@app.command("tokenizer")
def tokenizer_command(ctx: typer.Context) -> None:
    """Prepare the text tower's vocabulary in `train.tokenizer.out` (HF format).

    The vocabulary of the checkpoint training starts from (`train.init_from`), else a local
    PubMedBERT's (`train.tokenizer.pubmedbert_dir`), else a deterministic uncased WordPiece
    vocabulary built from the manifest's train captions, as PubMedBERT built its own from PubMed.
    """
    state: Context = ctx.obj
    _run_stage(ctx, "tokenizer", state.params())


@app.command("train")
def train(
    ctx: typer.Context,
    nproc: Annotated[int | None, typer.Option(min=1, help="Training processes on this machine: 1 runs "
                                              "here, more start torchrun (gloo on CPU, NCCL on GPU). "
                                              "(default: train.nproc)")] = None,
    resume: Annotated[bool | None, typer.Option("--resume/--fresh", help="Continue from the latest "
                                                "checkpoint (an error if none), or ignore checkpoints. "
                                                "Default: continue only a checkpoint of the same run.")] = None,
) -> None:
    """Pretrain the CLIP model on the train shards (the BiomedCLIP recipe; `train.*` params).

    Streams the shards with webdataset, trains with the sharded contrastive loss (AdamW, cosine
    schedule with warm-up, optional bf16 and gradient checkpointing), checkpoints every
    `train.checkpoint_every` steps, logs to MLflow, and writes the model folder, the loss curve
    and validation retrieval. Under torchrun or srun already, it joins that process group.
    """
    from biomedclip.train.loop import Resume

    state: Context = ctx.obj
    params = state.params()
    mode = Resume.AUTO if resume is None else (Resume.ALWAYS if resume else Resume.NEVER)
    params = params.model_copy(update={"train": override(params.train, nproc=nproc)})
    _run_stage(ctx, "train", params, resume=mode)


@app.command("evaluate")
def evaluate_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="The model: a folder or local-dir:PATH (open_clip / "
                                              "BiomedCLIP layout), hf-hub:ORG/REPO (local cache), "
                                              "models:/NAME@ALIAS, models:/NAME/N, runs:/..., or @ALIAS / N "
                                              "(register.model_name's). (default: evaluate.model, else the "
                                              "train stage's model)")] = None,
) -> None:
    """Measure a model as the paper did: test-split retrieval and zero-shot classification.

    Image→text and text→image Recall@k, mean and median rank (chunked: bounded memory), zero-shot
    top-1, balanced accuracy, macro-F1 (AUROC for binary tasks) with prompt ensembles on each
    benchmark in `evaluate.benchmarks`, and behavioural model tests. Writes metrics/eval.json,
    the plots' data and a model-test report.
    """
    state: Context = ctx.obj
    params = state.params()
    _run_stage(ctx, "evaluate", params.model_copy(update={"evaluate": override(params.evaluate, model=model)}))


@app.command("register")
def register_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Register a model trained elsewhere instead: a folder in "
                                              "the published layout or local-dir:PATH, hf-hub:ORG/REPO (from "
                                              "the local Hugging Face cache), or an MLflow URI.")] = None,
    alias: Annotated[str, typer.Option(help="The alias an external model gets (with --model).")] = "baseline",
) -> None:
    """Register the trained model in MLflow with its full lineage (alias `challenger`), or, with
    `--model`, a model trained elsewhere (alias `baseline`).

    The trained model: logs a pyfunc (images and/or texts in, normalised embeddings and zero-shot
    probabilities out; safetensors weights, no pickles) plus the open_clip folder, and tags the
    version with the git commit, data, manifest, validation, shard and dvc.lock digests, params,
    Prefect flow runs and evaluation. Registering the same model again returns the existing version.

    `--model` (e.g. Microsoft's `hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`):
    its weights as published, an MLflow run with its evaluation on today's test split and
    benchmarks, and *external* lineage (source, weights sha256, config). The same weights register
    once; `biomedclip compare models:/biomedclip@champion models:/biomedclip@baseline` then says
    which is better.
    """
    state: Context = ctx.obj
    params = state.params()
    if model is not None:
        from biomedclip.register.external import register_external

        result = register_external(params.register, params.tracking, params.evaluate,
                                   params.shard.outputs.shards, source=_full_reference(model, params), alias=alias)
        out.print(f"{result['uri']} {'registered' if result['created'] else 'already registered'} "
                  f"(alias {alias}) from {model}")
        return
    _run_stage(ctx, "register", params)


vqa_app = typer.Typer(invoke_without_command=True, rich_markup_mode="markdown", add_completion=False)
app.add_typer(vqa_app, name="vqa")


@vqa_app.callback()
def vqa_command(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="The encoders: a folder or local-dir:PATH, hf-hub:ORG/REPO, "
                                              "models:/NAME@ALIAS, models:/NAME/N, @ALIAS or N. (default: vqa.model, "
                                              "else the train stage's model)")] = None,
    benchmark: Annotated[str | None, typer.Option(help="Only this benchmark of vqa.benchmarks (its answer model is "
                                                  "written; the metrics and report only when all run).")] = None,
) -> None:
    """Train an answer model per benchmark of `vqa.benchmarks` on the encoders' token features
    (METER-style co-attention) and score it without leaks: the vocabulary from training answers
    only, the epoch chosen on validation data, the test split read once, open / closed / overall
    accuracy beside the question-only baseline and the paper's published numbers. Writes
    `metrics/vqa.json`, `reports/vqa.md` and the answer models in `data/vqa/`.
    """
    if ctx.invoked_subcommand is not None:
        return
    state: Context = ctx.obj
    params = state.params()
    if benchmark is not None:
        params.vqa.benchmark(benchmark)  # an unknown name stops here, naming the configured ones
    chosen = params.model_copy(update={"vqa": override(params.vqa, model=model)})
    # One benchmark is a partial run: the stage's outputs (metrics, report) are not all rewritten.
    _run_stage(ctx, "vqa", chosen, record=benchmark is None, benchmark=benchmark)


@vqa_app.command("ask")
def vqa_ask_command(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The image to ask about.")],
    question: Annotated[str, typer.Argument(help="The question, in the benchmark's language.")],
    benchmark: Annotated[str | None, typer.Option(help="Whose answer model (and vocabulary). (default: the first of "
                                                  "vqa.benchmarks)")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="How many answers. (default: vqa.top_k)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The answers and probabilities as JSON.")] = False,
) -> None:
    """One question about one image: the answer model's top answers, with their probabilities.
    The answer model must have been trained on the encoders it records (`biomedclip vqa` first)."""
    import json

    from rich.markdown import Markdown

    from biomedclip.vqa.ask import answers_markdown, ask

    state: Context = ctx.obj
    params = state.params()
    name = benchmark or params.vqa.benchmarks[0].name
    params.vqa.benchmark(name)
    answers = ask(params.vqa.outputs.model / name, image, question, top_k=top_k or params.vqa.top_k,
                  tracking=params.tracking)
    if as_json:
        print(json.dumps([{"answer": a.answer, "probability": round(a.probability, 6)} for a in answers], indent=2))
    else:
        out.print(Markdown(answers_markdown(question, answers)))


@app.command("embed")
def embed_command(
    ctx: typer.Context,
    source: Annotated[Path | None, typer.Argument(help="What to embed: a folder of images, a .parquet or .csv of "
                                                  "`id` and image paths (`image`/`path`) and/or texts "
                                                  "(`text`/`caption`), or the ingest's pairs.parquet or "
                                                  "panels.parquet. Without it: the embed stage (the corpus).")] = None,
    dest: Annotated[Path | None, typer.Argument(help="The .parquet to write (with SOURCE).")] = None,
    model: Annotated[str | None, typer.Option(help="The model: a folder or local-dir:PATH, hf-hub:ORG/REPO, "
                                              "models:/NAME@ALIAS, models:/NAME/N, @ALIAS or N. (default: "
                                              "embed.model, else the train stage's model)")] = None,
    images: Annotated[Path | None, typer.Option(help="The image store a table's `image_key`s name (with a "
                                                "pairs or panels table: default ingest.outputs.images).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="CPU: processes of one torch thread each; GPU: "
                                                "image-decoding threads. (default: embed.workers)")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda. (default: embed.device)")] = None,
) -> None:
    """Embed images and/or texts with a model into a Parquet of float16 vectors.

    `id`, `kind`, `image_embedding`, `text_embedding` and the model's digest, written a chunk at a
    time (memory stays flat) and resumable after a kill; unusable rows go to a rejects table beside
    it with their reason. Without SOURCE and DEST it is the embed stage: every kept pair and panel
    pair of the corpus, into `embed.out` (what the index is built from).
    """
    state: Context = ctx.obj
    params = state.params()
    config = override(params.embed, model=model, workers=workers, device=device)
    if source is None and dest is None:
        _run_stage(ctx, "embed", params.model_copy(update={"embed": config}))
        return
    if source is None or dest is None:
        raise typer.BadParameter("give both SOURCE and DEST, or neither (the embed stage)", param_hint="SOURCE DEST")
    from rich.markdown import Markdown

    from biomedclip.embed.inputs import open_input
    from biomedclip.embed.run import embed
    from biomedclip.embed.stage import stage_model

    chosen = stage_model(params.model_copy(update={"embed": config}))
    summary = embed(open_input(source, params.ingest.image, images=images or params.ingest.outputs.images), dest,
                    model=chosen, batch_size=config.batch_size, chunk_rows=config.chunk_rows,
                    workers=config.workers, device=config.device, tracking=params.tracking)
    out.print(Markdown(f"Embedded {summary['rows']:,} rows of `{source}` into `{dest}` with `{chosen}` "
                       f"({summary['rejected']:,} rejected: `{dest.with_suffix('')}.rejects.parquet`)."))


@app.command("index")
def index_command(ctx: typer.Context) -> None:
    """Build the vector index over the corpus's image embeddings (`index.out`).

    The FAISS family chosen as autofaiss chooses (exact below `index.exact_below` vectors, HNSW
    when it fits `index.memory_budget_mb`, else IVF-PQ re-ranked), its search effort tuned to
    recall@10 >= `index.target_recall` against exact search, every result's metadata (PMCID,
    figure, panel, caption, licence, year, split, estimated figure type) beside it, and the model
    and embeddings it was built from recorded. Run `biomedclip embed` first.
    """
    state: Context = ctx.obj
    _run_stage(ctx, "index", state.params())


class _QueryOrCommand(TyperGroup):
    """`search QUERY ...` answers the query; `search serve ...` runs the server (a sub-command's
    name in the first place is the sub-command, anything else the query)."""

    allow_interspersed_args = True  # `search "a query" -k 5`: the options after the query are the query's

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            click.Command.parse_args(self, ctx, [])  # the query's options stay unset
            ctx._protected_args, ctx.args = args[:1], args[1:]  # click's own split of a sub-command
            return ctx.args
        return super().parse_args(ctx, args)


search_app = typer.Typer(cls=_QueryOrCommand, invoke_without_command=True,
                         rich_markup_mode="markdown", add_completion=False,
                         help="Find figures by text and/or image in the corpus's index (`search QUERY`), or "
                              "serve the search page and JSON API (`search serve`).")
app.add_typer(search_app, name="search")


@search_app.callback()
def search_command(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="What to find, in words (a caption-like description).")] = None,
    k: Annotated[int | None, typer.Option("-k", min=1, help="How many figures. (default: index.serve.default_k; at "
                                          "most index.serve.max_k)")] = None,
    image: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="An image to find figures like "
                                               "(with QUERY: both, summed).")] = None,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="Keep results that satisfy it: "
                                                      "`license in (CC BY, CC0)`, `year >= 2020`, `type = "
                                                      "radiology`, `split = test`, `kind = panel`. Repeat to "
                                                      "combine.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Every field of every result, as JSON.")] = False,
    model: Annotated[str | None, typer.Option(help="Search with this model (its weights must be the index's; "
                                              "default: the model the index was built from).")] = None,
) -> None:
    """Find figures: ranked by similarity to QUERY and/or --image, with score, PMCID, figure,
    panel, caption and licence. Answers only from an index built from the model it searches with.
    """
    if ctx.invoked_subcommand is not None:
        return
    if query is None and image is None:
        out.print(ctx.get_help())  # what a bare `biomedclip search` asks for
        raise typer.Exit(0)
    from biomedclip.search.filters import FilterError, parse_filters
    from biomedclip.search.searcher import Searcher
    from biomedclip.search.serve import QueryError, check_upload
    from biomedclip.search.terminal import results_json, results_text

    state: Context = ctx.obj
    params = state.params()
    serve = params.index.serve
    k = k or serve.default_k
    if k > serve.max_k:
        raise typer.BadParameter(f"{k} is more than index.serve.max_k ({serve.max_k})", param_hint="-k")
    if query is not None and len(query) > serve.max_query_chars:
        raise typer.BadParameter(f"{len(query)} characters, more than index.serve.max_query_chars "
                                 f"({serve.max_query_chars})", param_hint="QUERY")
    try:
        chosen = parse_filters(filters or [])
        picture = check_upload(image.read_bytes(), params.ingest.image, serve.max_upload_mb) if image else None
    except (FilterError, QueryError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--filter" if isinstance(exc, FilterError) else "--image") \
            from None
    searcher = Searcher.open(params.index.out, _full_reference(model, params) if model else None,
                             tracking=params.tracking)
    found = searcher.search(query, picture, k=k, filters=chosen)
    if as_json:
        print(results_json(found))
    else:
        out.print(results_text(found, width=out.width), highlight=False, markup=False, soft_wrap=True)


@search_app.command("serve")
def search_serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="The address to listen on. (default: index.serve.host, "
                                             "127.0.0.1: this machine only)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="(default: index.serve.port, 8765)")] = None,
    model: Annotated[str | None, typer.Option(help="Search with this model (its weights must be the index's).")]
    = None,
) -> None:
    """Serve the search page (a search box, an image upload, filters; results as thumbnails with
    their captions and article links) and the JSON API (`GET /api/search?q=&k=&filter=`, `POST
    /api/search` with an `image`) until interrupted. A refreshed index is picked up by itself."""
    from biomedclip.search.serve import SearchService, create_app, serve_forever

    state: Context = ctx.obj
    params = state.params()
    config = override(params.index.serve, host=host, port=port)
    service = SearchService(params.index.out, _full_reference(model, params) if model else None, params.tracking)
    app_ = create_app(service, serve=config, checks=params.ingest.image, images=params.ingest.outputs.images)
    serve_forever(app_, host=config.host, port=config.port)


@app.command("compare")
def compare_command(
    ctx: typer.Context,
    models: Annotated[list[str], typer.Argument(help="Two or more models, each a folder or local-dir:PATH, "
                                                "hf-hub:ORG/REPO, models:/NAME@ALIAS, models:/NAME/N, runs:/..., "
                                                "or @ALIAS / N of register.model_name. The first is the "
                                                "reference.")],
    report: Annotated[Path, typer.Option(help="Where the markdown table and the JSON go (compare.md, "
                                         "compare.json).")] = Path("reports/compare"),
) -> None:
    """Evaluate models on the same test split and benchmarks, side by side, with the differences.

    Stored numbers are not comparable (the test split grows with PMC): every model is evaluated
    here, as `evaluate` does. `biomedclip compare @champion @baseline` answers "is ours better
    than Microsoft's?" (the best value of each metric in bold; Δ against the first model).
    """
    import json

    from biomedclip.atomic_io import atomic_write_bytes
    from biomedclip.evaluate.compare import compare, markdown

    state: Context = ctx.obj
    params = state.params()
    sources = [_full_reference(m, params) for m in models]
    result = compare(sources, params.evaluate, shards_dir=params.shard.outputs.shards,
                     tracking=params.tracking, progress=lambda s: err.print(f"evaluating {s}", highlight=False))
    for source, where in result["reused"].items():
        err.print(f"{source}: evaluated before on the same data: reused {where}", highlight=False)
    atomic_write_bytes(report / "compare.md", markdown(result).encode())
    atomic_write_bytes(report / "compare.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    out.print(_comparison_table(result))
    out.print(f"written: {report / 'compare.md'}, {report / 'compare.json'}", highlight=False)


def _comparison_table(result: dict[str, Any]) -> Table:
    """The comparison for a terminal: models as letters (named in the caption), the best in bold."""
    from biomedclip.evaluate.compare import cell

    letters = {model: chr(ord("A") + i) for i, model in enumerate(result["models"])}
    first = result["models"][0]
    table = Table(title=f"{result['split']} split and benchmarks", caption="  ".join(
        f"{letter} = {model}" for model, letter in letters.items()), caption_justify="left")
    table.add_column("metric", overflow="fold")
    for model in result["models"]:
        table.add_column(letters[model], justify="right")
    for model in result["models"][1:]:
        table.add_column(f"{letters[model]} − {letters[first]}", justify="right")
    for metric, row in result["metrics"].items():
        cells = [("" if row.get(m) is None else f"[bold]{cell(metric, row[m])}[/]" if result["best"].get(metric) == m
                  else cell(metric, row[m])) for m in result["models"]]
        deltas = [f"{result['delta'][metric][m]:+.4f}" if m in result["delta"].get(metric, {}) else ""
                  for m in result["models"][1:]]
        table.add_row(metric, *cells, *deltas)
    return table


@app.command("export")
def export_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The model: a folder or local-dir:PATH, hf-hub:ORG/REPO, "
                                         "models:/NAME@ALIAS, models:/NAME/N, runs:/..., or @ALIAS / N.")],
    dest: Annotated[Path, typer.Argument(help="The folder to write (must not exist, or be an earlier export).")],
    hub_id: Annotated[str | None, typer.Option(help="The hub repo you will upload it to (ORG/REPO): the "
                                               "config names the text tower by it, so hf-hub: loads it.")] = None,
) -> None:
    """Write a model as a folder plain open_clip loads: `local-dir:DEST` from any working directory,
    or, uploaded as it is to the repo `--hub-id` names, `hf-hub:ORG/REPO`.

    The published layout: `open_clip_config.json`, the weights, the text tower's `config.json` and
    tokenizer beside them, and the model card (`README.md`).
    """
    from biomedclip.atomic_io import atomic_directory
    from biomedclip.models import TextTower, located, write_model_folder

    state: Context = ctx.obj
    params = state.params()
    if hub_id is not None and hub_id.count("/") != 1:
        raise typer.BadParameter(f"{hub_id!r} is not ORG/REPO", param_hint="--hub-id")
    if dest.exists() and not (dest / "open_clip_config.json").is_file():
        raise typer.BadParameter(f"{dest} exists and is not a model folder: it would be replaced", param_hint="DEST")
    with located(_full_reference(model, params), tracking=params.tracking) as files, \
            atomic_directory(dest) as staging:
        text = files.text if files.text is None or hub_id is None else \
            TextTower(files.text.config_dir, files.text.tokenizer_dir, hub_id)
        card = (files.folder / "README.md").read_text(encoding="utf-8") if (files.folder / "README.md").is_file() \
            else f"# {model}\n\nExported from `{model}` by `biomedclip export`.\n"
        text_name = None if hub_id or (text and text.hub_id) else str(dest.resolve())
        write_model_folder(staging, final=dest, weights=files.weights, model_cfg=files.model_cfg, text=text,
                           card=card, preprocess_cfg=files.spec.get("preprocess_cfg"), text_name=text_name)
    out.print(f"wrote {dest}: open_clip.create_model_from_pretrained('local-dir:{dest.resolve()}')"
              + (f"; upload it to {hub_id} to load hf-hub:{hub_id}" if hub_id else ""), highlight=False)


@app.command("promote")
def promote_command(
    ctx: typer.Context,
    version: Annotated[int | None,
                       typer.Option(min=1, help="The version to promote. (default: the challenger)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate says no (needs --reason).")] = False,
    reason: Annotated[str | None, typer.Option(help="Why; recorded with the decision.")] = None,
) -> None:
    """Promote the challenger to `champion` if it beats the champion on today's test set.

    Both are re-evaluated on the challenger's test split and benchmarks; the challenger must gain
    `register.gate.min_improvement` on the primary metric and lose no more than the tolerance on
    any guard. The decision and its numbers are recorded on the version and in the decision log.
    Exit code 3 when the gate refuses.
    """
    from biomedclip.register.promotion import promote

    state: Context = ctx.obj
    params = state.params()
    record = promote(params.register, params.tracking, params.evaluate, params.shard.outputs.shards,
                     version=version, force=force, reason=reason, vqa=params.vqa)
    for role, where in record.get("reused_evaluations", {}).items():
        out.print(f"the {role}'s evaluation: reused, not recomputed ({where})", highlight=False)
    if record["forced"]:
        verdict = f"[yellow]promoted by force[/] (reason: {escape(record['reason'])}); the gate said no"
    else:
        verdict = "[green]promoted[/]" if record["promoted"] else "[yellow]not promoted[/]"
    out.print(f"{params.register.model_name} version {record['version']}: {verdict} — {escape(record['why'])}")
    if not record["promoted"]:
        raise typer.Exit(REFUSED)
    _announce(params.register.model_name, record)


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")] = "",
) -> None:
    """Move `champion` back to the previous champion (recorded like every decision)."""
    from biomedclip.register.promotion import rollback

    state: Context = ctx.obj
    params = state.params()
    record = rollback(params.register, params.tracking, reason=reason)
    out.print(f"{params.register.model_name}: champion is version {record['version']} again "
              f"(was {record['previous_champion']})")
    _announce(params.register.model_name, record)


def _announce(name: str, record: dict[str, Any]) -> None:
    """A new champion is an event (`biomedclip.model.promoted`) for the Prefect server named by
    PREFECT_API_URL: the `index/refresh` deployment and other automations hang on it."""
    from biomedclip.pipeline.events import announce_if_served

    if announce_if_served(name, record):
        out.print(f"announced to {os.environ['PREFECT_API_URL']}: {name} version {record['version']} is the champion "
                  "(biomedclip.model.promoted)", highlight=False)


@app.command("lineage")
def lineage_command(
    ctx: typer.Context,
    model_uri: Annotated[str, typer.Argument(help="A registered version: models:/NAME@ALIAS, models:/NAME/N, "
                                             "or @ALIAS / N of register.model_name.")],
    verify_: Annotated[bool, typer.Option("--verify", help="Re-hash what is here (raw data, manifest, "
                                          "shards, model) against the recorded lineage; "
                                          "exit 1 on any mismatch.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show where a registered model came from: run, commit, params, dvc.lock stages, data,
    validation, shards, metrics, Prefect flow runs and promotion history; for a model registered
    from elsewhere (`register --model`), its source, weights sha256, config and evaluation run."""
    import json

    from biomedclip.register.lineage import lineage, lineage_text, verify

    state: Context = ctx.obj
    params = state.params()
    chain = lineage(_full_reference(model_uri, params), params.register, params.tracking, index=params.index.out)
    found = None
    if verify_:
        found = verify(chain, params.tracking, shard_manifest=params.shard.outputs.manifest,
                       model_dir=params.train.outputs.dir / "final", flow_runs=params.pipeline.flow_runs)
        chain.update(verified=not found.problems, problems=found.problems, notes=found.notes)
    if as_json:
        print(json.dumps(chain, indent=2, sort_keys=True))
    else:
        out.print(lineage_text(chain), highlight=False, markup=False, soft_wrap=True)  # hashes stay whole
        if found is not None:
            for note in found.notes:
                out.print(f"[cyan]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
            if found.problems:
                err.print("[bold red]verification failed:[/]\n" + "\n".join(f"  {escape(p)}" for p in found.problems),
                          highlight=False)
            else:
                out.print("[green]verified:[/] " + ("the registered weights match their recorded sha256"
                                                    if chain.get("kind") == "external" else
                                                    "data, code, params, shards and model match the recorded "
                                                    "lineage"))
    if found is not None and found.problems:
        raise typer.Exit(FAILED)


@app.command("carry-over")
def carry_over_command(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", help="The store the workspace's runs and models are in now "
                                        "(default: tracking.uri as params.yaml says it, the embedded store).")]
    = "",
) -> None:
    """Carry this workspace's MLflow runs and registered models over to the store in use now
    (MLFLOW_TRACKING_URI: a team server), so that every command works there as it did here.

    Every version of `register.model_name` (oldest first: a new server numbers them as the workspace
    did) with its tags, model and aliases; the runs behind them and the training run of
    `train.outputs.run_info`, with their params, metric histories, tags and artifacts. The
    workspace's records keep naming the old run ids: copies carry them, and every command finds the
    copy. Run it again: only what is missing is copied.
    """
    import json

    from rich.markdown import Markdown

    from biomedclip.register.carry_over import carry_over

    state: Context = ctx.obj
    params = state.params()
    info = params.train.outputs.run_info
    run_id = json.loads(info.read_text()).get("mlflow_run_id") if info.is_file() else None
    report = carry_over(source or params.tracking.uri, params.register, params.tracking, workspace_run_id=run_id)
    out.print(Markdown(report.markdown()))


@app.command("retrain")
def retrain_command(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("--force", help="Run dvc repro and the gate even when "
                                        "nothing is new.")] = False,
) -> None:
    """Retrain now: sync what PMC added (retrain.source) into ingest.source, record it in
    data.dvc, dvc repro (unchanged stages skipped), dvc push, then the promotion gate.

    Nothing new → ends early and registers nothing. Another retrain running → skips (or waits,
    retrain.on_busy). Runs as the Prefect flow `retrain`; its decision is the artifact
    `retrain-decision`. Exit 1 if a step fails (the message names it).
    """
    from biomedclip.pipeline.retrain import retrain_flow

    state: Context = ctx.obj
    state.params()  # a bad params file stops here, with its keys named
    result = retrain_flow(str(state.params_path), force=force)
    out.print(f"retrain {result['status']}: {result['summary']}", highlight=False)


@app.command("schedule")
def schedule_command(
    ctx: typer.Context,
    cron: Annotated[str | None, typer.Option(help="When to retrain, a cron expression. "
                                             "(default: retrain.schedule.cron)")] = None,
    timezone: Annotated[str | None, typer.Option(help="The cron's IANA time zone. "
                                                 "(default: retrain.schedule.timezone)")] = None,
) -> None:
    """Serve the retrain deployment `retrain/<retrain.schedule.deployment>` on a cron schedule,
    and `index/refresh` on every champion change (`biomedclip.model.promoted`: the search index
    re-embedded and rebuilt for the new champion), until interrupted (Prefect `serve`): one run at
    a time, a trigger meanwhile waits its turn.

    List, pause and trigger them with Prefect's own tools: `prefect deployment ls`,
    `prefect deployment schedule pause retrain/weekly ID`, `prefect deployment run
    retrain/weekly`, or the UI. Point PREFECT_API_URL at a server (`prefect server start`) so
    the schedule outlives this terminal's view of it.
    """
    from biomedclip.pipeline.retrain import serve

    state: Context = ctx.obj
    override(state.params().retrain.schedule, cron=cron, timezone=timezone)  # bad values stop here
    serve(state.params_path, cron=cron, timezone=timezone)


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro_command(ctx: typer.Context) -> None:
    """`dvc repro [ARGS]` with one Prefect server for the whole run (what `make run` calls).

    Each stage's flow would otherwise start a temporary Prefect server of its own (7-20 s each).
    This starts `prefect server start` once on a loopback port, with the project's PREFECT_HOME
    (.prefect), hands its URL to every stage, and stops it at the end; its history stays, so
    `prefect server start` shows every run afterwards. Nothing to run: no server is started.
    With PREFECT_API_URL set, the stages report there and no server is started either.
    Extra arguments go to `dvc repro` (e.g. `biomedclip repro evaluate`, `biomedclip repro -f`).
    At the end it names the pages to open: the dataset card and the model tests.
    """
    from biomedclip.pipeline.server import repro

    state: Context = ctx.obj
    code = repro(list(ctx.args))
    if code:
        raise typer.Exit(code)
    if state.params_path.is_file():  # a DVC project of other stages has none
        params = state.params()
        out.print(f"Dataset card: {params.card.out / 'index.html'}; model tests: {params.evaluate.outputs.report}",
                  highlight=False)
