"""The house rules the layout promises, checked on the source: the stage libraries import no
Prefect, one module owns MLflow, nothing edits sys.path, flows/*.py are entry points only, and
the stage table imports nothing heavy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.unit
SRC = REPO / "src" / "biomedclip"
ORCHESTRATION = {"pipeline"}  # the Prefect flows
TRACKING = {"tracking.py", "register/registry.py", "register/promotion.py", "register/external.py",
            "register/lineage.py", "register/pyfunc_model.py", "register/carry_over.py"}


def imported(path: Path) -> set[str]:
    """Top-level packages a module imports, at any depth of its code (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def modules() -> list[tuple[str, Path]]:
    return [(p.relative_to(SRC).as_posix(), p) for p in sorted(SRC.rglob("*.py"))]


def test_only_the_orchestration_layer_imports_prefect():
    offenders = [name for name, path in modules()
                 if "prefect" in imported(path) and name.split("/")[0] not in ORCHESTRATION and name != "cli.py"]
    assert offenders == []
    cli = ast.parse((SRC / "cli.py").read_text())
    top_level = {n.module.split(".")[0] for n in cli.body if isinstance(n, ast.ImportFrom) and n.module}
    assert "prefect" not in top_level  # the CLI reaches Prefect only through biomedclip.pipeline


def test_only_the_tracking_modules_import_mlflow():
    assert [name for name, path in modules() if "mlflow" in imported(path) and name not in TRACKING] == []


def test_nothing_edits_sys_path():
    for name, path in [*modules(), *((p.name, p) for p in (REPO / "flows").glob("*.py"))]:
        assert "sys.path" not in path.read_text(), name


def test_flow_files_are_entry_points_into_the_pipeline_package():
    """dvc.yaml and prefect.yaml call flows/<file>.py: a stage's file runs the stage's flow from
    the stage table (biomedclip.pipeline.flows), the retrain's its own; none defines anything."""
    from biomedclip.pipeline.stages import STAGES

    stage_files = {f"{stage.name.replace('-', '_')}.py": stage.name for stage in STAGES}
    for path in sorted((REPO / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)], path.name
        sources = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
        if path.name in stage_files:
            assert sources == {"biomedclip.pipeline.flows"}, (path.name, sources)
            assert f'main("{stage_files[path.name]}")' in path.read_text(), path.name
        else:
            assert sources == {f"biomedclip.pipeline.{path.stem}"}, (path.name, sources)
    assert set(stage_files) <= {p.name for p in (REPO / "flows").glob("*.py")}


def test_the_stage_table_and_runner_import_nothing_heavy():
    """The CLI reads the table on every command: it must not pay for Prefect, torch or GX."""
    for name in ("pipeline/stages.py", "pipeline/runner.py", "stage.py", "locks.py", "imports.py"):
        tree = ast.parse((SRC / name).read_text())
        top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
        top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in top if m.split(".")[0] in ("prefect", "torch", "great_expectations", "mlflow")}, name
