"""Evaluation: retrieval and zero-shot metrics, benchmarks, model loading, the `evaluate` stage.

1. Every metric equals a naive reference on random data: ranks from the full N×N similarity
   matrix (ties counted in the query's favour, duplicated vectors, chunks that do not divide N),
   recall@k / mean / median rank, top-1, balanced accuracy, macro-F1 and the confusion matrix
   (a plain-Python reference, and scikit-learn where it is installed), binary AUROC (pairwise
   count, ties half).
2. `match_ranks` over 100k candidates runs in bounded memory (a child process's peak RSS), far
   below the 40 GB an N×N float matrix would take.
3. A tiny model trained 150 steps on the noisy demo corpus scores far above chance on the
   demo zero-shot benchmark and on test-split retrieval; the same model at initialisation scores
   near chance. Both sets of numbers are printed (`pytest -s`) and are in the assertion messages.
4. A model registered in a real MLflow registry (SQLite store in tmp_path) loads by
   `models:/biomedclip@champion` and `runs:/` with embeddings identical to the folder's, and
   `evaluate` on the URI gives the folder's metrics.
5. Hostile benchmarks: an undecodable image is skipped and counted, the metrics are those of the
   readable images alone; an undeclared label or a declared class without images is a
   BenchmarkError naming it; a class-folder layout loads with the folder names as classes.
6. The outputs: metrics JSON, recall@k CSV (a row per k), confusion CSV (a row per evaluated
   image), and the model-test report.

Inputs are real and shared with the other test modules (conftest's `tiny_world`): the noisy demo
corpus's ingest sharded (its val split is empty and its test split has 27 pairs: retrieval is
evaluated on those 27), a WordPiece tokenizer built from it, and the generated demo benchmark (16
figure types). Models come from the real trainer (`biomedclip.train.loop.train`): "random" is one
step at lr 1e-12 (initial weights in the trainer's own output layout), "trained" is the session's
100-step model (measured: zero-shot top-1 0.28 against 0.16 required, 0.34 at 200 steps).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from biomedclip.evaluate.benchmarks import BenchmarkError, load_benchmark
from biomedclip.evaluate.classification import (
    binary_auroc,
    class_embeddings,
    classification_metrics,
    confusion_matrix,
)
from biomedclip.evaluate.embedding import embed_images, embed_texts, shard_samples
from biomedclip.evaluate.params import BenchmarkSpec, EvaluateOutputs, EvaluateParams
from biomedclip.evaluate.retrieval import match_ranks, rank_metrics, retrieval_metrics
from biomedclip.evaluate.run import evaluate
from biomedclip.models import load_model
from biomedclip.tracking import TrackingParams

MODEL_TESTS = ("caption_finds_its_image", "deterministic_embeddings", "jpeg_reencoding_invariance")


# ---------------------------------------------------------------------------------------------
# 1. Metrics against naive references


def naive_ranks(queries: list[list[float]], candidates: list[list[float]]) -> list[int]:
    """Rank of candidate i for query i: candidates strictly more similar, from the full matrix."""
    sims = [[sum(a * b for a, b in zip(q, c, strict=True)) for c in candidates] for q in queries]
    return [sum(s > row[i] for s in row) for i, row in enumerate(sims)]


def naive_rank_metrics(ranks: list[int], ks) -> dict[str, float]:
    out = {f"recall_at_{k}": sum(r < k for r in ranks) / len(ranks) for k in ks}
    out["mean_rank"] = statistics.fmean(ranks) + 1
    out["median_rank"] = statistics.median(ranks) + 1
    return out


def tie_heavy_pairs(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued vectors (exact float dot products: many exact ties), with duplicates:
    repeated candidates, repeated queries, and a query whose match is a duplicated candidate."""
    rng = random.Random(seed)
    images = [[float(rng.choice((-1, 0, 0, 1, 2))) for _ in range(dim)] for _ in range(n)]
    texts = [[float(rng.choice((-1, 0, 1, 1, 2))) for _ in range(dim)] for _ in range(n)]
    texts[7] = list(texts[3])  # the same caption twice
    texts[11] = list(texts[3])
    images[5] = list(images[2])  # the same image twice
    texts[9] = list(images[9])  # a pair that is one vector
    images[13] = [0.0] * dim  # a zero vector: ties with every candidate at 0
    return torch.tensor(images), torch.tensor(texts)


