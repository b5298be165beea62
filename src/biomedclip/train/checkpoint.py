"""Checkpoints that resume exactly and load without unpickling arbitrary objects.

A checkpoint is a folder `step-NNNNNNNN/`: `model.safetensors` (weights) and `state.pt` (optimizer,
step, data position, the RNG state of every rank, the run's digest and MLflow run id) saved with
plain tensors and containers only, so `torch.load(weights_only=True)` reads it. Folders appear by
atomic rename; `latest` names the newest; the older ones beyond `keep` are removed.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from biomedclip.atomic_io import atomic_directory, atomic_write_bytes

log = logging.getLogger(__name__)

LATEST = "latest"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous copies, shared storage untied (safetensors refuses aliased tensors)."""
    return {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}


def save(folder: Path, step: int, model: torch.nn.Module, state: dict[str, Any], *, keep: int = 2) -> Path:
    final = folder / f"step-{step:08d}"
    with atomic_directory(final) as staging:
        save_file(model_weights(model), str(staging / "model.safetensors"))
        torch.save(state, staging / "state.pt")
    atomic_write_bytes(folder / LATEST, final.name.encode())
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint %s", final)
    return final


def latest(folder: Path) -> Path | None:
    try:
        name = (folder / LATEST).read_text().strip()
    except OSError:
        return None
    path = folder / name
    return path if (path / "model.safetensors").is_file() and (path / "state.pt").is_file() else None


def load_state(path: Path) -> dict[str, Any]:
    """The state (optimizer, position, RNG, digest...), read before any weights are touched."""
    return torch.load(path / "state.pt", weights_only=True, map_location="cpu")


def load_weights(path: Path, model: torch.nn.Module) -> None:
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)
