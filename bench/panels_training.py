"""Train on panels vs whole figures: the same steps, retrieval and zero-shot side by side.

One demo experiment for `shard.unit` (README "Panels"): the demo corpus (`ingest.source`) is
ingested once, with panels on, into a work dir; then for each unit (figure, panel, both) its
shards are written there and the demo recipe (`train`: profile, lr, batch, warmup, seed) is
trained for the same number of optimizer steps, with one tokenizer for all (built from the
figure-level train captions, as the tokenizer stage does, so the vocabularies are equal).
Every model is evaluated with the library's `evaluate` on the same test set, the figure-level
test shards (Recall@1/5/10 both ways), and zero-shot on each benchmark of `evaluate.benchmarks`
(linear probes off); plus retrieval on the panel-level test shards (the `panel` unit's) when that
unit is run. Panel pairs should help zero-shot on single-type benchmarks: this shows whether
they do.

Steps: by default what params.yaml's recipe gives on the figure unit's train split, as the
trainer counts them (epochs x floor(train figures / global_batch)); `--steps` cuts it down.
Decontamination keeps params.yaml's setting when its hash file exists, else it is off (said
so); with `--demo-benchmarks`, missing demo benchmarks are written into the work dir (as the
`demo-data` stage would) and, without a hash file, hashed there to decontaminate against.
Nothing is written into the repository: the work dir and `--out` are temp dirs unless given.
Seeds are fixed: the same command gives the same numbers.

    python bench/panels_training.py [--steps N] [--units figure,panel,both] [--out DIR]
                                    [--threads 2] [--workers 0|1] [--demo-benchmarks]
                                    [--workdir DIR] [--keep]

(`--steps 60` for a quick look: a few minutes on 2 cores; the default steps take ~20 minutes.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
UNITS = ("figure", "panel", "both")
KS = (1, 5, 10)
DIRECTIONS = {"image_to_text": "i→t", "text_to_image": "t→i"}


def say(message: str) -> None:
    print(f"[panels-training {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Timer:
    """Wall time per phase, in the order the phases ran."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class Phase:
            def __enter__(self) -> None:
                say(f"{name} ...")
                self.start = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                seconds = time.perf_counter() - self.start
                timer.phases[name] = seconds
                if exc[0] is None:
                    say(f"{name}: done in {seconds:.1f} s")

        return Phase()


def resolved(path: str | Path, base: Path) -> Path:
    path = Path(path)
    return path if path.is_absolute() else base / path


def benchmarks(params: Any, base: Path, work: Path, make_demo: bool, timer: Timer) -> tuple[list, list[str]]:
    """The `evaluate.benchmarks` that exist (paths made absolute), written into the work dir from
    the demo's params when missing and `make_demo`; and a line per benchmark skipped or written."""
    demo_out = resolved(params.demo.benchmark.out, base)
    specs, notes, generated = [], [], None
    for spec in params.evaluate.benchmarks:
        if spec.path.startswith("s3://"):
            specs.append(spec)
            continue
        path = resolved(spec.path, base)
        if not path.exists() and make_demo and path.is_relative_to(demo_out):
            if generated is None:
                from biomedclip.demo.benchmark import generate_benchmark
                from biomedclip.demo.native import write_native

                generated = work / "benchmarks"
                demo = params.demo.benchmark.model_copy(update={"out": generated})
                with timer("demo benchmarks"):
                    generate_benchmark(demo)
                    write_native(demo.native, seed=demo.seed, per_class=demo.per_class)
            path = generated / path.relative_to(demo_out)
            notes.append(f"benchmark {spec.name}: missing in the repository ({spec.path}); written from "
                         f"params.yaml's demo.benchmark into {path}")
        if not path.exists():
            notes.append(f"benchmark {spec.name}: skipped, {spec.path} does not exist (run `dvc repro "
                         "demo-data`, or pass --demo-benchmarks)")
            continue
        specs.append(spec.model_copy(update={"path": str(path)}))
    return specs, notes