@pytest.mark.unit
@pytest.mark.parametrize("chunk", [1, 3, 7, 41, 1000])
def test_match_ranks_equal_the_full_matrix_reference_with_ties_and_duplicates(chunk):
    images, texts = tie_heavy_pairs(41, 5, seed=0)
    expected = naive_ranks(images.tolist(), texts.tolist())
    assert len(set(expected)) > 5 and 0 in expected  # a spread of ranks, some first place
    got = match_ranks(images, texts, chunk=chunk)
    assert got.dtype == torch.long and got.tolist() == expected
    # Fewer queries than candidates: the first Q rows of the same ranks.
    assert match_ranks(images[:17], texts, chunk=chunk).tolist() == expected[:17]
    # Ties go to the query: a candidate equal to the match does not push it down.
    dup = torch.cat([texts, texts[:1]])  # candidate 41 == candidate 0
    assert match_ranks(images[:1], dup, chunk=chunk).tolist() == expected[:1]


@pytest.mark.unit
@pytest.mark.parametrize(("n", "seed"), [(41, 1), (57, 2)])
def test_retrieval_metrics_equal_the_naive_reference(n, seed):
    images, texts = tie_heavy_pairs(n, 6, seed)
    ks = (1, 5, 10)
    got = retrieval_metrics(images, texts, ks=ks, chunk=4)
    expected = {}
    for direction, (q, c) in {"image_to_text": (images, texts), "text_to_image": (texts, images)}.items():
        for name, value in naive_rank_metrics(naive_ranks(q.tolist(), c.tolist()), ks).items():
            expected[f"{direction}/{name}"] = value
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.unit
def test_retrieval_metrics_on_random_normalised_features():
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(63, 16, generator=g), dim=1)
    texts = torch.nn.functional.normalize(images + 0.8 * torch.randn(63, 16, generator=g), dim=1)
    texts[10] = texts[20]  # duplicated caption
    got = retrieval_metrics(images.double(), texts.double(), ks=(1, 2, 5), chunk=5)
    sims = (images.double() @ texts.double().T).float()  # the function computes in float32
    for direction, matrix in {"image_to_text": sims, "text_to_image": sims.T}.items():
        ranks = [int((row > row[i]).sum()) for i, row in enumerate(matrix)]
        for name, value in naive_rank_metrics(ranks, (1, 2, 5)).items():
            assert got[f"{direction}/{name}"] == pytest.approx(value, abs=1e-12), (direction, name)
    assert 0 < got["image_to_text/recall_at_1"] < 1  # neither trivial nor hopeless


@pytest.mark.unit
def test_perfect_and_reversed_retrieval():
    eye = torch.eye(9)
    assert rank_metrics(match_ranks(eye, eye)) == {
        "recall_at_1": 1.0, "recall_at_5": 1.0, "recall_at_10": 1.0, "mean_rank": 1.0, "median_rank": 1.0}
    # Query i's match is the least similar candidate: rank N-1 for every query.
    scores = torch.arange(9.0).unsqueeze(0).repeat(9, 1)
    candidates = torch.eye(9)
    queries = scores - 100 * torch.eye(9)  # own candidate lowest
    assert match_ranks(queries, candidates).tolist() == [8] * 9


@pytest.mark.unit
def test_match_ranks_refuses_misaligned_inputs():
    with pytest.raises(ValueError, match="Q <= N"):
        match_ranks(torch.zeros(5, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="aligned pairs"):
        match_ranks(torch.zeros(4, 3), torch.zeros(4, 2))


def naive_classification(predicted: list[int], labels: list[int], classes: int) -> dict[str, object]:
    matrix = [[0] * classes for _ in range(classes)]
    for p, t in zip(predicted, labels, strict=True):
        matrix[t][p] += 1
    true_n = [sum(row) for row in matrix]
    pred_n = [sum(matrix[t][c] for t in range(classes)) for c in range(classes)]
    hits = [matrix[c][c] for c in range(classes)]
    recall = {c: hits[c] / true_n[c] for c in range(classes) if true_n[c]}
    f1 = {}
    for c in range(classes):
        if true_n[c] or pred_n[c]:
            precision = hits[c] / pred_n[c] if pred_n[c] else 0.0
            rec = hits[c] / true_n[c] if true_n[c] else 0.0
            f1[c] = 2 * precision * rec / (precision + rec) if precision + rec else 0.0
    return {"top1": sum(hits) / len(labels), "balanced_accuracy": statistics.fmean(recall.values()),
            "macro_f1": statistics.fmean(f1.values()), "confusion": matrix}


def naive_auroc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.unit
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_the_naive_reference(seed):
    g = torch.Generator().manual_seed(seed)
    classes, n = 6, 301
    scores = torch.randn(n, classes, generator=g)
    scores[:, 5] -= 10  # class 5 is never predicted
    labels = torch.randint(0, classes, (n,), generator=g)
    labels[labels == 4] = 0  # class 4 never occurs in the labels (but is predicted)
    got = classification_metrics(scores, labels)
    predicted = scores.argmax(dim=1)
    assert 4 in predicted.tolist() and 5 not in predicted.tolist() and 5 in labels.tolist()

    expected = naive_classification(predicted.tolist(), labels.tolist(), classes)
    for name in ("top1", "balanced_accuracy", "macro_f1"):
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    assert got["confusion"] == expected["confusion"]
    assert confusion_matrix(predicted, labels, classes).tolist() == expected["confusion"]
    assert got["samples"] == n and "auroc" not in got

    try:
        import sklearn.metrics as skm
    except ImportError:
        return
    y, p = labels.numpy(), predicted.numpy()
    assert got["top1"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0), abs=1e-12)
    assert got["confusion"] == skm.confusion_matrix(y, p, labels=list(range(classes))).tolist()


