"""Every model source loads the same way (`biomedclip.models`): Microsoft's published layout in both
config spellings, `hf-hub:` from a Hugging Face cache laid out as the hub client writes it, this
project's folders, and a wrong or incomplete source fails in one line naming what is missing.

Checkpoints have random weights and the real PubMedBERT vocabulary (../shared/fixtures); the
architecture is the published one with timm's ViT-Ti/16 and a 2-layer BERT, so each builds in
about a second. The official snippet itself runs in test_published.py (it needs a child process:
huggingface_hub fixes its cache folder when imported).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from biomedclip.models import (
    ModelSourceError,
    TextTower,
    load_model,
    locate_folder,
    model_uri,
    normalise_config,
    write_model_folder,
)

from .published import (
    BERT,
    BIOMEDCLIP,
    CAPTIONS,
    OLD_BERT,
    PUBMEDBERT,
    XRAY,
    hf_home,
    needs_pubmedbert,
    published_checkpoint,
)

pytestmark = needs_pubmedbert


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The same random weights in the current spelling (tokenizer files beside them) and the
    older one (no tokenizer files: vocabulary from the cache), and a HF home holding the repo."""
    root = tmp_path_factory.mktemp("published")
    current, bert = published_checkpoint(root / "current", PUBMEDBERT, spelling="current")
    legacy, _ = published_checkpoint(root / "legacy", PUBMEDBERT, spelling="legacy", tokenizer_files=False)
    home = hf_home(root / "hf", current, bert, PUBMEDBERT)
    return {"root": root, "current": current, "legacy": legacy, "home": home, "bert": bert}


@pytest.fixture
def cache(published, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(published["home"]))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return published["home"] / "hub"


def embed(loaded) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad(), Image.open(XRAY) as image:
        pixels = loaded.preprocess(image.convert("RGB")).unsqueeze(0)
        ids = loaded.tokenizer(CAPTIONS)
        return (loaded.model.encode_image(pixels, normalize=True), loaded.model.encode_text(ids, normalize=True), ids)


@pytest.mark.unit
def test_both_config_spellings_and_the_hub_id_load_the_same_model(published, cache):
    current = load_model(published["current"])
    legacy = load_model(published["legacy"])
    hub = load_model(f"hf-hub:{BIOMEDCLIP}")
    a, b, c = embed(current), embed(legacy), embed(hub)
    for other in (b, c):
        assert torch.equal(a[2], other[2]), "token ids differ"
        assert torch.allclose(a[0], other[0], atol=1e-6) and torch.allclose(a[1], other[1], atol=1e-6)
    assert a[2].shape == (2, 256)  # context 256, as published
    assert a[2][0, 0].item() == 2 and 3 in a[2][0].tolist()  # [CLS] ... [SEP] of PubMedBERT's vocabulary
    assert current.model.training is False
    # The tower's config came from the cache under each spelling's own hub id.
    assert locate_folder(published["legacy"]).text.hub_id == OLD_BERT
    assert locate_folder(published["current"]).text.hub_id == BERT
    assert locate_folder(published["current"]).text.tokenizer_dir == published["current"]  # beside the weights


@pytest.mark.unit
def test_older_keys_read_as_todays():
    spec = {"model_cfg": {"vision_cfg": {}, "text_cfg": {"hf_model_name": BERT, "proj": "mlp",
                                                          "pooler_type": "cls_last_hidden_state_pooler"}}}
    text = normalise_config(spec, "x")["model_cfg"]["text_cfg"]
    assert text == {"hf_model_name": BERT, "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler"}
    assert "proj" in spec["model_cfg"]["text_cfg"], "the caller's config is not changed"


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.unit
def test_every_command_takes_the_same_model_references(tmp_path):
    """One grammar (README "Models, one grammar"): the short forms name versions of the
    registered model; `local-dir:` is a folder; an MLflow URI needs the store to read it from."""
    assert model_uri("@champion", "biomedclip") == "models:/biomedclip@champion"
    assert model_uri(" 7 ", "biomedclip") == "models:/biomedclip/7"
    for full in ("models:/other@baseline", "models:/other/2", "runs:/abc/model", "hf-hub:org/repo",
                 "local-dir:/x/final", "./3", "data/train/final"):
        assert model_uri(full, "biomedclip") == full
    with pytest.raises(ModelSourceError, match=r"does not exist .*local-dir:PATH"):
        load_model(f"local-dir:{tmp_path / 'nothing'}")
    with pytest.raises(ModelSourceError, match=r"short registry reference.*models:/NAME@champion"):
        load_model("@champion")
    with pytest.raises(ModelSourceError, match="no tracking store"):
        load_model("models:/biomedclip@champion")


@pytest.mark.unit
def test_a_model_missing_from_the_cache_says_which_files_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelSourceError) as exc:
        load_model(f"hf-hub:{BIOMEDCLIP}")
    message = one_line(exc)
    assert f"hf-hub:{BIOMEDCLIP}" in message and "open_clip_config.json" in message
    assert "open_clip_pytorch_model.bin" in message and f"hf download {BIOMEDCLIP}" in message
    assert str(tmp_path / "empty" / "hub") in message
    with pytest.raises(ModelSourceError, match="<org>/<repo>"):
        load_model("hf-hub:not-a-hub-id")


@pytest.mark.unit
def test_a_text_tower_found_nowhere_is_named(published, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelSourceError) as exc:
        load_model(published["legacy"])  # no tokenizer beside it, nothing in this cache
    message = one_line(exc)
    assert "config.json" in message and OLD_BERT in message and "vocab.txt" in message
    assert f"hf download {OLD_BERT} config.json vocab.txt" in message