def ingest_params(params: Any, base: Path, work: Path, specs: list, make_demo: bool,
                  timer: Timer) -> tuple[Any, str]:
    """params.ingest with panels on and every output (state too) in `work/ingest`; and what was
    done about decontamination."""
    from biomedclip.config import override
    from biomedclip.ingest.params import IngestOutputs

    p = params.ingest
    out = work / "ingest"
    outputs = IngestOutputs(pairs=out / "pairs.parquet", rejects=out / "rejects.parquet", images=out / "images",
                            panels=out / "panels.parquet", panel_examples=out / "panel-examples",
                            report=out / "ingest.json", state=out / "state" / "state.sqlite")
    clean = p.decontaminate
    hashes = resolved(clean.hashes, base)
    if not clean.enabled:
        note = "decontamination: off (params.yaml)"
        clean = override(clean, cache=work / "hash-cache")
    elif hashes.is_file():
        note = f"decontamination: on, against {hashes} (params.yaml)"
        clean = override(clean, hashes=hashes, cache=work / "hash-cache")
    elif make_demo and specs:
        from biomedclip.ingest.decontaminate import hash_benchmarks

        with timer("benchmark hashes"):
            summary = hash_benchmarks(specs, params.evaluate.s3, work / "benchmark-hashes.parquet",
                                      work / "hash-cache")
        images = sum(n for splits in summary.values() for n in splits.values())
        note = (f"decontamination: on, against the {images} images of {', '.join(summary)} hashed into the work "
                f"dir ({hashes} does not exist)")
        clean = override(clean, hashes=work / "benchmark-hashes.parquet", cache=work / "hash-cache")
    else:
        note = f"decontamination: OFF, {hashes} does not exist (run `dvc repro benchmark_hashes`)"
        clean = override(clean, enabled=False, cache=work / "hash-cache")
    source = p.source if p.source.startswith("s3://") else str(resolved(p.source, base))
    return override(p, source=source, outputs=outputs, decontaminate=clean,
                    panels=override(p.panels, enabled=True)), note


def shard_params(params: Any, unit: str, root: Path) -> Any:
    from biomedclip.config import override
    from biomedclip.shard.params import ShardOutputs

    return override(params.shard, unit=unit, outputs=ShardOutputs(
        shards=root, manifest=root / "manifest.json", report=root / "shard.json"))


