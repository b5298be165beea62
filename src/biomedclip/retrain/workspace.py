"""The retrain's hands on the workspace: DVC commands, and the one-writer lock.

DVC runs through its CLI, exactly as a user would type it, with its output streamed into the
log, so a retrain reads like the commands it runs. (Git commits of the data version:
`biomedclip.git.commit_on_branch`; the one-retrain lock: `biomedclip.locks`.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message ends with its last output lines."""


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the same environment as this process
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise CommandFailed(f"`{name}` is not installed in this environment")
    return found


def run_command(*args: str, cwd: Path = Path("."), quiet: bool = False, env: dict[str, str] | None = None) -> str:
    """Run a command, streaming its output lines to the log; raise `CommandFailed` with the
    last 30 lines if it fails. Returns the whole output."""
    command = [_executable(args[0]), *args[1:]]
    shown = " ".join(args)
    log.info("$ %s", shown)
    tail: deque[str] = deque(maxlen=30)
    lines: list[str] = []
    # This environment first on PATH: the `python` of dvc.yaml's stage commands is this one, even
    # under a served deployment or a worker started without the virtualenv activated.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **(env or {})}) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if not quiet and line.strip():
                log.info("  %s", line)
    if process.returncode != 0:
        raise CommandFailed(f"`{shown}` exited with status {process.returncode}:\n" + "\n".join(tail))
    return "\n".join(lines)


def dvc_status(*targets: str, cwd: Path = Path(".")) -> dict:
    """`dvc status --json`: {} when the targets (default: the whole pipeline) are up to date."""
    output = run_command("dvc", "status", "--json", *targets, cwd=cwd, quiet=True)
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise CommandFailed(f"`dvc status --json` printed no JSON:\n{output[-2000:]}")
