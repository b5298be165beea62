"""`params.yaml` → one frozen, validated `Params`: every stage's section, composed.

The file is read once per process, at the entry point, by `load_params`. Each section's schema
lives beside its stage (`biomedclip.<stage>.params`); this module only composes them, so a stage's
code depends on its own section, never on the others'. An unknown key or a wrong type stops the
command with the file and the dotted key named (`ConfigError`).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from biomedclip.card.params import CardParams
from biomedclip.config import ConfigError, Section, read_yaml, validated
from biomedclip.demo.params import DemoParams
from biomedclip.embed.params import EmbedParams
from biomedclip.evaluate.params import EvaluateParams
from biomedclip.ingest.params import IngestParams
from biomedclip.pipeline.params import PipelineParams
from biomedclip.register.params import RegisterParams
from biomedclip.retrain.params import RetrainParams
from biomedclip.search.params import IndexParams
from biomedclip.shard.params import ShardParams
from biomedclip.tracking import TrackingParams
from biomedclip.train.params import TrainParams
from biomedclip.validate.params import ValidateParams
from biomedclip.vqa.params import VqaParams

DEFAULT_PARAMS_PATH = Path("params.yaml")

with warnings.catch_warnings():
    # `validate` and `register` are the stages' names; as fields they shadow two class methods of
    # pydantic's BaseModel that nothing here calls (the instance attribute wins).
    warnings.filterwarnings("ignore", r'Field name "(validate|register)"', UserWarning)

    class Params(Section):
        """The whole `params.yaml`: one section per stage, and the shared `tracking`."""

        demo: DemoParams = DemoParams()
        ingest: IngestParams = IngestParams()
        validate: ValidateParams = ValidateParams()  # type: ignore[assignment]
        shard: ShardParams = ShardParams()
        train: TrainParams = TrainParams()
        evaluate: EvaluateParams = EvaluateParams()
        card: CardParams = CardParams()
        register: RegisterParams = RegisterParams()  # type: ignore[assignment]
        vqa: VqaParams = VqaParams()
        embed: EmbedParams = EmbedParams()
        index: IndexParams = IndexParams()
        retrain: RetrainParams = RetrainParams()
        tracking: TrackingParams = TrackingParams()
        pipeline: PipelineParams = PipelineParams()


def parse_params(data: Any, *, source: str = "params") -> Params:
    """Validate an already-loaded mapping; `source` names it in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    return validated(Params, data, source=f"{source}: invalid configuration")


def load_params(path: Path = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate a params file. Raises `ConfigError` naming the file and bad keys.

    Read once per process: the file is parsed again only if it changed (its size or modification
    time), so the entry point, the flow it starts and the stage all share one `Params`."""
    try:
        stat = path.stat()
    except OSError:
        return parse_params(read_yaml(path), source=str(path))  # read_yaml names what is wrong
    return _parsed(str(path.absolute()), str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _parsed(absolute: str, shown: str, mtime_ns: int, size: int) -> Params:
    return parse_params(read_yaml(Path(absolute)), source=shown)
