"""The `biomedclip` command line: the commands the design names, help everywhere, clear errors,
real work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from biomedclip.cli import app

from .conftest import SHARED

runner = CliRunner()
# The contract (DESIGN.md, "Contracts others rely on"): one sub-command per user action.
COMMANDS = ("demo-data", "inspect", "ingest", "validate", "shard", "train", "evaluate", "register", "promote",
            "rollback", "lineage", "retrain", "schedule", "compare", "export", "card", "vqa", "embed", "search")


def description_of(name: str) -> str:
    """What `biomedclip --help` says of NAME: a command's docstring, or a group's help (`vqa` and
    `search` run their stage or query themselves and hold sub-commands)."""
    for command in app.registered_commands:
        if (command.name or command.callback.__name__) == name:
            return command.callback.__doc__
    group = next(g.typer_instance for g in app.registered_groups if g.name == name)
    return group.info.help or group.registered_callback.callback.__doc__


@pytest.mark.unit
def test_the_commands_are_the_ones_the_design_names():
    design = SHARED / "DESIGN.md"
    if not design.is_file():
        pytest.skip(f"{design} not found (the design lives beside the project, in ../shared)")
    text = design.read_text()
    paragraph = text[text.index("CLI `biomedclip`"):text.index("`--help` on each")]
    assert tuple(re.findall(r"`([a-z][a-z-]*)`", paragraph.split(":", 1)[1])) == COMMANDS


@pytest.mark.unit
def test_top_level_help_lists_every_command_with_what_it_does():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        first_words = re.sub(r"[`*]", "", " ".join(description_of(name).split()[:2]))  # markdown off
        assert re.search(rf"│ {re.escape(name)} +{re.escape(first_words)}", result.output), name


@pytest.mark.unit
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: biomedclip {command}" in " ".join(result.output.split())


@pytest.mark.integration
def test_installed_console_script_runs():
    script = Path(sys.executable).parent / "biomedclip"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "demo-data" in result.stdout


@pytest.mark.unit
def test_bad_params_file_stops_with_the_key_named(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  articles: lots\n")
    result = runner.invoke(app, ["--params", str(params), "demo-data", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "demo.articles" in result.output and str(params) in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.unit
def test_bad_option_value_stops_with_the_option_named(tmp_path):
    result = runner.invoke(app, ["--params", str(tmp_path / "none.yaml"), "demo-data"])
    assert result.exit_code == 2 and "params file not found" in result.output
    (tmp_path / "params.yaml").write_text("")
    result = runner.invoke(app, ["--params", str(tmp_path / "params.yaml"), "demo-data",
                                 "--articles", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "articles" in result.output


@pytest.mark.unit
def test_demo_data_writes_corpus_legacy_and_benchmark_and_reports_them(tmp_path):
    (tmp_path / "params.yaml").write_text(
        f"demo:\n  image_side: {{min: 96, max: 160}}\n"
        f"  benchmark: {{out: {tmp_path / 'bench'}, per_class: 2, vqa: {{vqa_rad_images: 4, slake_images: 8}}}}\n")
    result = runner.invoke(app, [
        "--params", str(tmp_path / "params.yaml"), "demo-data", "--out", str(tmp_path / "raw"),
        "--articles", "6", "--legacy-out", str(tmp_path / "legacy"), "--workers", "1", "--benchmark"])
    assert result.exit_code == 0, result.output
    assert "articles" in result.output and "benchmark" in result.output
    metadata = sorted((tmp_path / "raw" / "metadata").glob("*.json"))
    assert len({json.loads(p.read_text())["pmcid"] for p in metadata}) == 6
    assert (tmp_path / "legacy" / "oa_file_list.csv").is_file()
    assert len(list((tmp_path / "bench" / "pmc-figure-types" / "images").rglob("*.jpg"))) == 32


@pytest.mark.unit
def test_log_level_is_validated(tmp_path):
    result = runner.invoke(app, ["--log-level", "loud", "demo-data", "--help"])
    assert result.exit_code == 2 and "log-level" in result.output


@pytest.mark.unit
def test_no_corpus_writes_only_the_benchmark_and_unmarked_folders_are_kept(tmp_path):
    (tmp_path / "params.yaml").write_text(
        f"demo:\n  out: {tmp_path / 'raw'}\n  benchmark: {{out: {tmp_path / 'bench'}, per_class: 1, "
        f"vqa: {{vqa_rad_images: 4, slake_images: 8}}}}\n")
    args = ["--params", str(tmp_path / "params.yaml"), "demo-data"]
    result = runner.invoke(app, [*args, "--no-corpus"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "raw").exists()
    assert len(list((tmp_path / "bench" / "pmc-figure-types").rglob("*.jpg"))) == 16
    assert len(list((tmp_path / "bench" / "vqa" / "slake" / "imgs").rglob("source.jpg"))) == 8
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mine.txt").write_text("not yours")
    result = runner.invoke(app, [*args, "--articles", "2"])
    assert result.exit_code == 2 and "refusing to replace" in result.output
    assert (tmp_path / "raw" / "mine.txt").exists()


@pytest.mark.unit
def test_ingest_command_runs_and_explains_bad_sources(tmp_path, noisy_corpus):
    import yaml

    from .conftest import ingest_params

    corpus, _ = noisy_corpus
    params = ingest_params(corpus.out, tmp_path / "out", limit=10)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": params.model_dump(mode="json")}))
    args = ["--params", str(tmp_path / "params.yaml"), "ingest"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pairs" in result.output and params.outputs.pairs.is_file()
    result = runner.invoke(app, [*args, "--layout", "ftp"])
    assert result.exit_code == 2 and "layout" in result.output
    result = runner.invoke(app, [*args, "--source", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "does not exist" in result.output
