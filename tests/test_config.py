"""params.yaml → validated, frozen config: errors name the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from biomedclip.config import ConfigError, override
from biomedclip.demo.params import DemoParams
from biomedclip.params import Params, load_params

from .conftest import REPO

pytestmark = pytest.mark.unit

# What the embedded demo's params.yaml turns on that the library leaves off (a new feature is
# off for everyone else until it has proved itself): params.yaml is the defaults plus these.
DEMO_SWITCHES: dict[str, Any] = {"ingest.panels.enabled": True, "shard.unit": "both"}


def demo_defaults() -> Params:
    """The defaults with `DEMO_SWITCHES` applied: what the repository's params.yaml holds."""
    data = Params().model_dump()
    for dotted, value in DEMO_SWITCHES.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return Params.model_validate(data, strict=False)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_params_file_is_valid_and_matches_the_defaults():
    params = load_params(REPO / "params.yaml")
    assert params == demo_defaults(), "params.yaml and the sections' defaults drifted apart"
    # The demo's switches are off in the library: a params file without them gets them off.
    assert params != Params() and not Params().ingest.panels.enabled and Params().shard.unit == "figure"


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = write(tmp_path, "demo:\n  articels: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    assert str(path) in str(exc.value)
    assert "demo.articels: unknown key" in str(exc.value)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"trian: unknown key"):
        load_params(write(tmp_path, "trian: {}\n"))


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("demo:\n  articles: many\n", "demo.articles"),
        ("demo:\n  articles: 1.5\n", "demo.articles"),
        ("demo:\n  articles: '10'\n", "demo.articles"),  # strict: no silent str→int
        ("demo:\n  seed: true\n", "demo.seed"),
        ("demo:\n  noise:\n    tiff: 1.5\n", "demo.noise.tiff"),
        ("demo:\n  snapshot_date: yesterday\n", "demo.snapshot_date"),
        ("demo:\n  benchmark:\n    name: Has Spaces\n", "demo.benchmark.name"),
    ],
)
def test_wrong_type_or_value_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError) as exc:
        load_params(write(tmp_path, text))
    assert f"  {key}: " in str(exc.value)


def test_every_error_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_params(write(tmp_path, "demo:\n  articles: x\n  seed: y\n  bogus: 1\n"))
    message = str(exc.value)
    assert "demo.articles" in message and "demo.seed" in message and "demo.bogus" in message


def test_range_and_exclusive_rate_groups_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"min \(500\) is greater than max \(100\)"):
        load_params(write(tmp_path, "demo:\n  image_side: {min: 500, max: 100}\n"))
    text = "demo:\n  noise:\n" + "".join(
        f"    {name}: 0.3\n" for name in ("cmyk_jpeg", "greyscale", "palette_png", "tiff"))
    with pytest.raises(ConfigError, match=r"gif sum to 1.255 > 1"):
        load_params(write(tmp_path, text))


def test_image_side_takes_a_preset_by_name_and_checks_its_median(tmp_path):
    side = load_params(write(tmp_path, "demo:\n  image_side: pmc\n")).demo.image_side
    assert (side.min, side.max, side.median) == (300, 4000, 1200)
    with pytest.raises(ConfigError, match=r"demo.image_side.*unknown preset 'large': one of demo, pmc"):
        load_params(write(tmp_path, "demo:\n  image_side: large\n"))
    with pytest.raises(ConfigError, match=r"median \(5000\) is outside \[160, 560\]|median.*4096"):
        load_params(write(tmp_path, "demo:\n  image_side: {min: 160, max: 560, median: 5000}\n"))
    with pytest.raises(ConfigError, match=r"median \(100\) is outside \[160, 560\]"):
        load_params(write(tmp_path, "demo:\n  image_side: {min: 160, max: 560, median: 100}\n"))


def test_duplicate_keys_are_refused_not_silently_overwritten(tmp_path):
    with pytest.raises(ConfigError, match="duplicate key 'articles'"):
        load_params(write(tmp_path, "demo:\n  articles: 10\n  articles: 20\n"))


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "demo: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(write(tmp_path, "- a\n- b\n"))


def test_empty_file_means_all_defaults(tmp_path):
    assert load_params(write(tmp_path, "")) == Params()


def test_config_objects_are_frozen():
    params = DemoParams()
    with pytest.raises(pydantic.ValidationError):
        params.articles = 5  # type: ignore[misc]


def test_override_validates_and_ignores_none():
    params = DemoParams()
    assert override(params, articles=None) is params
    assert override(params, articles=7, out="x/y").articles == 7
    with pytest.raises(ConfigError, match="articles"):
        override(params, articles=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("demo:\n  image_side: {min: 32, max: 100}\n", "demo.image_side.min"),
        ("demo:\n  benchmark:\n    image_side: {min: 1, max: 1}\n", "demo.benchmark.image_side.min"),
        ("demo:\n  snapshot_date: '2015-02-01'\n", "snapshot_date must be 2015-03-01 or later"),
        ("demo:\n  noise: {non_cc_license: 0.6, non_commercial_license: 0.6}\n", "sum to 1.200 > 1"),
        ("demo:\n  legacy_out: data/raw/legacy\n", "out (data/raw) and legacy_out"),
        ("demo:\n  legacy_out: ''\n", "must not contain one another"),
    ],
)
def test_values_that_would_break_generation_are_refused_up_front(tmp_path, text, message):
    with pytest.raises(ConfigError) as exc:
        load_params(write(tmp_path, text))
    assert message in str(exc.value)


def test_smallest_allowed_image_sides_still_generate(tmp_path):
    from biomedclip.demo.corpus import generate_corpus
    from biomedclip.demo.params import SideRange

    for side in (SideRange(min=64, max=64), SideRange(min=224, max=224), SideRange(min=300, max=400)):
        params = DemoParams(out=tmp_path / f"raw{side.min}", articles=6, image_side=side)
        assert generate_corpus(params).articles == 6