@pytest.mark.unit
def test_wrong_or_incomplete_folders_fail_in_one_line(published, cache, tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match=r"no open_clip_config\.json"):
        load_model(tmp_path / "empty")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(published["current"], no_weights)
    (no_weights / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(ModelSourceError) as exc:
        load_model(no_weights)
    assert "no weights file" in one_line(exc)
    wrong = tmp_path / "wrong"
    shutil.copytree(published["current"], wrong)
    spec = json.loads((wrong / "open_clip_config.json").read_text())
    spec["model_cfg"]["embed_dim"] = 256
    (wrong / "open_clip_config.json").write_text(json.dumps(spec))
    with pytest.raises(ModelSourceError) as exc:
        load_model(wrong)
    assert "do not fit the config" in one_line(exc)
    (wrong / "open_clip_config.json").write_text("{not json")
    with pytest.raises(ModelSourceError, match="unreadable"):
        load_model(wrong)
    pickled = tmp_path / "pickled"
    shutil.copytree(published["current"], pickled)
    torch.save({"model": object()}, pickled / "open_clip_pytorch_model.bin")  # not a plain state dict
    with pytest.raises(ModelSourceError) as exc:
        load_model(pickled)
    assert "unreadable weights" in one_line(exc)


@pytest.mark.unit
def test_a_written_folder_is_relocatable_and_its_export_loads_in_plain_open_clip_from_elsewhere(
        published, cache, tmp_path, monkeypatch):
    """A tower without a hub id (a vocabulary built here) is named `.`, the folder itself: the
    folder holds no absolute path (it hashes the same in every clone), loads moved, and
    `biomedclip export` writes the copy open_clip's own `local-dir:` loader finds from anywhere."""
    import open_clip
    from typer.testing import CliRunner

    from biomedclip.cli import app

    files = locate_folder(published["current"])
    ours = embed(load_model(published["current"]))
    out = tmp_path / "written"
    out.mkdir()
    text = TextTower(files.text.config_dir, files.text.tokenizer_dir, hub_id=None)
    write_model_folder(out, final=out, weights=files.weights, model_cfg=files.model_cfg, text=text,
                       card="# card\n", preprocess_cfg=files.spec["preprocess_cfg"])
    names = {p.name for p in out.iterdir()}
    assert {"open_clip_config.json", "open_clip_pytorch_model.bin", "config.json", "vocab.txt",
            "tokenizer.json", "README.md"} <= names
    spec = json.loads((out / "open_clip_config.json").read_text())
    assert spec["model_cfg"]["text_cfg"]["hf_model_name"] == "."
    assert str(tmp_path) not in "".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".md"))
    moved = tmp_path / "moved"
    out.rename(moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-cache"))  # nothing from a cache
    assert torch.allclose(embed(load_model(f"local-dir:{moved}"))[0], ours[0], atol=1e-6)
    (elsewhere / "params.yaml").write_text("{}\n")
    exported = tmp_path / "exported"
    done = CliRunner().invoke(app, ["export", f"local-dir:{moved}", str(exported)])
    assert done.exit_code == 0, done.output
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{exported}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{exported}")
    model.eval()
    with torch.no_grad(), Image.open(XRAY) as image:
        theirs = model.encode_image(preprocess(image.convert("RGB")).unsqueeze(0), normalize=True)
        ids = tokenizer(CAPTIONS)
        text_theirs = model.encode_text(ids, normalize=True)
    assert torch.equal(ids, ours[2])
    assert torch.allclose(theirs, ours[0], atol=1e-6) and torch.allclose(text_theirs, ours[1], atol=1e-6)
    # With a hub id, the config names the tower as Microsoft's does.
    hub = tmp_path / "hub"
    hub.mkdir()
    write_model_folder(hub, final=hub, weights=files.weights, model_cfg=files.model_cfg, text=files.text, card="")
    assert json.loads((hub / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]["hf_model_name"] == BERT


@pytest.mark.unit
def test_the_cli_exports_and_names_a_missing_model_in_one_line(published, cache, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from biomedclip.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")  # every default
    runner = CliRunner()
    out = tmp_path / "shared-model"
    done = runner.invoke(app, ["export", f"hf-hub:{BIOMEDCLIP}", str(out), "--hub-id", "org/my-biomedclip"])
    assert done.exit_code == 0, done.output
    spec = json.loads((out / "open_clip_config.json").read_text())
    assert spec["model_cfg"]["text_cfg"]["hf_model_name"] == "org/my-biomedclip"  # the repo it goes to
    assert spec["model_cfg"]["text_cfg"]["hf_proj_type"] == "mlp"
    assert (out / "config.json").is_file() and (out / "vocab.txt").is_file()
    assert torch.allclose(embed(load_model(out))[0], embed(load_model(published["current"]))[0])
    (tmp_path / "notes").mkdir()
    refused = runner.invoke(app, ["export", str(out), str(tmp_path / "notes")])
    assert refused.exit_code == 2 and "not a model folder" in refused.output
    missing = runner.invoke(app, ["evaluate", "--model", "hf-hub:someone/absent"])
    assert missing.exit_code == 1
    message = " ".join(missing.output.split())  # the console wraps long lines
    assert "hf-hub:someone/absent: not in the Hugging Face cache" in message and "Traceback" not in missing.output
