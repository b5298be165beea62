"""`dvc repro` re-runs exactly what changed only if each stage's deps cover the code it runs.

The stage table (`biomedclip.pipeline.stages`) names each stage's library entry; its import
closure inside `src/` (`biomedclip.imports`, read from the source) is the code that decides its
outputs, but for the modules `biomedclip.imports.INFRASTRUCTURE` exempts (each with its reason).
Every module of the closure must be a `dvc.yaml` dep of the stage, itself or through its folder,
and every code dep must be code the stage runs (or reads as data, `READ_AS_DATA`): a stale dep
re-runs the stage for nothing. The same table and `dvc.yaml` must name the same stages, each run by its flow file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from biomedclip.imports import (
    INFRASTRUCTURE,
    ROOT,
    closure,
    imports_of,
    module_file,
    relative_files,
)
from biomedclip.pipeline.stages import STAGES

from .conftest import REPO

pytestmark = pytest.mark.unit
SRC = "src/biomedclip/"
# Code deps no import reaches, each with the reason the stage depends on it.
READ_AS_DATA = {
    "vendor": "offline_pages.py copies the vendored scripts and styles into the Data Docs",
    "register/pyfunc_model.py": "logged as the registered model's code (MLflow models from code)",
}


def dvc_stages(dvc_yaml: Path = REPO / "dvc.yaml") -> dict[str, dict]:
    return yaml.safe_load(dvc_yaml.read_text())["stages"]


def dep_paths(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def uncovered(modules: set[str], deps: list[str]) -> list[str]:
    """The modules' files (relative to the package) that no dep (a file or a folder) covers."""
    covered = [d.removeprefix(SRC).rstrip("/") for d in deps if d.startswith(SRC)]
    return [f for f in relative_files(modules)
            if not any(f == d or f.startswith(d + "/") for d in covered)]


def test_the_stage_table_and_dvc_yaml_name_the_same_stages_each_run_by_its_flow():
    stages = dvc_stages()
    assert list(stages) == [s.name for s in STAGES]
    for stage in STAGES:
        flow = f"flows/{stage.name.replace('-', '_')}.py"
        assert stages[stage.name]["cmd"] == f"python {flow}", stage.name
        assert flow in dep_paths(stages[stage.name]), stage.name
        assert (REPO / flow).is_file() and module_file(stage.module) is not None, stage.name


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_each_stage_depends_on_every_module_its_entry_runs(stage):
    missing = uncovered(closure([stage.module]), dep_paths(dvc_stages()[stage.name]))
    assert missing == [], f"dvc.yaml's stage {stage.name!r} misses deps on: {', '.join(missing)}"


def unused(modules: set[str], deps: list[str]) -> list[str]:
    """The code deps (relative to the package) that hold none of the modules' files."""
    files = relative_files(modules)
    code = [d.removeprefix(SRC).rstrip("/") for d in deps if d.startswith(SRC)]
    return [d for d in code if d not in READ_AS_DATA and not any(f == d or f.startswith(d + "/") for f in files)]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_each_code_dep_of_a_stage_is_code_it_runs(stage):
    stale = unused(closure([stage.module]), dep_paths(dvc_stages()[stage.name]))
    assert stale == [], f"dvc.yaml's stage {stage.name!r} depends on code it does not run: {', '.join(stale)}"


def test_a_dep_on_code_the_stage_does_not_run_is_named():
    """Promotion is a command of its own, not the register stage's: a dep on it would re-register
    the model whenever the gate's code changed."""
    deps = [*dep_paths(dvc_stages()["register"]), SRC + "register/promotion.py"]
    assert unused(closure(["biomedclip.register.stage"]), deps) == ["register/promotion.py"]


def test_the_closure_follows_lazy_and_relative_imports_and_skips_type_checking(tmp_path):
    """What the check rests on: a lazy import inside a function counts (most of the CLI's and the
    stages' heavy imports are lazy), `from package import module` counts the module, and an
    import only for type checkers does not."""
    ingest = closure(["biomedclip.ingest.stage"])
    assert {"biomedclip.panels.layout", "biomedclip.panels.match", "biomedclip.evaluate.formats"} <= ingest
    assert "biomedclip.ingest.report" in imports_of("biomedclip.ingest.stage")  # from biomedclip.ingest import report
    assert "biomedclip.params" not in ingest and "biomedclip.pipeline.stages" not in ingest  # exempt
    assert "biomedclip.params" not in closure(["biomedclip.pipeline.stages"])  # TYPE_CHECKING only


def test_the_exemptions_are_modules_that_exist_and_say_why():
    for name, why in INFRASTRUCTURE.items():
        assert module_file(name) is not None, name
        assert len(why.split()) >= 3, name
    for path, why in READ_AS_DATA.items():
        assert (ROOT / path).exists() and len(why.split()) >= 3, path


def test_the_old_dvc_yaml_would_have_missed_the_panel_code(tmp_path):
    """The defect this check exists for: the ingest's deps once listed `src/biomedclip/ingest`
    and not `src/biomedclip/panels`, so editing the panel layout left `dvc repro` with old panels."""
    stages = dvc_stages()
    stages["ingest"]["deps"] = [d for d in stages["ingest"]["deps"]
                                if not (isinstance(d, str) and d.startswith(SRC + "panels"))]
    missing = uncovered(closure(["biomedclip.ingest.stage"]), dep_paths(stages["ingest"]))
    assert {"panels/layout.py", "panels/captions.py", "panels/match.py"} <= set(missing)
    assert (ROOT / "panels" / "layout.py").is_file()
