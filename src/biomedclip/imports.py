"""Which of the package's modules a module runs: its import closure, read from the source.

A stage's outputs are decided by the code its entry imports, lazily or not, directly or through
other modules. This reads the `import` statements of the package's own files (no module is
imported, nothing runs) and follows them: what `dvc.yaml`'s deps of a stage must cover (checked by
`tests/test_stage_deps.py`), and what the ingest's per-article results are keyed by
(`biomedclip.ingest.state.code_digest`). Imports only for type checkers (`if TYPE_CHECKING:`) run
nothing and are left out; importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "biomedclip"
ROOT = Path(__file__).resolve().parent  # src/biomedclip

# Modules that move data or report but decide no stage's outputs: a stage's closure stops at them
# (they are neither followed nor required among its deps), each for the reason given.
INFRASTRUCTURE = {
    "biomedclip.console": "logging set-up and progress bars",
    "biomedclip.atomic_io": "writes files atomically; what is written is decided by the caller",
    "biomedclip.provenance": "the flow-run records beside the outputs (versioned as outputs themselves)",
    "biomedclip.tracking": "the MLflow client; tracking is off or on without changing an output",
    "biomedclip.git": "git commands for the retrain's lineage commit",
    "biomedclip.config": "the params machinery; each section's values are DVC params deps",
    "biomedclip.params": "composes the sections; each stage depends on its own section's module",
    "biomedclip.locks": "one writer per stage's outputs",
    "biomedclip.stage": "the entry's signature and report protocol (types only)",
    "biomedclip.pipeline": "the orchestration: Prefect flows, the stage runner, the stage table",
}


def module_file(name: str) -> Path | None:
    """The source file of module `name` of the package (a package: its `__init__.py`)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    base = ROOT.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of `tree`, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not _type_checking_only(child))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


@cache
def imports_of(name: str) -> frozenset[str]:
    """The package's modules that importing and running module `name` imports (one step)."""
    path = module_file(name)
    if path is None:
        return frozenset()
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import sub` imports the module pkg.sub where one exists
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names
                               if module_file(f"{base}.{alias.name}") is not None)]
        else:
            continue
        for target in targets:
            if module_file(target) is not None:
                found.update(m for m in _with_parents(target) if module_file(m) is not None)
    found.discard(name)
    return frozenset(found)


def exempt(name: str) -> bool:
    return any(name == module or name.startswith(module + ".") for module in INFRASTRUCTURE)


def closure(roots: Iterable[str], *, stop: Iterable[str] = ()) -> set[str]:
    """Every module of the package that running `roots` may run, infrastructure left out (see
    `INFRASTRUCTURE`), and not following the modules in `stop`."""
    stop = set(stop)
    seen: set[str] = set()
    todo = [m for root in roots for m in _with_parents(root)]
    while todo:
        name = todo.pop()
        if name in seen or name in stop or exempt(name) or module_file(name) is None:
            continue
        seen.add(name)
        todo.extend(imports_of(name))
    return seen


def relative_files(modules: Iterable[str]) -> list[str]:
    """The modules' files, relative to the package folder, sorted (`ingest/run.py`, ...)."""
    return sorted(str(module_file(m).relative_to(ROOT)) for m in modules)  # type: ignore[union-attr]
