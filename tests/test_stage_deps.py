"""`dvc repro` re-runs exactly what changed only if each stage's deps cover the code it runs.

The stage table (`biomedclip.pipeline.stages`) names each stage's library entry; its import
closure inside `src/` (`biomedclip.imports`, read from the source) is the code that decides its
outputs, but for the modules `biomedclip.imports.INFRASTRUCTURE` exempts (each with its reason).
Every module of the closure must be a `dvc.yaml` dep of the stage, itself or through its folder.
The same table and `dvc.yaml` must name the same stages, each run by its flow file.
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


def test_the_old_dvc_yaml_would_have_missed_the_panel_code(tmp_path):
    """The defect this check exists for: the ingest's deps once listed `src/biomedclip/ingest`
    and not `src/biomedclip/panels`, so editing the panel layout left `dvc repro` with old panels."""
    stages = dvc_stages()
    stages["ingest"]["deps"] = [d for d in stages["ingest"]["deps"]
                                if not (isinstance(d, str) and d.startswith(SRC + "panels"))]
    missing = uncovered(closure(["biomedclip.ingest.stage"]), dep_paths(stages["ingest"]))
    assert {"panels/layout.py", "panels/captions.py", "panels/match.py"} <= set(missing)
    assert (ROOT / "panels" / "layout.py").is_file()
