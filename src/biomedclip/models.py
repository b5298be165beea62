"""Every model the pipeline takes, and the model folder it writes.

A model *source* is any of:
- a folder in the published layout (what `hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`
  holds): `open_clip_config.json`, `open_clip_pytorch_model.bin` or `open_clip_model.safetensors`,
  and in some copies the tokenizer files (`vocab.txt`, `tokenizer.json`, ...);
- `hf-hub:<org>/<repo>`, resolved from the local Hugging Face cache (`HF_HUB_CACHE`, else
  `HF_HOME/hub`): never downloaded;
- this project's model folders (`data/train/final`; the older layout with a `text/` sub-folder);
- an MLflow URI (`models:/name@alias`, `models:/name/3`, `runs:/<id>/model`), downloaded first.

The published config names its text tower by hub id (`hf_model_name`), in two spellings: today's
`hf_proj_type` / `hf_pooler_type`, and older downloads' `proj` / `pooler_type`, which current
open_clip refuses (`unexpected keyword argument 'proj'`); both load here. The tower's BERT config
comes from `config.json` beside the weights, else from the cache under `hf_model_name`; its
tokenizer from the files beside the weights, else the cache under `hf_tokenizer_name`. What is
missing is named in one line (`ModelSourceError`), never a traceback.

The folder the pipeline writes (`write_model_folder`) is the published layout plus the text
tower's `config.json` and tokenizer files beside the weights, and a model card (`README.md`):
plain open_clip loads it with `local-dir:PATH` from any working directory, and it can be
uploaded to a hub repo as it is.

Weights load from safetensors, or `torch.load(weights_only=True)`: never arbitrary pickles.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from biomedclip.tracking import TrackingParams

if TYPE_CHECKING:  # torch loads with the model (4 s of CPU): commands that only name or locate one never pay it
    import torch

log = logging.getLogger(__name__)

CONFIG = "open_clip_config.json"
TEXT_CONFIG = "config.json"  # the text tower's BERT config, as transformers names it
# The order open_clip itself prefers when a folder holds several.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                "model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"  # open_clip's spelling of a folder
MLFLOW_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/")
# Every command that takes a model takes these, the same way (`model_uri`).
REFERENCE_FORMS = ("a folder", "local-dir:PATH", "hf-hub:<org>/<repo>", "models:/NAME@ALIAS", "models:/NAME/N",
                   "runs:/RUN_ID/PATH", "@ALIAS or N (a version of register.model_name)")
# Older open_clip configs (and older downloads of the published model) spell these keys so.
LEGACY_TEXT_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}


class ModelSourceError(ValueError):
    """A model source that cannot be loaded; the message names the source and what is missing."""


@dataclass(frozen=True)
class TextTower:
    config_dir: Path  # holds the BERT config.json
    tokenizer_dir: Path  # holds vocab.txt / tokenizer.json
    hub_id: str | None  # the tower's hub id when the source names one

    def vocab_size(self) -> int:
        return int(json.loads((self.config_dir / TEXT_CONFIG).read_text())["vocab_size"])


@dataclass(frozen=True)
class ModelFiles:
    """A located model: its folder, its (normalised) open_clip config, weights and text tower."""

    source: str
    folder: Path
    spec: dict[str, Any]  # open_clip_config.json: model_cfg, preprocess_cfg
    weights: Path
    text: TextTower | None  # None: open_clip's own text transformer

    @property
    def model_cfg(self) -> dict[str, Any]:
        return self.spec["model_cfg"]


class LoadedModel(NamedTuple):
    model: torch.nn.Module
    preprocess: Any  # PIL image -> tensor (evaluation transform)
    tokenizer: Any  # list[str] -> LongTensor
    folder: Path
    config: dict[str, Any]
    digest: str = ""  # sha256 of the weights file: what caches of this model's outputs are keyed by


# -- the Hugging Face cache ---------------------------------------------------------------------
def hf_cache() -> Path:
    """Where the hub client keeps its cache now (read at call time, unlike huggingface_hub's constants)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def _cached(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hf_cache())
    return Path(found) if isinstance(found, str) else None


def _populate_hint(repo_id: str, files: list[str]) -> str:
    return (f"nothing is downloaded here: on a machine with access run `HF_HOME=DIR hf download {repo_id} "
            f"{' '.join(files)}`, copy DIR here and set HF_HOME=DIR (and HF_HUB_OFFLINE=1)")


def hub_snapshot(repo_id: str) -> Path:
    """The cached snapshot folder of `hf-hub:<repo_id>` holding its open_clip config and weights."""
    if _hub_id(repo_id) is None:
        raise ModelSourceError(f"hf-hub:{repo_id}: a hub id is <org>/<repo>")
    config = _cached(repo_id, CONFIG)
    weights = next((p for p in (_cached(repo_id, n) for n in WEIGHT_FILES) if p is not None), None)
    missing = [name for name, found in ((CONFIG, config), ("open_clip_pytorch_model.bin", weights)) if found is None]
    if missing:
        raise ModelSourceError(f"hf-hub:{repo_id}: not in the Hugging Face cache {hf_cache()} (missing "
                               f"{', '.join(missing)}); {_populate_hint(repo_id, missing)}")
    assert config is not None
    return config.parent


# -- references ---------------------------------------------------------------------------------
def model_uri(reference: str, registered_name: str) -> str:
    """A model reference in its full form: `@alias` and `N` name an alias or version of the
    registered model `registered_name` (`models:/NAME@alias`, `models:/NAME/N`); every other form
    (a folder, `local-dir:`, `hf-hub:`, `models:/`, `runs:/`) is already full. A folder named
    like a number is `./3`."""
    text = reference.strip()
    if text.startswith("@") and len(text) > 1:
        return f"models:/{registered_name}{text}"
    if text.isdigit():
        return f"models:/{registered_name}/{int(text)}"
    return text


def chosen_or_trained(reference: str | None, registered_name: str, run_info: Path, *,
                      key: str, verb: str) -> tuple[str, str | None]:
    """The model a stage works with, and the MLflow run its results go into: `reference` (the
    stage's `KEY.model`, in its full form; no run) when set, else the train stage's model and its
    training run, as `train.outputs.run_info` records them. `verb` says what the model is for in
    the error a missing record raises ("evaluate": "no model to evaluate")."""
    if reference:
        return model_uri(reference, registered_name), None
    try:
        info = json.loads(run_info.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no model to {verb}: {key} is not set and {run_info} is missing "
                                f"(run `dvc repro train` first, or set {key})") from None
    return info["model_dir"], info.get("mlflow_run_id")


# -- locating ----------------------------------------------------------------------------------
def normalise_config(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """`spec` with today's key spellings (`proj` -> `hf_proj_type`, `pooler_type` -> `hf_pooler_type`)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("model_cfg"), dict):
        raise ModelSourceError(f"{where}: no `model_cfg` object (not an open_clip model config)")
    spec = copy.deepcopy(spec)
    text = spec["model_cfg"].get("text_cfg", {})
    for old, new in LEGACY_TEXT_KEYS.items():
        if old in text:
            value = text.pop(old)
            text.setdefault(new, value)
            log.info("%s: text_cfg.%s read as %s (the older spelling)", where, old, new)
    for tower in ("vision_cfg", "text_cfg"):
        if not isinstance(spec["model_cfg"].get(tower), dict):
            raise ModelSourceError(f"{where}: model_cfg has no {tower}")
    return spec


def find_model_folder(root: Path) -> Path:
    """The folder holding `open_clip_config.json` at or below `root` (MLflow artifacts nest it)."""
    if (root / CONFIG).is_file():
        return root
    found = sorted(root.rglob(CONFIG))
    if not found:
        raise ModelSourceError(f"{root}: no {CONFIG} here or below (not an open_clip model folder; the published "
                               f"layout is {CONFIG} + open_clip_pytorch_model.bin or open_clip_model.safetensors)")
    return found[0].parent


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()


def _hub_id(name: Any) -> str | None:
    """`name` if it reads as a hub id (`org/repo`), not a path."""
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    return name if all(part.strip() for part in name.split("/")) else None


def _is_text_config(path: Path) -> bool:
    try:
        return "model_type" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def _text_tower(folder: Path, text_cfg: dict[str, Any]) -> TextTower:
    """Where the HF text tower's config and tokenizer are: beside the weights, in `text/` (the
    older project layout), at a local path the config names, or in the hub cache."""
    model_name, tokenizer_name = text_cfg.get("hf_model_name"), text_cfg.get("hf_tokenizer_name")
    tokenizer_name = tokenizer_name or model_name
    hub_model, hub_tokenizer = _hub_id(model_name), _hub_id(tokenizer_name)
    hub_id = hub_model or hub_tokenizer
    local = [folder, folder / "text", *(Path(n) for n in (model_name, tokenizer_name) if n and Path(n).is_absolute())]
    config_dir = next((d for d in local if _is_text_config(d / TEXT_CONFIG)), None)
    tokenizer_dir = next((d for d in local if _has_tokenizer(d)), None)
    missing = []
    if config_dir is None and hub_model and (cached := _cached(hub_model, TEXT_CONFIG)) is not None:
        config_dir = cached.parent
    if tokenizer_dir is None and hub_tokenizer and (cached := _cached(hub_tokenizer, "vocab.txt")
                                                     or _cached(hub_tokenizer, "tokenizer.json")) is not None:
        tokenizer_dir = cached.parent
    if config_dir is None:
        missing.append(f"the text tower's {TEXT_CONFIG} ({model_name})")
    if tokenizer_dir is None:
        missing.append(f"its tokenizer, vocab.txt or tokenizer.json ({tokenizer_name})")
    if missing:
        where = f"neither beside the weights nor in the Hugging Face cache {hf_cache()}"
        hint = _populate_hint(hub_id, [TEXT_CONFIG, "vocab.txt"]) if hub_id else \
            f"put {TEXT_CONFIG} and vocab.txt beside the weights"
        raise ModelSourceError(f"{folder}: {' and '.join(missing)} {where}; {hint}")
    assert config_dir is not None and tokenizer_dir is not None
    return TextTower(config_dir, tokenizer_dir, hub_id)


def locate_folder(folder: Path, source: str | None = None) -> ModelFiles:
    """The model in `folder` (or the one folder below it holding an open_clip config)."""
    if not folder.exists():
        raise ModelSourceError(f"model {folder} does not exist (a model is one of: {', '.join(REFERENCE_FORMS)})")
    folder = find_model_folder(folder)
    try:
        spec = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelSourceError(f"{folder / CONFIG}: unreadable ({exc})") from None
    spec = normalise_config(spec, str(folder / CONFIG))
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise ModelSourceError(f"{folder}: no weights file (one of {', '.join(WEIGHT_FILES)})")
    text_cfg = spec["model_cfg"]["text_cfg"]
    text = _text_tower(folder, text_cfg) if "hf_model_name" in text_cfg else None
    return ModelFiles(source or str(folder), folder, spec, weights, text)


@contextmanager
def located(source: str | Path, *, tracking: TrackingParams | None = None,
            download_to: Path | None = None) -> Iterator[ModelFiles]:
    """Locate any model source; an MLflow URI is downloaded (into `download_to`, else a temporary
    folder removed on exit) from the store `tracking` (TrackingParams) names."""
    text = str(source)
    if text.startswith("@") or text.isdigit():
        short = text if text.startswith("@") else f"/{text}"
        raise ModelSourceError(f"{text}: a short registry reference; say which registered model "
                               f"(models:/NAME{short})")
    if text.startswith(MLFLOW_PREFIXES):
        from biomedclip.tracking import download

        if tracking is None:
            raise ModelSourceError(f"{text}: an MLflow model, and no tracking store was given to read it from")
        if download_to is not None:
            yield locate_folder(download(text, download_to, tracking), text)
            return
        with tempfile.TemporaryDirectory(prefix="biomedclip-model-") as tmp:
            yield locate_folder(download(text, Path(tmp), tracking), text)
        return
    if text.startswith(HUB_PREFIX):
        yield locate_folder(hub_snapshot(text.removeprefix(HUB_PREFIX)), text)
        return
    yield locate_folder(Path(text.removeprefix(LOCAL_DIR_PREFIX)).expanduser(), text)


# -- building ----------------------------------------------------------------------------------
def model_config(files: ModelFiles) -> dict[str, Any]:
    """The model config open_clip builds from, its text tower pointed at the located files."""
    config = copy.deepcopy(files.model_cfg)
    if files.text is not None:
        config["text_cfg"].update(hf_model_name=str(files.text.config_dir),
                                  hf_tokenizer_name=str(files.text.tokenizer_dir), hf_model_pretrained=False)
    if "timm_model_name" in config["vision_cfg"]:
        config["vision_cfg"]["timm_model_pretrained"] = False
    return config


def instantiate(config: dict[str, Any]) -> torch.nn.Module:
    """An open_clip model with random weights from a (located) model config."""
    import open_clip

    config = copy.deepcopy(config)
    config.pop("custom_text", None)
    custom = "hf_model_name" in config.get("text_cfg", {})
    model = open_clip.CustomTextCLIP(**config) if custom else open_clip.CLIP(**config)
    vision = config["vision_cfg"]
    if vision.get("timm_model_name") and vision.get("image_size", 224) != 224:
        model.visual.set_input_size(vision["image_size"])  # timm builds its ViTs for 224 px
    return model


def load_weights(model: torch.nn.Module, weights: Path) -> None:
    """Load an open_clip checkpoint strictly (open_clip's own conversions: the published file's
    `position_ids` buffer, a scalar `logit_scale`); a mismatch is one line, not a key dump."""
    import open_clip

    try:
        open_clip.load_checkpoint(model, str(weights), strict=True, weights_only=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        raise ModelSourceError(f"{weights}: the weights do not fit the config beside them ({detail[:400]})") from None
    except Exception as exc:  # an unreadable or non-tensor file (weights_only refuses pickled objects)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise ModelSourceError(f"{weights}: unreadable weights ({type(exc).__name__}: {first[:200]}; weights load "
                               "with weights_only=True: plain tensors only, no pickled objects)") from None


def preprocess_for(files: ModelFiles, image_size: int | tuple[int, int]) -> Any:
    """The evaluation transform open_clip's `create_model_from_pretrained` gives the same config."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), files.spec.get("preprocess_cfg", {}))
    cfg["size"] = image_size
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


def tokenizer_for(files: ModelFiles) -> Any:
    import open_clip

    context = files.model_cfg["text_cfg"].get("context_length", 77)
    if files.text is None:
        return open_clip.tokenizer.SimpleTokenizer(context_length=context)
    return open_clip.tokenizer.HFTokenizer(str(files.text.tokenizer_dir), context_length=context,
                                           tokenizer_mode=files.model_cfg["text_cfg"].get("tokenizer_mode"))


def build(files: ModelFiles, device: torch.device | str = "cpu") -> LoadedModel:
    model = instantiate(model_config(files))
    load_weights(model, files.weights)
    model.to(device).eval()
    image_size = getattr(model.visual, "image_size", files.model_cfg["vision_cfg"].get("image_size", 224))
    from biomedclip.digests import file_sha256

    return LoadedModel(model, preprocess_for(files, image_size), tokenizer_for(files), files.folder, files.spec,
                       file_sha256(files.weights))


def load_model(source: str | Path, device: torch.device | str = "cpu", download_to: Path | None = None,
               tracking: TrackingParams | None = None) -> LoadedModel:
    """Load any model source (see the module's docstring) for inference."""
    with located(source, tracking=tracking, download_to=download_to) as files:
        return build(files, device)


def load_folder(folder: Path, device: torch.device | str = "cpu") -> LoadedModel:
    return build(locate_folder(folder), device)


# -- the folder the pipeline writes --------------------------------------------------------------
def copy_text_tower(text: TextTower, out: Path) -> None:
    """The text tower's BERT config and tokenizer files, into `out` (beside the weights)."""
    shutil.copyfile(text.config_dir / TEXT_CONFIG, out / TEXT_CONFIG)
    for name in TOKENIZER_FILES:
        if (text.tokenizer_dir / name).is_file():
            shutil.copyfile(text.tokenizer_dir / name, out / name)


def portable_config(model_cfg: dict[str, Any], *, text_name: str | None,
                    preprocess_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """`open_clip_config.json` as it is published: the text tower named by `text_name` (a hub
    id, or the folder's own path where the tower has none)."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    cfg = copy.deepcopy(model_cfg)
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"].update(hf_model_name=text_name, hf_tokenizer_name=text_name)
        cfg["text_cfg"].pop("hf_model_pretrained", None)
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    return {"model_cfg": cfg, "preprocess_cfg": preprocess_cfg or {
        "mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)}}


SELF = "."  # `hf_model_name` of a folder whose text tower has no hub id: the folder itself


def text_name_for(final: Path, hub_id: str | None) -> str:
    """What `hf_model_name` says in a folder the pipeline writes: the tower's hub id when it has
    one (open_clip finds its config in the user's cache, as for Microsoft's model), else `.`, the
    folder itself, where its `config.json` and tokenizer sit. No absolute path: the folder hashes
    the same in every clone and survives a move. The pipeline reads the tower beside the weights
    wherever the folder is; plain open_clip resolves `.` against its working directory, so for a
    tower without a hub id `biomedclip export` writes the copy it loads from anywhere."""
    return hub_id or SELF


def write_model_folder(staging: Path, *, final: Path, weights: dict[str, torch.Tensor] | Path,
                       model_cfg: dict[str, Any], text: TextTower | None, card: str,
                       preprocess_cfg: dict[str, Any] | None = None, text_name: str | None = None) -> None:
    """Fill `staging` (renamed to `final` afterwards) with a model in the published layout:
    weights (a state dict saved as safetensors, or a weights file copied as it is),
    `open_clip_config.json`, the text tower's config and tokenizer, `README.md`. The config names
    the text tower `text_name` when given, else as `text_name_for` says."""
    from safetensors.torch import save_file

    if isinstance(weights, Path):
        shutil.copyfile(weights, staging / weights.name)
    else:
        save_file(weights, str(staging / WEIGHT_FILES[0]))
    name = (text_name or text_name_for(final, text.hub_id)) if text else None
    spec = portable_config(model_cfg, text_name=name, preprocess_cfg=preprocess_cfg)
    (staging / CONFIG).write_text(json.dumps(spec, indent=2) + "\n")
    if text is not None:
        copy_text_tower(text, staging)
    (staging / "README.md").write_text(card)
