"""One retrain cycle: pick up what PMC added, re-run only what must, promote only a better model.

This is the decision logic, plain library code: which steps run in which order, when the cycle
ends early because nothing is new, when a version is already the champion, what is reported.
The steps themselves are a `RetrainSteps`: `WorkspaceSteps` does them on this checkout (DVC, the
sync, the registry, git); the Prefect flow (`biomedclip.pipeline.retrain`) runs each as a task
with retries and emits an event for a new champion.

1. sync     new, changed and removed article versions from `retrain.source` into `ingest.source`
            (nothing applied until every download arrived)
2. record   `dvc commit data.dvc`: the new data version
   status   nothing synced, nothing recorded and `dvc status` clean → the cycle ends: nothing new
3. repro    `dvc repro`: unchanged stages are skipped; the `register` stage registers the model
4. push     `dvc push`: the data and outputs behind the model are retrievable
5. promote  the promotion gate on the registered version (skipped if it is the champion already)
6. commit   optionally `data.dvc`, `dvc.lock`, metrics and the decision log on a git branch

A failed step ends the cycle with the step named; what ran before it stays consistent: sync
applies nothing until every download succeeded, the data version is recorded only for data that
is there, and the champion alias moves only in the promote step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from biomedclip.git import commit_on_branch
from biomedclip.ingest.run import last_run_path
from biomedclip.locks import Busy, held
from biomedclip.params import Params
from biomedclip.register.lineage_facts import data_version
from biomedclip.register.promotion import promote
from biomedclip.register.registry import CHAMPION, champion_version, tag_version
from biomedclip.retrain.params import RetrainParams
from biomedclip.retrain.sync import sync
from biomedclip.retrain.workspace import dvc_status, run_command
from biomedclip.storage import open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetrainFailed(RuntimeError):
    """A retrain step failed; the message names the step."""


class RetrainSteps(Protocol):
    """What a retrain does to the workspace, step by step."""

    def sync(self) -> dict[str, Any] | None: ...  # the sync report; None when there is no source
    def record(self) -> bool: ...  # True when a new data version was recorded
    def up_to_date(self) -> bool: ...  # the pipeline has nothing to re-run
    def repro(self) -> None: ...
    def last_ingest(self) -> dict[str, Any]: ...  # how the ingest of this repro went
    def registered(self) -> dict[str, Any]: ...  # the version the register stage wrote
    def push(self) -> None: ...
    def champion(self) -> int | None: ...
    def promote(self, version: int) -> dict[str, Any]: ...  # the gate's decision record
    def commit(self, registered: dict[str, Any]) -> str: ...  # the lineage commit
    def announce(self, decision: dict[str, Any], registered: dict[str, Any]) -> None: ...  # a new champion


class WorkspaceSteps:
    """The steps on this checkout (the current folder), as a user would run them by hand.
    `repro_env` is added to `dvc repro`'s environment (the stages' Prefect API, for one)."""

    def __init__(self, params: Params, *, repro_env: dict[str, str] | None = None) -> None:
        self.params = params
        self.repro_env = repro_env or {}

    def sync(self) -> dict[str, Any] | None:
        retrain, target = self.params.retrain, self.params.ingest.source
        if retrain.source is None:
            log.info("retrain.source is null: no sync, %s is taken as it is", target)
            return None
        if target.startswith("s3://"):
            raise ValueError(f"ingest.source is {target}: the retrain mirrors into a local folder that "
                             "data.dvc versions; set ingest.source to one (e.g. data/raw)")
        if not retrain.source.startswith("s3://") and Path(retrain.source).resolve() == Path(target).resolve():
            raise ValueError(f"retrain.source and ingest.source are both {target}: the retrain mirrors "
                             "a source into ingest.source; set retrain.source to null if nothing is to sync")
        report = sync(open_store(retrain.source, retrain.s3), Path(target), retrain.state_dir,
                      listing=retrain.listing, workers=retrain.workers,
                      max_removed_fraction=retrain.max_removed_fraction)
        return report.as_dict()

    def record(self) -> bool:
        """`dvc commit` the data version if the raw folder differs from it."""
        data_dvc, target = self.params.retrain.data_dvc, Path(self.params.ingest.source)
        if not target.is_dir():
            raise FileNotFoundError(f"{target} does not exist: set retrain.source to sync it, "
                                    "or get it with `make data` / `dvc pull`")
        if not data_dvc.exists():
            raise FileNotFoundError(f"{data_dvc} does not exist: record {target} once with `dvc add {target}` "
                                    f"and set retrain.data_dvc to the file it writes ({target}.dvc)")
        if not dvc_status(str(data_dvc)):
            return False
        run_command("dvc", "commit", "--force", "--quiet", str(data_dvc))
        return True

    def up_to_date(self) -> bool:
        return not dvc_status()

    def repro(self) -> None:
        run_command("dvc", "repro", env=self.repro_env)

    def last_ingest(self) -> dict[str, Any]:
        return _read_json(last_run_path(self.params.ingest))

    def registered(self) -> dict[str, Any]:
        return _read_json(self.params.register.output)

    def push(self) -> None:
        run_command("dvc", "push")

    def champion(self) -> int | None:
        return champion_version(self.params.register, self.params.tracking)

    def promote(self, version: int) -> dict[str, Any]:
        p = self.params
        return promote(p.register, p.tracking, p.evaluate, p.shard.outputs.shards,
                       version=version, actor="retrain", vqa=p.vqa)

    def commit(self, registered: dict[str, Any]) -> str:
        """The data version behind the model as a commit; the model version points at it."""
        retrain = self.params.retrain
        assert retrain.git_branch
        commit = commit_on_branch(retrain.git_branch, list(retrain.git_paths),
                                  f"retrain: data {data_version(retrain.data_dvc)}, {registered['uri']}")
        tag_version(self.params.register, self.params.tracking, int(registered["version"]),
                    {"git.data_commit": commit, "git.data_branch": retrain.git_branch})
        return commit

    def announce(self, decision: dict[str, Any], registered: dict[str, Any]) -> None:
        log.info("%s is the new %s", registered["uri"], CHAMPION)


def retrain(params: Params, steps: RetrainSteps, *, force: bool = False) -> dict[str, Any]:
    """One cycle holding the workspace lock; a busy workspace skips (or waits, `retrain.on_busy`).
    Returns the decision record: status, summary, the steps done and what each found."""
    retrain_params = params.retrain
    try:
        with held(retrain_params.lock, what=f"the workspace (a retrain, {retrain_params.lock})",
                  wait=retrain_params.on_busy == "wait", timeout_s=retrain_params.wait_timeout_s):
            return run_cycle(steps, retrain_params, force=force)
    except Busy as exc:
        return {"status": "skipped", "summary": f"Skipped: {exc}. Nothing was changed.", "steps": []}


def run_cycle(steps: RetrainSteps, params: RetrainParams, *, force: bool = False) -> dict[str, Any]:
    """The steps in order, the early end when nothing is new, the decision (see the module)."""
    result: dict[str, Any] = {"steps": []}

    def step(name: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            value = fn(*args)
        except Exception as exc:
            result.update(status="failed", failed_step=name,
                          summary=f"retrain failed at step '{name}': {type(exc).__name__}: {exc}")
            raise _StepError from exc
        result["steps"].append(name)
        return value

    try:
        synced = result["sync"] = step("sync", steps.sync)
        recorded = step("record", steps.record)
        if not force and not recorded and not (synced or {}).get("anything") and step("status", steps.up_to_date):
            result.update(status="nothing-new", summary="Nothing new: the data version and the pipeline "
                          "are up to date; no stage ran and nothing was registered.")
            return result
        step("repro", steps.repro)
        result["ingest"] = steps.last_ingest()
        registered = result["registered"] = steps.registered()
        if params.push:
            step("push", steps.push)
        decision: dict[str, Any] = {}
        if params.promote:
            decision = result["decision"] = step("promote", _gate, steps, int(registered["version"]))
        if params.git_branch:
            result["branch"] = params.git_branch
            result["commit"] = step("commit", steps.commit, registered)
    except _StepError:
        return result
    uri = registered["uri"]
    if decision.get("promoted"):
        steps.announce(decision, registered)
        result.update(status="promoted", summary=f"{uri} is the new {CHAMPION}: {decision['why']}.")
    elif decision.get("already_champion"):
        result.update(status="unchanged", summary=f"{uri} is already the {CHAMPION}.")
    elif decision:
        result.update(status="not-promoted", summary=f"{uri} registered, not promoted: {decision['why']}.")
    else:
        result.update(status="registered", summary=f"{uri} registered (retrain.promote is off).")
    return result


def _gate(steps: RetrainSteps, version: int) -> dict[str, Any]:
    """The promotion gate, unless `version` is the champion already (a repro that changed nothing
    the model depends on registers the same version again)."""
    if steps.champion() == version:
        return {"promoted": False, "already_champion": True, "version": version,
                "why": f"version {version} is already the {CHAMPION}"}
    return steps.promote(version)


class _StepError(Exception):
    """Internal: a step failed and the result says which."""


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def decision_markdown(result: dict[str, Any]) -> str:
    """The cycle's decision for people (the flow's `retrain-decision` artifact)."""
    lines = [f"## Retrain: {result['status']}", "", result["summary"], ""]
    if synced := result.get("sync"):
        lines += ["| sync | |", "|---|---:|", f"| versions listed | {synced['listed']:,} |",
                  *(f"| {k} | {len(synced[k]):,} |" for k in ("new", "changed", "removed", "retracted")),
                  f"| objects fetched | {synced['fetched_objects']:,} ({synced['fetched_bytes'] / 1e6:,.1f} MB) |", ""]
    if ingest := result.get("ingest"):
        lines += [f"Ingest: {ingest.get('processed', 0):,} articles processed, "
                  f"{ingest.get('unchanged', 0):,} unchanged.", ""]
    decision = result.get("decision") or {}
    if decision.get("challenger_metrics"):
        champion = decision.get("champion_metrics") or {}
        lines += ["| metric | challenger | champion |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.4f} | {champion[k]:.4f} |" if k in champion else f"| {k} | {v:.4f} | — |"
                  for k, v in decision["challenger_metrics"].items()]
        lines += [""]
    if result.get("failed_step"):
        lines += [f"Steps done: {', '.join(result['steps']) or 'none'}; failed: **{result['failed_step']}**."]
    if result.get("commit"):
        lines += [f"Data version committed on `{result['branch']}`: `{result['commit']}`."]
    return "\n".join(lines)
