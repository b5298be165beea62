"""Microsoft's published BiomedCLIP through the pipeline: the official snippet is the reference, and
the model is evaluated, registered as `baseline`, compared, audited, served and continued from.

Real everything except the weights (random: no weights can be downloaded here) and the size of
most checkpoints (the published architecture with timm's ViT-Ti/16 and a 2-layer BERT; the
continued-pretraining test builds the full ViT-B/16 + BERT-base). The vocabulary is the real
PubMedBERT one (../shared/fixtures), the cache is laid out as huggingface_hub writes it, the
official snippet and plain open_clip run in child processes with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from biomedclip.evaluate.compare import compare, markdown
from biomedclip.evaluate.params import BenchmarkSpec, EvaluateOutputs, EvaluateParams
from biomedclip.models import load_model
from biomedclip.register.external import register_external
from biomedclip.register.lineage import lineage, lineage_text, verify
from biomedclip.register.params import GateParams, RegisterParams
from biomedclip.register.registry import RegistryError
from biomedclip.shard.params import ShardOutputs, ShardParams
from biomedclip.tracking import TrackingParams
from biomedclip.train.params import TokenizerParams, TrainOutputs, TrainParams

from .conftest import ask_model_server
from .published import (
    BIOMEDCLIP,
    CAPTIONS,
    PUBMEDBERT,
    XRAY,
    hf_home,
    needs_pubmedbert,
    published_checkpoint,
)

pytestmark = [pytest.mark.integration, needs_pubmedbert]

# What a user runs: the model card's snippet, verbatim but for the source and the inputs.
OFFICIAL = """
import json, sys, torch, open_clip
from PIL import Image
torch.set_num_threads(1)
source = sys.argv[1]
model, preprocess = open_clip.create_model_from_pretrained(source)
tokenizer = open_clip.get_tokenizer(source)
model.eval()
with torch.no_grad(), Image.open(sys.argv[2]) as image:
    pixels = preprocess(image.convert("RGB")).unsqueeze(0)
    ids = tokenizer(json.loads(sys.argv[3]))
    out = {"pixels": pixels.flatten()[:4096].tolist(), "ids": ids.tolist(),
           "image": model.encode_image(pixels, normalize=True)[0].tolist(),
           "text": model.encode_text(ids, normalize=True).tolist()}
