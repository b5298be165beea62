"""The machinery every params section is built from: frozen, strict, validated sections.

Each stage declares its own section next to its code (`biomedclip.ingest.params`,
`biomedclip.train.params`, ...) from the types here; `biomedclip.params` composes them into the
whole `params.yaml`. Every section is a pydantic model with `extra="forbid"` and strict scalar
types, so a typo'd key or a wrong type fails at start-up with the file and the dotted key named,
before any work is done. This module knows no stage.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Paths and dates arrive from YAML as strings: they are the only fields coerced.
PathValue = Annotated[Path, Field(strict=False)]
DateValue = Annotated[dt.date, Field(strict=False)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and every bad key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Interval(Section):
    """A closed interval: subclasses declare the two fields named in `BOUNDS` (default `min` and
    `max`) with their types and limits; the lower may not exceed the upper."""

    BOUNDS: ClassVar[tuple[str, str]] = ("min", "max")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        low, high = self.BOUNDS
        if getattr(self, low) > getattr(self, high):
            raise ValueError(f"{low} ({getattr(self, low)}) is greater than {high} "
                             f"({getattr(self, high)})")
        return self


class IntRange(Interval):
    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1)]


class S3Params(Section):
    """How to reach an S3 (or S3-compatible) store; credentials come from the usual AWS chain."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO / moto
    region: str = "us-east-1"
    unsigned: bool = False  # anonymous access, as the public s3://pmc-oa-opendata allows
    max_attempts: Annotated[int, Field(ge=1, le=50)] = 10  # per request: throttling, 5xx, resets


S = TypeVar("S", bound=Section)
M = TypeVar("M", bound=BaseModel)


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


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a missing file, bad YAML or a duplicate key is a `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict | list | tuple):  # a whole section: its fields say enough
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def validated(model: type[M], data: Any, *, source: str, strict: bool | None = None) -> M:
    """`data` as a `model`; every problem one line naming its dotted key, in a `ConfigError`
    that starts with `source`."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        lines = "\n".join(f"  {_describe(err)}" for err in exc.errors())
        raise ConfigError(f"{source}\n{lines}") from None


def override(section: S, **changes: Any) -> S:
    """A copy of `section` with the non-None `changes` applied and validated again."""
    updates = {key: value for key, value in changes.items() if value is not None}
    if not updates:
        return section
    merged = {**section.model_dump(), **updates}
    return validated(type(section), merged, source="command-line options: invalid value",
                     strict=False)