def recipe_steps(train: Any, train_figures: int) -> int:
    """The trainer's own count for the recipe: epochs x max(1, samples // global_batch)."""
    return train.epochs * max(1, (train.samples_per_epoch or train_figures) // train.global_batch)


def train_params(params: Any, tokenizer: Any, steps: int, out: Path, workers: int) -> Any:
    """The demo recipe for exactly `steps` optimizer steps (the recipe's epochs when they divide
    the steps, else one epoch); tracking off, outputs in `out`."""
    from biomedclip.config import override
    from biomedclip.train.params import TrainOutputs

    t = params.train
    epochs = t.epochs if steps % t.epochs == 0 else 1
    return override(t, tokenizer=tokenizer, epochs=epochs, samples_per_epoch=steps // epochs * t.global_batch,
                    workers=workers, nproc=1, checkpoint_every=steps,
                    outputs=TrainOutputs(dir=out, run_info=out / "run.json", loss_curve=out / "loss.csv",
                                         metrics=out / "train.json"))


def evaluate_params(params: Any, specs: list, out: Path) -> Any:
    from biomedclip.config import override
    from biomedclip.evaluate.params import EvaluateOutputs

    e = params.evaluate
    return override(e, model=None, split="test", benchmarks=tuple(specs),
                    linear_probe=override(e.linear_probe, enabled=False, cache=out / "feature-cache"),
                    outputs=EvaluateOutputs(metrics=out / "eval.json", plots=out / "plots",
                                            report=out / "model-tests.md"))


def train_split_sizes(ingest: Any) -> dict[str, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pairs = pq.read_table(ingest.outputs.pairs, columns=["split"])
    panels = pq.read_table(ingest.outputs.panels, columns=["split", "pair_id"])
    train_panels = panels.filter(pc.equal(panels["split"], "train"))
    return {"figures": int(pc.sum(pc.equal(pairs["split"], "train")).as_py() or 0),
            "split_figures": len(set(train_panels["pair_id"].to_pylist())), "panels": len(train_panels)}


def table(results: dict[str, dict[str, Any]], benchmark_names: list[str], steps: int) -> str:
    has_auroc = {b: any("auroc" in r["zero_shot"].get(b, {}) for r in results.values()) for b in benchmark_names}
    head = ["unit", "train samples", "steps",
            *(f"{arrow} R@{k}" for arrow in DIRECTIONS.values() for k in KS)]
    for b in benchmark_names:
        head.append(f"{b} top-1")
        if has_auroc[b]:
            head.append(f"{b} AUROC")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for unit, r in results.items():
        row = [unit, f"{r['train_samples']:,}", str(steps),
               *(f"{r['retrieval'][f'{d}/recall_at_{k}']:.3f}" for d in DIRECTIONS for k in KS)]
        for b in benchmark_names:
            z = r["zero_shot"].get(b, {})
            row.append(f"{z['top1']:.3f}" if "top1" in z else "—")
            if has_auroc[b]:
                row.append(f"{z['auroc']:.3f}" if "auroc" in z else "—")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def panel_table(results: dict[str, dict[str, Any]]) -> str:
    head = ["unit", *(f"{arrow} R@{k}" for arrow in DIRECTIONS.values() for k in KS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for unit, r in results.items():
        if r.get("panel_test_retrieval"):
            p = r["panel_test_retrieval"]
            lines.append("| " + " | ".join([unit, *(f"{p[f'{d}/recall_at_{k}']:.3f}" for d in DIRECTIONS
                                                  for k in KS)]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Paths in the params file are relative to its folder (run from anywhere).")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="params file (default: the repository's params.yaml)")
    parser.add_argument("--steps", type=int, default=None,
                        help="optimizer steps for every unit (default: the recipe's on the figure unit's "
                             "train split, epochs x floor(train figures / global_batch))")
    parser.add_argument("--units", default=",".join(UNITS),
                        help="comma-separated units to train (default: figure,panel,both)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where table.md and results.json go (default: a new temp dir, printed)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, OMP_NUM_THREADS too (default: 2)")
    parser.add_argument("--workers", type=int, choices=(0, 1), default=None,
                        help="data-loading processes (default: train.workers, at most 1); the stream, and "
                             "so the numbers, are the same either way")
    parser.add_argument("--demo-benchmarks", action="store_true",
                        help="write missing demo benchmarks (demo.benchmark) into the work dir instead of "
                             "skipping them, and decontaminate against them when the hash file is missing")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the ingest, shards and models go (default: a temp dir, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    parser.add_argument("--quiet", action="store_true", help="the library's warnings only on stderr")
    args = parser.parse_args()
    units = [u.strip() for u in args.units.split(",") if u.strip()]
    if not units or set(units) - set(UNITS):
        parser.error(f"--units: comma-separated values of {', '.join(UNITS)}, got {args.units!r}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still removes its temp work dir

    import torch

    from biomedclip.config import override
    from biomedclip.console import configure_logging
    from biomedclip.evaluate.run import evaluate, retrieval
    from biomedclip.ingest.run import run_ingest
    from biomedclip.models import load_model
    from biomedclip.params import load_params
    from biomedclip.shard.writer import write_shards
    from biomedclip.tracking import TrackingParams
    from biomedclip.train.loop import Resume, train
    from biomedclip.train.tokenizer import prepare_tokenizer

    torch.set_num_threads(args.threads)
    configure_logging("WARNING" if args.quiet else "INFO")
    params_path = args.params.resolve()
    base = params_path.parent
    params = load_params(params_path)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="panels-training-work-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = (args.out or Path(tempfile.mkdtemp(prefix="panels-training-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    start = time.perf_counter()
    try:
        specs, notes = benchmarks(params, base, work, args.demo_benchmarks, timer)
        ingest, decontamination = ingest_params(params, base, work, specs, args.demo_benchmarks, timer)
        notes.append(decontamination)
        for note in notes:
            say(note)
        with timer("ingest (panels on)"):
            ingest_report = run_ingest(ingest)
        sizes = train_split_sizes(ingest)
        # The figure-level shards: the figure unit's training data and everyone's test set.
        shard_dirs = {"figure": work / "shards-figure"}
        shard_reports = {}
        with timer("shard figure"):
            shard_reports["figure"] = write_shards(ingest, shard_params(params, "figure", shard_dirs["figure"]))
        steps = args.steps or recipe_steps(params.train, sizes["figures"])
        with timer("tokenizer"):
            tokenizer = override(params.train.tokenizer, out=work / "tokenizer")
            vocab = prepare_tokenizer(tokenizer, ingest.outputs.pairs, init_from=params.train.init_from)
        say(f"train split: {sizes['figures']:,} figures, {sizes['split_figures']:,} of them split into "
            f"{sizes['panels']:,} panels; {steps} steps of {params.train.global_batch} for every unit; "
            f"vocabulary {vocab['vocab_size']} tokens")
        for unit in units:
            if unit not in shard_dirs:
                shard_dirs[unit] = work / f"shards-{unit}"
                with timer(f"shard {unit}"):
                    shard_reports[unit] = write_shards(ingest, shard_params(params, unit, shard_dirs[unit]))
        results: dict[str, dict[str, Any]] = {}
        workers = min(params.train.workers, 1) if args.workers is None else args.workers
        for unit in units:
            shards = shard_params(params, unit, shard_dirs[unit])
            with timer(f"train {unit}"):
                info = train(train_params(params, tokenizer, steps, work / f"train-{unit}", workers), shards,
                             TrackingParams(enabled=False), resume=Resume.NEVER)
            if info["steps"] != steps:
                raise SystemExit(f"{unit}: trained {info['steps']} steps, not {steps}")
            with timer(f"evaluate {unit}"):
                evaluated = evaluate(evaluate_params(params, specs, work / f"eval-{unit}"), model=info["model_dir"],
                                     shards_dir=shard_dirs["figure"])
            panel_test = None
            if "panel" in shard_dirs:
                with timer(f"panel-test retrieval {unit}"):
                    panel_test = retrieval(load_model(info["model_dir"]), shard_dirs["panel"] / "test",
                                           evaluate_params(params, specs, work / f"eval-{unit}"))
            report = shard_reports[unit]["train"]
            results[unit] = {
                "train_samples": report["samples"], "train_figures": report["figures"],
                "train_panels": report["panels"], "steps": info["steps"],
                "final_loss": info["metrics"]["final_loss"],
                "validation": {k.removeprefix("val/"): v for k, v in info["metrics"].items() if k.startswith("val/")},
                "retrieval": evaluated["retrieval"],
                "zero_shot": {b: {k: v for k, v in z.items() if k != "classes"}
                              for b, z in evaluated["zero_shot"].items()},
                "model_tests_passed": all(t["passed"] for t in evaluated["model_tests"].values()),
                "panel_test_retrieval": panel_test}
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - start
    names = [s.name for s in specs]
    test_pairs = int(next(iter(results.values()))["retrieval"]["pairs"])
    title = (f"{params.train.profile}, {steps} steps of {params.train.global_batch} for each unit, lr "
             f"{params.train.lr:g}, warmup {params.train.warmup_steps}, seed {params.train.seed}, "
             f"{args.threads} torch threads")
    main_table = table(results, names, steps)
    lines = [f"Training on panels vs whole figures ({title})", "",
             f"Train split: {sizes['figures']:,} figures, {sizes['split_figures']:,} of them split into "
             f"{sizes['panels']:,} panels. Test set for every model: the figure-level test shards "
             f"({test_pairs:,} pairs, chance R@1 {1 / test_pairs:.4f}).", *(f"- {n}" for n in notes), "",
             main_table]
    if any(r.get("panel_test_retrieval") for r in results.values()):
        panel_pairs = int(next(r for r in results.values() if r.get("panel_test_retrieval"))
                          ["panel_test_retrieval"]["pairs"])
        lines += ["", f"Retrieval on the panel-level test shards (the panel unit's, {panel_pairs:,} pairs):", "",
                  panel_table(results)]
    text = "\n".join(lines) + "\n"
    print("wall time per phase:")
    for name, seconds in timer.phases.items():
        print(f"  {name:<34} {seconds:8.1f} s")
    print(f"  {'total':<34} {total:8.1f} s")
    print(f"train split: {sizes['figures']:,} figures, {sizes['panels']:,} panels "
          f"(from {sizes['split_figures']:,} split figures); steps: {steps}")
    for unit, r in results.items():
        print(f"{unit}: {r['train_samples']:,} train samples ({r['train_figures']:,} figures + "
              f"{r['train_panels']:,} panels), final loss {r['final_loss']}, model tests "
              f"{'pass' if r['model_tests_passed'] else 'FAIL'}")
    print()
    print(text)
    (out / "table.md").write_text(text, encoding="utf-8")
    (out / "results.json").write_text(json.dumps({
        "command": sys.argv, "steps": steps, "units": units, "threads": args.threads, "train_split": sizes,
        "notes": notes, "benchmarks": names, "ingest": {"pairs": ingest_report.get("pairs"),
                                                         "panels": ingest_report.get("panels")},
        "phases_s": {k: round(v, 2) for k, v in timer.phases.items()}, "total_s": round(total, 2),
        "results": results}, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    print(f"written: {out / 'table.md'}, {out / 'results.json'}")
    if args.keep or args.workdir is not None:
        print(f"work dir kept: {work}")


if __name__ == "__main__":
    main()