print(json.dumps(out))
"""


def offline_env(home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if home is not None:
        env["HF_HOME"] = str(home)
    return env


def official(source: str, home: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OFFICIAL, source, str(XRAY), json.dumps(CAPTIONS)],
                          capture_output=True, text=True, timeout=300, cwd=cwd, env=offline_env(home))


def ours(source: str | Path, **kwargs) -> dict[str, torch.Tensor]:
    from PIL import Image

    loaded = load_model(source, **kwargs)
    with torch.no_grad(), Image.open(XRAY) as image:
        pixels = loaded.preprocess(image.convert("RGB")).unsqueeze(0)
        ids = loaded.tokenizer(CAPTIONS)
        return {"pixels": pixels.flatten()[:4096], "ids": ids,
                "image": loaded.model.encode_image(pixels, normalize=True)[0],
                "text": loaded.model.encode_text(ids, normalize=True)}


def assert_same(reference: dict, got: dict[str, torch.Tensor]) -> None:
    assert torch.equal(torch.tensor(reference["ids"]), got["ids"]), "token ids differ"
    assert torch.allclose(torch.tensor(reference["pixels"]), got["pixels"], atol=1e-6), "preprocessing differs"
    image = torch.nn.functional.cosine_similarity(torch.tensor(reference["image"]), got["image"], dim=0)
    text = torch.nn.functional.cosine_similarity(torch.tensor(reference["text"]), got["text"], dim=1)
    assert image.item() >= 0.9999 and text.min().item() >= 0.9999, (image, text)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    current, bert = published_checkpoint(root / "current", PUBMEDBERT, spelling="current")
    legacy, _ = published_checkpoint(root / "legacy", PUBMEDBERT, spelling="legacy")
    home = hf_home(root / "hf", current, bert, PUBMEDBERT)
    return {"root": root, "current": current, "legacy": legacy, "home": home}


@pytest.fixture
def cache(published, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(published["home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def test_the_official_snippet_and_the_pipeline_give_the_same_tokens_and_embeddings(published, cache, tmp_path):
    reference = official(f"hf-hub:{BIOMEDCLIP}", published["home"], tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = json.loads(reference.stdout.strip().splitlines()[-1])
    assert len(expected["ids"][0]) == 256
    assert_same(expected, ours(f"hf-hub:{BIOMEDCLIP}"))
    assert_same(expected, ours(published["current"]))
    # The older spelling: open_clip itself refuses it; the pipeline reads it as today's, and the
    # same weights give the official snippet's numbers.
    refused = official(f"local-dir:{published['legacy']}", published["home"], tmp_path)
    assert refused.returncode != 0 and "unexpected keyword argument 'proj'" in refused.stderr
    assert_same(expected, ours(published["legacy"]))


def test_the_trained_model_loads_with_plain_open_clip_in_its_folder_and_exported_from_anywhere(tiny_world, tmp_path):
    """`data/train/final` as the trainer writes it names its hub-less text tower `.` (no absolute
    path): open_clip alone, with no cache, loads it from inside the folder; `biomedclip export`
    writes the copy it loads from any working directory. Both give the pipeline's own embeddings."""
    from biomedclip.cli import app

    final = Path(tiny_world.trained["model_dir"])
    card = (final / "README.md").read_text()
    assert "local-dir:" in card and "Intended use" in card and "Limitations" in card
    assert str(tiny_world.root) not in (final / "open_clip_config.json").read_text()
    ours_now = ours(final)
    inside = official("local-dir:.", tmp_path / "no-cache", final)
    assert inside.returncode == 0, inside.stderr[-3000:]
    assert_same(json.loads(inside.stdout.strip().splitlines()[-1]), ours_now)

    exported = tmp_path / "exported"
    done = CliRunner().invoke(app, ["export", str(final), str(exported)])
    assert done.exit_code == 0, done.output
    elsewhere = official(f"local-dir:{exported}", tmp_path / "no-cache", tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr[-3000:]
    assert_same(json.loads(elsewhere.stdout.strip().splitlines()[-1]), ours_now)


@pytest.fixture(scope="module")
def registry(tiny_world, published, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    evaluate = EvaluateParams(batch_size=16, cache=root / "evaluations",
                              benchmarks=(BenchmarkSpec(name="figure-types", path=str(tiny_world.benchmark)),),
                              outputs=EvaluateOutputs(metrics=root / "eval.json", plots=root / "plots",
                                                      report=root / "report.md"))
    params = RegisterParams(model_name="withbaseline", decision_log=root / "decisions.jsonl", output=root / "r.json",
                            gate=GateParams(primary="retrieval/image_to_text/recall_at_10", guards=(),
                                            tolerance=0.05, reference="baseline"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(published["home"]))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        yield {"root": root, "params": params, "evaluate": evaluate, "tracking": tiny_world.tracking,
               "shards": tiny_world.shards.outputs.shards, "trained": tiny_world.trained}


def test_register_the_published_model_as_baseline_once_with_external_lineage(registry, published):
    p, tracking = registry["params"], registry["tracking"]
    first = register_external(p, tracking, registry["evaluate"], registry["shards"],
                              source=f"hf-hub:{BIOMEDCLIP}", alias="baseline")
    again = register_external(p, tracking, registry["evaluate"], registry["shards"],
                              source=str(published["current"]), alias="baseline")  # the same weights
    assert first["created"] and not again["created"] and again["version"] == first["version"]
    tags = first["tags"]
    assert tags["biomedclip.lineage.kind"] == "external"
    assert tags["biomedclip.external.source"] == f"hf-hub:{BIOMEDCLIP}"
    assert tags["biomedclip.model.weights_file"] == "open_clip_pytorch_model.bin"
    assert "zero_shot/figure-types/top1" in {k.removeprefix("biomedclip.eval.") for k in tags}
    run = mlflow.MlflowClient(tracking.uri).get_run(tags["biomedclip.mlflow.run_id"])
    assert "eval/image_to_text/recall_at_10" in run.data.metrics  # its evaluation, in its own run

    chain = lineage("models:/withbaseline@baseline", p, tracking)
    assert chain["kind"] == "external" and chain["aliases"] == ["baseline"]
    text = lineage_text(chain)
    assert f"source         hf-hub:{BIOMEDCLIP}" in text and "external model" in text
    assert verify(chain, tracking, shard_manifest=registry["shards"] / "manifest.json", model_dir=None).problems == []
    with pytest.raises(RegistryError, match="promotion gate"):
        register_external(p, tracking, registry["evaluate"], registry["shards"], source=str(published["current"]),
                          alias="champion")

    # The registered copy is self-contained: a fresh process with no Hugging Face cache serves it.
    script = f"""
import json, mlflow, pandas as pd
mlflow.set_tracking_uri({tracking.uri!r})
model = mlflow.pyfunc.load_model("models:/withbaseline@baseline")
out = model.predict(pd.DataFrame({{"image": [{str(XRAY)!r}], "text": [{CAPTIONS[0]!r}]}}))
print(json.dumps({{"image": out["image_embedding"][0], "text": out["text_embedding"][0]}}))
"""
    served = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=registry["root"], env=offline_env(registry["root"] / "no-cache"))
    assert served.returncode == 0, served.stderr[-3000:]
    got, expected = json.loads(served.stdout.strip().splitlines()[-1]), ours(published["current"])
    assert torch.allclose(torch.tensor(got["image"]), expected["image"], atol=1e-5)
    assert torch.allclose(torch.tensor(got["text"]), expected["text"][0], atol=1e-5)


def test_compare_puts_models_side_by_side_and_the_gate_holds_the_reference(registry, published):
    p, tracking = registry["params"], registry["tracking"]
    register_external(p, tracking, registry["evaluate"], registry["shards"], source=str(published["current"]))
    trained = registry["trained"]["model_dir"]
    result = compare([trained, "models:/withbaseline@baseline"], registry["evaluate"], shards_dir=registry["shards"],
                     tracking=tracking)
    recall = "retrieval/image_to_text/recall_at_10"
    row = result["metrics"][recall]
    assert set(row) == {trained, "models:/withbaseline@baseline"}
    assert result["delta"][recall]["models:/withbaseline@baseline"] == pytest.approx(
        row["models:/withbaseline@baseline"] - row[trained])
    # The trained model learnt the demo corpus; the random baseline did not.
    assert result["best"][recall] == trained
    table = markdown(result)
    assert f"**{row[trained]:.4f}**" in table and "Δ `models:/withbaseline@baseline`" in table

    # The CLI: shorthand aliases, files written.
    from biomedclip.cli import app

    params_file = registry["root"] / "params.yaml"
    params_file.write_text(json.dumps({
        "register": {"model_name": "withbaseline"}, "shard": {"outputs": {
            "shards": str(registry["shards"]), "manifest": str(registry["shards"] / "manifest.json")}},
        "tracking": {"uri": tracking.uri, "experiment": tracking.experiment},
        "evaluate": {"batch_size": 16,
                     "benchmarks": [{"name": "figure-types", "path": registry["evaluate"].benchmarks[0].path}]}}))
    run = CliRunner().invoke(app, ["--params", str(params_file), "compare", trained, "@baseline",
                                   "--report", str(registry["root"] / "cmp")])
    assert run.exit_code == 0, run.output
    saved = json.loads((registry["root"] / "cmp" / "compare.json").read_text())
    assert saved["models"] == [trained, "models:/withbaseline@baseline"]
    assert (registry["root"] / "cmp" / "compare.md").read_text().startswith("## Models compared")


def test_init_from_the_published_model_trains_the_biomedclip_profile(tiny_world, published, cache, tmp_path,
                                                                       monkeypatch):
    """Continue pretraining from a full-size checkpoint in the published layout: the tokenizer
    stage takes the checkpoint's own vocabulary (a larger one is refused, both sizes named), two
    steps run, and the result is the published layout again, its text tower named as Microsoft's."""
    from biomedclip.train.loop import Resume, train
    from biomedclip.train.tokenizer import VocabularyMismatch, prepare_tokenizer

    full, bert = published_checkpoint(tmp_path / "full", PUBMEDBERT, size="full", tokenizer_files=False)
    home = hf_home(tmp_path / "hf", full, bert, PUBMEDBERT)
    monkeypatch.setenv("HF_HOME", str(home))
    tokenizer = TokenizerParams(out=tmp_path / "tokenizer")
    done = prepare_tokenizer(tokenizer, tiny_world.root / "unused.parquet", init_from=f"hf-hub:{BIOMEDCLIP}")
    assert done["vocab_size"] == 28895 and done["embedding_rows"] == 30522
    big = tmp_path / "big-vocab"
    big.mkdir()
    vocabulary = (PUBMEDBERT / "vocab.txt").read_text(encoding="utf-8")
    (big / "vocab.txt").write_text(vocabulary + "".join(f"extra{i}\n" for i in range(2000)), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (big / name).write_bytes((PUBMEDBERT / name).read_bytes())
    with pytest.raises(VocabularyMismatch, match=r"30895 tokens.*30522 rows"):
        prepare_tokenizer(TokenizerParams(out=tmp_path / "refused", pubmedbert_dir=big), Path("unused"),
                          init_from=str(full))
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "train"
    params = TrainParams(profile="biomedclip", init_from=f"hf-hub:{BIOMEDCLIP}", tokenizer=tokenizer, epochs=1,
                         samples_per_epoch=4, global_batch=2, lr=1e-5, warmup_steps=0, workers=0, shuffle_buffer=8,
                         checkpoint_every=100, log_every=1,
                         outputs=TrainOutputs(dir=out, run_info=out / "run.json", loss_curve=out / "loss.csv",
                                              metrics=out / "train.json"))
    shards = ShardParams(outputs=ShardOutputs(shards=tiny_world.shards.outputs.shards,
                                              manifest=tiny_world.shards.outputs.manifest,
                                              report=tmp_path / "shard.json"))
    info = train(params, shards, TrackingParams(enabled=False), resume=Resume.NEVER)
    assert info["steps"] == 2 and info["metrics"]["final_loss"] is not None
    final = Path(info["model_dir"])
    spec = json.loads((final / "open_clip_config.json").read_text())
    assert spec["model_cfg"]["text_cfg"]["hf_model_name"] == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    started = torch.load(full / "open_clip_pytorch_model.bin", weights_only=True)
    trained = load_model(final).model.state_dict()
    moved = (trained["logit_scale"] - started["logit_scale"]).abs().item()
    assert torch.allclose(trained["visual.trunk.pos_embed"], started["visual.trunk.pos_embed"], atol=1e-3), \
        "the run did not start from the checkpoint"
    assert moved < 1e-2


def test_mlflow_models_serve_answers_for_the_baseline(registry, published):
    """The REST endpoint users put in front of the registered baseline, with no Hugging Face cache."""
    register_external(registry["params"], registry["tracking"], registry["evaluate"], registry["shards"],
                      source=str(published["current"]))
    answer = ask_model_server("models:/withbaseline@baseline", registry["tracking"].uri, registry["root"],
                              [{"text": CAPTIONS[0]}], env=offline_env(registry["root"] / "no-cache"))
    embedding = torch.tensor(answer["predictions"][0]["text_embedding"])
    assert torch.allclose(embedding, ours(published["current"])["text"][0], atol=1e-5)
