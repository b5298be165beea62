"""The `register` section: the registry, the promotion gate, the decision log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from biomedclip.config import PathValue, Section, Slug


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
