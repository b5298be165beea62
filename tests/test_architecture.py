"""The house rules the layout promises, checked on the source: the stage libraries import no
Prefect, one module owns MLflow, nothing edits sys.path, flows/*.py are entry points only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.unit
SRC = REPO / "src" / "biomedclip"
ORCHESTRATION = {"pipeline"}  # the Prefect flows
TRACKING = {"tracking.py", "register/registry.py", "register/lineage.py", "register/pyfunc_model.py"}


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
    """dvc.yaml and prefect.yaml call flows/<stage>.py: each imports its flow from
    biomedclip.pipeline and defines nothing of its own."""
    for path in sorted((REPO / "flows").glob("*.py")):
        tree = ast.parse(path.read_text())
        assert not [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)], path.name
        sources = {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
        assert sources == {f"biomedclip.pipeline.{path.stem}"}, (path.name, sources)