@pytest.mark.unit
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_auroc_equals_the_pairwise_count_with_ties_half(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (157,), generator=g)
    # Rounded scores: many ties within and across the classes; positives score a bit higher.
    scores = torch.round((torch.rand(157, generator=g) + 0.3 * labels) * 8) / 8
    expected = naive_auroc(scores.tolist(), labels.tolist())
    assert 0.5 < expected < 1
    assert binary_auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    assert binary_auroc(-scores, labels) == pytest.approx(1 - expected, abs=1e-12)
    # All tied: exactly one half.
    assert binary_auroc(torch.zeros(10), torch.tensor([0, 1] * 5)) == 0.5
    # One class only: undefined, not a number that looks like a result.
    assert math.isnan(binary_auroc(scores, torch.ones_like(labels)))
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return
    assert binary_auroc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)


@pytest.mark.unit
def test_two_class_metrics_report_auroc_of_the_positive_class():
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 2, (120,), generator=g)
    logits = torch.randn(120, 2, generator=g)
    logits[:, 1] += labels * 0.7
    got = classification_metrics(logits, labels)
    probability = logits.softmax(dim=1)[:, 1]
    assert got["auroc"] == pytest.approx(naive_auroc(probability.tolist(), labels.tolist()), abs=1e-12)
    expected = naive_classification(logits.argmax(dim=1).tolist(), labels.tolist(), 2)
    assert got["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"], abs=1e-12)


@pytest.mark.unit
def test_two_class_auroc_at_zero_shot_scale_ranks_by_the_score_gap():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=g)
    cosine = 0.25 * torch.randn(400, 2, generator=g)
    cosine[:, 1] += 0.3 * labels
    scores = 100 * cosine  # as zero_shot computes them
    gap = (scores[:, 1] - scores[:, 0]).double()  # the same order as the softmax, without saturation
    assert classification_metrics(scores, labels)["auroc"] == pytest.approx(
        naive_auroc(gap.tolist(), labels.tolist()), abs=1e-9)


@pytest.mark.unit
def test_class_embeddings_are_the_normalised_mean_of_normalised_prompts():
    table = {}
    g = torch.Generator().manual_seed(0)

    def encode(texts):
        for text in texts:
            table.setdefault(text, torch.randn(8, generator=g) * (1 + len(table)))  # unequal norms
        return torch.stack([table[t] for t in texts])

    templates = ("a photo of {}", "{} presented in image")
    got = class_embeddings(encode, ["bar chart", "chest X-ray"], templates)
    assert got.shape == (2, 8)
    for row, name in zip(got, ["bar chart", "chest X-ray"], strict=True):
        prompts = [torch.nn.functional.normalize(table[t.format(name)], dim=0) for t in templates]
        mean = sum(prompts) / len(prompts)
        torch.testing.assert_close(row, mean / mean.norm())


# ---------------------------------------------------------------------------------------------
# 2. Bounded memory at 100k


MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    n, dim, queries, chunk = (int(a) for a in sys.argv[1:5])
    # A naive N x N product (40 GB) fails here at once instead of swapping the machine.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    import torch
    torch.set_num_threads(1)
    from biomedclip.evaluate.retrieval import match_ranks

    def peak() -> int:  # bytes: VmHWM (resettable) on Linux, else the process's lifetime peak
        try:
            with open("/proc/self/status") as fh:
                return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    texts = torch.nn.functional.normalize(images + 0.25 * torch.randn(n, dim, generator=g), dim=1)
    try:  # reset the peak to the current RSS: what follows is measured from the inputs alone
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    before = peak()
    ranks = match_ranks(images[:queries], texts, chunk=chunk)
    after = peak()
    spot = {}
    for i in (0, 1, chunk - 1, chunk, queries // 2, queries - 1):
        sims = texts.double() @ images[i].double()
        spot[i] = [int((sims > sims[i]).sum()), int(ranks[i])]
    print(json.dumps({"before": before, "after": after, "spot": spot, "queries": len(ranks),
                      "recall_at_1": float((ranks == 0).double().mean())}))
""")


@pytest.mark.integration
def test_match_ranks_memory_is_bounded_at_100k_candidates(tmp_path):
    n, dim, queries, chunk = 100_000, 64, 10_000, 256
    full_matrix = n * n * 4  # 40 GB: could never fit
    block = chunk * n * 4  # one (chunk, N) float block: 102 MB
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(n), str(dim), str(queries), str(chunk)],
                            capture_output=True, text=True, timeout=240, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["queries"] == queries
    extra = report["after"] - report["before"]
    print(f"\nmatch_ranks {queries} queries x {n} candidates, chunk {chunk}: peak RSS "
          f"{report['after'] / 2**20:.0f} MiB, {extra / 2**20:.0f} MiB over the inputs "
          f"(one block: {block / 2**20:.0f} MiB; N x N: {full_matrix / 2**30:.0f} GiB)")
    # Measured: ~3.3 blocks (the float block, its bool mask, and the int64 copy `.sum` makes of
    # the mask, some BLAS scratch); an N x N matrix would be 400 blocks, even Q x N 40.
    assert extra < 5 * block, f"peak grew by {extra / 2**20:.0f} MiB for a {block / 2**20:.0f} MiB block"
    assert report["after"] < full_matrix / 20, report
    # The ranks are real: a few against a float64 reference (float32 rounding may swap a near-tie).
    for i, (reference, got) in report["spot"].items():
        assert abs(reference - got) <= 2, (i, reference, got)
    assert 0.01 < report["recall_at_1"] < 0.99


# ---------------------------------------------------------------------------------------------
# Shared inputs: real shards, tokenizer, demo benchmark; models from the real trainer


@pytest.fixture(scope="module")
def inputs(tiny_world) -> dict[str, object]:
    return {"shards": tiny_world.shards, "tokenizer": tiny_world.tokenizer, "benchmark": tiny_world.benchmark,
            "test_pairs": tiny_world.split_sizes["test"], "train_pairs": tiny_world.split_sizes["train"]}


@pytest.fixture(scope="module")
def random_model(tiny_world) -> Path:
    """The trainer's initial weights (seed 0) in its own output layout: one step at lr 1e-12."""
    return tiny_world.random_model


@pytest.fixture(scope="module")
def trained_model(tiny_world) -> Path:
    """The session's model: 150 steps of 32 on the noisy corpus's train split (~20 epochs)."""
    return Path(tiny_world.trained["model_dir"])


def eval_params(out: Path, *benchmarks: BenchmarkSpec, ks=(1, 5, 10), split="test") -> EvaluateParams:
    return EvaluateParams(
        split=split, ks=ks, batch_size=64, benchmarks=benchmarks, cache=out / "evaluations",
        outputs=EvaluateOutputs(metrics=out / "metrics" / "eval.json", plots=out / "plots",
                                report=out / "reports" / "model-tests.md"))


def numbers(result: dict, bench: str) -> dict[str, float]:
    r, z = result["retrieval"], result["zero_shot"][bench]
    return {"pairs": r["pairs"], "chance_R@1": r["chance_recall_at_1"],
            **{f"{short} {m}": r[f"{d}/{m}"] for short, d in (("i2t", "image_to_text"), ("t2i", "text_to_image"))
               for m in ("recall_at_1", "recall_at_5", "recall_at_10", "median_rank")},
            "zs_top1": z["top1"], "zs_balanced_acc": z["balanced_accuracy"], "zs_macro_f1": z["macro_f1"],
            "zs_chance": z["chance_top1"]}


def show(title: str, values: dict[str, float]) -> str:
    return title + ": " + ", ".join(f"{k} {v:.3f}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------
# 3. Trained far above chance, random near chance


@pytest.mark.unit
def test_trained_model_scores_far_above_chance_and_random_near_it(inputs, trained_model, random_model, tmp_path):
    spec = BenchmarkSpec(name="pmc-figure-types", path=str(inputs["benchmark"]))
    trained = evaluate(eval_params(tmp_path / "trained", spec), model=str(trained_model),
                       shards_dir=inputs["shards"].outputs.shards)
    random_ = evaluate(eval_params(tmp_path / "random", spec), model=str(random_model),
                       shards_dir=inputs["shards"].outputs.shards)
    t, r = numbers(trained, spec.name), numbers(random_, spec.name)
    loss = (trained_model.parent / "loss.csv").read_text().splitlines()
    summary = "\n".join([
        f"retrieval on the test split ({t['pairs']:.0f} pairs; val is empty at this corpus size); "
        f"zero-shot on {trained['zero_shot'][spec.name]['samples']} benchmark images, 16 classes",
        show("trained", t), show("random ", r), f"training loss: {loss[1]} ... {loss[-1]}"])
    print("\n" + summary)

    chance = t["zs_chance"]
    pairs = t["pairs"]
    chance_median, chance_r5 = (pairs + 1) / 2, 5 / pairs
    # Trained: far above chance on both tasks, in both retrieval directions.
    assert t["zs_top1"] >= 2.5 * chance and t["zs_balanced_acc"] >= 2.5 * chance, summary
    assert t["zs_macro_f1"] >= 2 * chance, summary
    for d in ("i2t", "t2i"):
        assert t[f"{d} median_rank"] <= chance_median / 2, summary
        assert t[f"{d} recall_at_5"] >= 1.75 * chance_r5, summary
        assert t[f"{d} recall_at_10"] > r[f"{d} recall_at_10"], summary
    assert trained["model_tests"]["caption_finds_its_image"]["passed"], summary
    # Random: near chance. The images of one class look alike, so a random network sends a class
    # to one label, nearly all of it: its top-1 moves in whole classes (1/16), and one or two
    # classes landing on their own label is luck (the number that do is about Poisson(1)).
    assert r["zs_top1"] <= 3 * chance and r["zs_balanced_acc"] <= 3 * chance, summary
    for d in ("i2t", "t2i"):
        assert r[f"{d} median_rank"] >= chance_median / 2, summary
        assert r[f"{d} recall_at_5"] <= 2 * chance_r5, summary
    assert not random_["model_tests"]["caption_finds_its_image"]["passed"], summary
    assert t["zs_top1"] >= r["zs_top1"] + 0.1, summary


# ---------------------------------------------------------------------------------------------
# 4. A registered model URI


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A real MLflow tracking + registry store (SQLite) in tmp_path; downloads land there too."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(downloads))  # load_model's mkdtemp for URIs
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("evaluate-test", artifact_location=str(tmp_path / "artifacts"))
    try:
        yield mlflow, experiment
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.unit
def test_registered_model_uri_loads_and_evaluates_like_its_folder(inputs, random_model, mlflow_store, tmp_path):
    from safetensors.torch import load_file, save_file

    mlflow, experiment = mlflow_store
    client = mlflow.MlflowClient()
    # A second model, registered after the champion (the latest version is not the champion).
    other = tmp_path / "other-model"
    shutil.copytree(random_model, other)
    weights = load_file(other / "open_clip_model.safetensors")
    g = torch.Generator().manual_seed(1)
    weights = {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.ndim >= 2 else v for k, v in weights.items()}
    save_file(weights, str(other / "open_clip_model.safetensors"))

    client.create_registered_model("biomedclip")
    runs, versions = {}, {}
    for name, folder in (("champion", random_model), ("other", other)):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(folder), "model")
            source = mlflow.get_artifact_uri("model")
        # mlflow.register_model("runs:/<id>/model") wants an MLmodel file or a LoggedModel (MLflow
        # 3): a plain folder of artifacts is registered from its artifact location.
        runs[name] = run.info.run_id
        versions[name] = client.create_model_version("biomedclip", source=source, run_id=run.info.run_id).version
    client.set_registered_model_alias("biomedclip", "champion", versions["champion"])
    assert versions["champion"] != versions["other"]

    direct = load_model(random_model)
    store = TrackingParams()  # the store MLFLOW_TRACKING_URI names (the fixture's)
    loaded = {uri: load_model(uri, tracking=store) for uri in (
        "models:/biomedclip@champion", f"runs:/{runs['champion']}/model", f"models:/biomedclip/{versions['champion']}")}
    samples = list(itertools.islice(shard_samples(inputs["shards"].outputs.shards / "test"), 12))
    pil = [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg, _ in samples]
    captions = [caption for _, caption in samples]
    want_i, want_t = embed_images(direct, pil, 5), embed_texts(direct, captions[:12], 5)
    assert want_i.shape == (12, 128) and want_t.shape == (12, 128)
    for uri, model in loaded.items():
        assert model.folder != direct.folder and model.folder.is_relative_to(tmp_path), uri
        assert torch.equal(embed_images(model, pil, 5), want_i), uri
        assert torch.equal(embed_texts(model, captions[:12], 5), want_t), uri
        assert model.config == direct.config, uri
    latest = load_model(f"models:/biomedclip/{versions['other']}", tracking=store)
    assert not torch.allclose(embed_images(latest, pil, 5), want_i, atol=1e-3)  # the comparison can fail

    spec = BenchmarkSpec(name="pmc-figure-types", path=str(inputs["benchmark"]))
    by_uri = evaluate(eval_params(tmp_path / "uri", spec), model="models:/biomedclip@champion",
                      shards_dir=inputs["shards"].outputs.shards, tracking=store)
    by_folder = evaluate(eval_params(tmp_path / "folder", spec), model=str(random_model),
                         shards_dir=inputs["shards"].outputs.shards)
    assert by_uri["model"] == "models:/biomedclip@champion"
    assert by_uri["retrieval"] == by_folder["retrieval"]
    assert by_uri["zero_shot"] == by_folder["zero_shot"]
    assert by_uri["confusion"] == by_folder["confusion"]
    assert (tmp_path / "uri" / "metrics" / "eval.json").is_file()


# ---------------------------------------------------------------------------------------------
# 5. Hostile benchmarks


def read_labels(bench: Path) -> list[dict[str, str]]:
    with (bench / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_benchmark(root: Path, source: Path, rows: list[dict[str, str]], classes: list[str] | None,
                    extra: dict[str, bytes] | None = None) -> Path:
    """A labels.csv benchmark under `root` with `rows` (images copied from `source`)."""
    root.mkdir(parents=True)
    for row in rows:
        if (source / row["path"]).is_file():
            (root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / row["path"], root / row["path"])
    for rel, data in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if classes is not None:
        (root / "dataset.json").write_text(json.dumps({"name": root.name, "classes": classes}))
    return root


@pytest.fixture(scope="module")
def small_benchmark(inputs) -> tuple[Path, list[dict[str, str]], list[str]]:
    """3 images of each of the demo benchmark's 16 classes."""
    bench = inputs["benchmark"]
    classes = json.loads((bench / "dataset.json").read_text())["classes"]
    rows, seen = [], {}
    for row in read_labels(bench):
        if seen.get(row["label"], 0) < 3:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            rows.append(row)
    assert len(classes) == 16 and len(rows) == 48
    return bench, rows, classes


@pytest.mark.unit
def test_undecodable_image_is_skipped_counted_and_left_out_of_the_metrics(inputs, random_model, small_benchmark,
                                                                          tmp_path):
    source, rows, classes = small_benchmark
    clean = write_benchmark(tmp_path / "clean", source, rows, classes)
    garbage = {"path": "images/broken/figure_0001.jpg", "label": classes[3]}
    truncated_src = source / rows[10]["path"]
    truncated = {"path": "images/broken/truncated.jpg", "label": classes[7]}
    hostile_rows = [*rows[:20], garbage, *rows[20:30], truncated, *rows[30:]]
    hostile = write_benchmark(tmp_path / "hostile", source, hostile_rows, classes, extra={
        garbage["path"]: b"this is not a JPEG \x00\xff\xd8" * 40,
        truncated["path"]: truncated_src.read_bytes()[: truncated_src.stat().st_size // 3]})

    bench = load_benchmark("hostile", str(hostile))
    assert len(bench.examples) == 50
    decoded = list(bench.images())
    assert len(decoded) == 48
    assert [s["key"] for s in bench.skipped] == [garbage["path"], truncated["path"]]
    assert all(s["reason"] for s in bench.skipped)

    specs = (BenchmarkSpec(name="clean", path=str(clean)), BenchmarkSpec(name="hostile", path=str(hostile)))
    out = tmp_path / "out"
    result = evaluate(eval_params(out, *specs), model=str(random_model), shards_dir=inputs["shards"].outputs.shards)
    got, want = result["zero_shot"]["hostile"], result["zero_shot"]["clean"]
    assert (got["skipped"], want["skipped"]) == (2, 0)
    assert got["samples"] == want["samples"] == 48
    for name in ("top1", "balanced_accuracy", "macro_f1"):
        assert got[name] == want[name], name
    assert result["confusion"]["hostile"] == result["confusion"]["clean"]
    assert sum(map(sum, result["confusion"]["hostile"])) == 48
    # The written metrics say so too, and the confusion CSV lists only the readable images.
    written = json.loads((out / "plots" / "details.json").read_text())
    assert written["zero_shot"]["hostile"]["skipped"] == 2
    with (out / "plots" / "confusion_hostile.csv").open(newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 48


@pytest.mark.unit
def test_benchmark_with_no_readable_image_is_an_error_not_a_metric(inputs, random_model, tmp_path):
    rows = [{"path": "a.jpg", "label": "bar chart"}, {"path": "b.jpg", "label": "chest X-ray"}]
    bench = write_benchmark(tmp_path / "bench", tmp_path, rows, None,
                            extra={"a.jpg": b"garbage", "b.jpg": b"\xff\xd8\xff\xe0 not really"})
    with pytest.raises(ValueError, match=r"no readable images \(2 skipped\)"):
        evaluate(eval_params(tmp_path / "out", BenchmarkSpec(name="broken", path=str(bench))),
                 model=str(random_model), shards_dir=inputs["shards"].outputs.shards)


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["PET scan", "Chest X-ray", "bar chart "])
def test_label_outside_the_declared_classes_is_an_error_naming_line_and_label(small_benchmark, tmp_path, bad):
    source, rows, classes = small_benchmark
    assert bad not in classes  # "Chest X-ray" and "bar chart " differ from a class in case or space only
    rows = [dict(r) for r in rows]
    rows[6]["label"] = bad  # the 7th data row: line 8 of labels.csv (the header is line 1)
    bench = write_benchmark(tmp_path / "bench", source, rows, classes)
    with pytest.raises(BenchmarkError) as caught:
        load_benchmark("bad-label", str(bench))
    message = str(caught.value)
    assert "line 8" in message and repr(bad) in message, message


@pytest.mark.unit
def test_declared_class_without_images_is_an_error_naming_it(small_benchmark, tmp_path):
    source, rows, classes = small_benchmark
    missing = classes[5]
    kept = [r for r in rows if r["label"] != missing]
    bench = write_benchmark(tmp_path / "bench", source, kept, classes)
    with pytest.raises(BenchmarkError, match="classes without images") as caught:
        load_benchmark("missing-class", str(bench))
    assert repr(missing) in str(caught.value)
    # Declared in the params instead of dataset.json: the same.
    (bench / "dataset.json").unlink()
    load_benchmark("inferred", str(bench))  # classes from the labels: fine
    with pytest.raises(BenchmarkError, match=missing):
        load_benchmark("declared", str(bench), classes=classes)


@pytest.mark.unit
def test_class_folder_layout_uses_folder_names_as_classes(inputs, random_model, small_benchmark, tmp_path):
    source, rows, _ = small_benchmark
    root = tmp_path / "folders"
    chosen = {"chest X-ray", "bar chart", "H&E histology", "line chart"}
    assert chosen <= {r["label"] for r in rows}
    for i, row in enumerate(r for r in rows if r["label"] in chosen):
        (root / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(source / row["path"], root / row["label"] / f"img_{i}.jpg")
    (root / "README.txt").write_text("not an image")
    (root / sorted(chosen)[0] / "notes.txt").write_text("not an image either")
    bench = load_benchmark("folders", str(root))
    assert bench.classes == sorted(chosen)
    assert bench.counts() == dict.fromkeys(sorted(chosen), 3)
    assert all(key.split("/")[0] == bench.classes[label] for key, label in bench.examples)

    result = evaluate(eval_params(tmp_path / "out", BenchmarkSpec(name="folders", path=str(root))),
                      model=str(random_model), shards_dir=inputs["shards"].outputs.shards)
    assert result["zero_shot"]["folders"]["classes"] == sorted(chosen)
    assert result["zero_shot"]["folders"]["samples"] == 3 * len(chosen)


# ---------------------------------------------------------------------------------------------
# 6. Outputs


@pytest.mark.unit
def test_outputs_metrics_plots_and_report(inputs, random_model, small_benchmark, tmp_path):
    source, rows, classes = small_benchmark
    bench = write_benchmark(tmp_path / "bench", source, rows, classes)
    ks = (1, 2, 5, 10, 20)
    out = tmp_path / "out"
    specs = (BenchmarkSpec(name="figure-types", path=str(bench)),
             BenchmarkSpec(name="full", path=str(inputs["benchmark"])))
    result = evaluate(eval_params(out, *specs, ks=ks), model=str(random_model),
                      shards_dir=inputs["shards"].outputs.shards)
    pairs = inputs["test_pairs"]

    # The declared DVC metrics: the headline numbers, one short name each; everything in details.json.
    headline = json.loads((out / "metrics" / "eval.json").read_text())
    assert set(headline) == {*(f"{d} R@{k}" for d in ("i2t", "t2i") for k in ks), "figure-types top1", "full top1"}
    assert headline["i2t R@10"] == result["retrieval"]["image_to_text/recall_at_10"]
    metrics = json.loads((out / "plots" / "details.json").read_text())
    assert {"retrieval", "zero_shot", "model_tests"} <= metrics.keys()
    assert metrics["retrieval"]["pairs"] == pairs and metrics["split"] == "test"
    for d in ("image_to_text", "text_to_image"):
        for k in ks:
            assert 0 <= metrics["retrieval"][f"{d}/recall_at_{k}"] <= 1
        assert 1 <= metrics["retrieval"][f"{d}/median_rank"] <= pairs
    assert metrics["zero_shot"].keys() == {"figure-types", "full"}
    for name, expected in (("figure-types", 48), ("full", 160)):
        section = metrics["zero_shot"][name]
        assert {"top1", "balanced_accuracy", "macro_f1", "samples", "skipped", "chance_top1"} <= section.keys()
        assert section["samples"] == expected and section["chance_top1"] == 1 / 16
    assert set(metrics["model_tests"]) == set(MODEL_TESTS)
    for test in metrics["model_tests"].values():
        assert isinstance(test["passed"], bool) and test["rule"]
    assert metrics["retrieval"] == result["retrieval"]

    with (out / "plots" / "recall_at_k.csv").open(newline="") as fh:
        curve = list(csv.DictReader(fh))
    assert [int(row["k"]) for row in curve] == list(ks)
    for row in curve:
        for d in ("image_to_text", "text_to_image"):
            assert float(row[d]) == pytest.approx(result["retrieval"][f"{d}/recall_at_{row['k']}"])
    recall = [float(row["text_to_image"]) for row in curve]
    assert recall == sorted(recall)  # recall@k never falls as k grows

    for name, expected in (("figure-types", 48), ("full", 160)):
        with (out / "plots" / f"confusion_{name}.csv").open(newline="") as fh:
            rows_out = list(csv.DictReader(fh))
        assert len(rows_out) == expected
        assert {r["actual"] for r in rows_out} == set(classes)
        assert {r["predicted"] for r in rows_out} <= set(classes)
        # The CSV is the confusion matrix, cell by cell.
        matrix = result["confusion"][name]
        for (a, p), count in _count_pairs(rows_out).items():
            assert matrix[classes.index(a)][classes.index(p)] == count

    report = (out / "reports" / "model-tests.md").read_text()
    for test in MODEL_TESTS:
        assert test in report
    assert "figure-types" in report and "full" in report and f"{pairs} test pairs" in report


def _count_pairs(rows: list[dict[str, str]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        counts[row["actual"], row["predicted"]] = counts.get((row["actual"], row["predicted"]), 0) + 1
    return counts


@pytest.mark.unit
def test_the_papers_numbers_are_shown_apart_only_for_the_papers_own_datasets():
    """A benchmark with a preset and the preset's own classes is the paper's dataset: its published
    number is shown, in a table of its own, never in the measured ones; a benchmark that borrows a
    preset with classes of its own (the demo's) gets none."""
    from biomedclip.evaluate.run import paper_reference, report_markdown

    params = EvaluateParams(benchmarks=(
        BenchmarkSpec(name="pcam", path="/data/pcam", preset="pcam"),
        BenchmarkSpec(name="til", path="/data/til", preset="tcga_til"),
        BenchmarkSpec(name="demo-pcam", path="/data/demo", preset="pcam", classes={"0": "a", "1": "b"}),
        BenchmarkSpec(name="mine", path="/data/mine")))
    references = paper_reference(params)
    assert references == {"pcam": {"preset": "pcam", "metric": "top1", "value": 73.41},
                          "til": {"preset": "tcga_til", "metric": "auroc", "value": 67.04}}
    result = {"model": "m", "split": "test", "ks": [1], "retrieval": {
        "pairs": 10.0, "chance_recall_at_1": 0.1, **{f"{d}/{m}": 0.5 for d in ("image_to_text", "text_to_image")
                                                     for m in ("recall_at_1", "median_rank")}},
        "zero_shot": {"pcam": {"top1": 0.61, "balanced_accuracy": 0.6, "macro_f1": 0.6, "chance_top1": 0.5,
                               "skipped": 0}}, "model_tests": {}}
    report = report_markdown({**result, "paper_reference": references})
    measured, _, reference = report.partition("the paper's published BiomedCLIP (not measured here)")
    assert "73.41" in reference and "67.04" in reference and "| pcam | 0.610 |" in measured
    assert "73.41" not in measured
