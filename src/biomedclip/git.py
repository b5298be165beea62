"""Git, as the lineage needs it: the commit a workspace is at, and data-version commits on a branch.

Commands run through git's CLI. A data-version commit goes through git's plumbing into a branch
without touching the working tree, the index or the checked-out branch, so a retrain can record
what it built while someone works in the same checkout.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
NO_COMMIT = "0" * 40  # `update-ref`'s "the ref must not exist yet"


class GitError(RuntimeError):
    """A git command exited non-zero; the message gives the command and git's own words."""


def git(*args: str, cwd: Path = Path("."), env: dict[str, str] | None = None) -> str:
    """Run `git ARGS` in `cwd`; its stripped output, or `GitError`."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise GitError(f"`git {' '.join(args)}` exited with status {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


def _answer(*args: str, cwd: Path) -> str | None:
    """Output of a git query, or None where git says no (not a repository, no such ref)."""
    try:
        return git(*args, cwd=cwd)
    except (GitError, OSError):
        return None


def workspace_state(root: Path = Path(".")) -> dict[str, str]:
    """The commit checked out in `root` and whether tracked files differ from it ("true"/"false");
    commit "unknown" outside a git repository."""
    commit = _answer("rev-parse", "HEAD", cwd=root)
    dirty = _answer("status", "--porcelain", "--untracked-files=no", cwd=root)
    return {"commit": commit or "unknown", "dirty": str(bool(dirty)).lower()}


def branch_tip(branch: str, cwd: Path = Path(".")) -> str | None:
    """The commit `branch` points at, None when there is no such branch."""
    return _answer("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", cwd=cwd)


def current_branch(cwd: Path = Path(".")) -> str | None:
    """The checked-out branch, None on a detached HEAD."""
    return _answer("symbolic-ref", "--quiet", "--short", "HEAD", cwd=cwd)


def commit_on_branch(branch: str, paths: list[str], message: str, cwd: Path = Path(".")) -> str:
    """Commit the working-tree content of `paths` onto `branch` (created from HEAD if new) and
    return the commit. Nothing else changes: not the working tree, the index or HEAD. Files
    under `paths` that git ignores are left out; a path that does not exist is removed."""
    git("check-ref-format", "--branch", branch, cwd=cwd)
    ref = f"refs/heads/{branch}"
    current = branch_tip(branch, cwd) or ""
    parent = current or git("rev-parse", "HEAD", cwd=cwd)
    with tempfile.TemporaryDirectory(prefix="biomedclip-git-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", parent, cwd=cwd, env=env)
        existing = [p for p in paths if (cwd / p).exists()]
        gone = [p for p in paths if not (cwd / p).exists()]
        if gone:
            git("rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", *gone, cwd=cwd, env=env)
        if existing:
            git("add", "--", *existing, cwd=cwd, env=env)
        tree = git("write-tree", cwd=cwd, env=env)
    if tree == git("rev-parse", f"{parent}^{{tree}}", cwd=cwd):
        if not current:  # a new branch, and HEAD already holds this data version
            git("update-ref", ref, parent, NO_COMMIT, cwd=cwd)
        log.info("git: %s already holds this data version (%s)", branch, parent[:12])
        return parent
    commit = git("commit-tree", tree, "-p", parent, "-m", message, cwd=cwd)
    git("update-ref", ref, commit, current or NO_COMMIT, cwd=cwd)  # refuses if the branch moved
    if current_branch(cwd) == branch:  # the checked-out branch moved: keep the index in step
        git("reset", "--quiet", "--", *paths, cwd=cwd)
    log.info("git: committed %s on %s (%s)", ", ".join(paths), branch, commit[:12])
    return commit
