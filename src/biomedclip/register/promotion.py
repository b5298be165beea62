"""Promote and roll back: the champion moves only through the gate, and every decision is recorded.

- `promote`: re-evaluates the champion and the challenger on the challenger's test split and
  benchmarks (stored numbers are not comparable: the test set grows with PMC; an evaluation of the
  same weights on the same data is reused, `evaluate.results_cache`), then moves `champion` only if
  the primary metric improves by the margin and no guard metric drops beyond the tolerance (and,
  with `gate.reference`, the primary metric does not fall below the reference alias's beyond the
  tolerance); the first version passes. `force` with a reason overrides, and says so.
- `rollback`: moves `champion` back to the previous champion.

Every decision is recorded on the version (tags) and appended to the JSON-lines decision log; a
decision holds a lock on the log for its whole read-decide-write, and re-checks the champion
before moving it, so two promotions at once leave the aliases consistent.
"""

from __future__ import annotations

import getpass
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from filelock import FileLock

from biomedclip.evaluate.params import EvaluateOutputs, EvaluateParams
from biomedclip.register.lineage_facts import flatten_metrics
from biomedclip.register.params import RegisterParams
from biomedclip.register.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    aliased_version,
    decisions,
    record_decision,
    utc_now,
)
from biomedclip.tracking import TrackingParams, connect, model_version
from biomedclip.vqa.params import VqaParams

log = logging.getLogger(__name__)


def gate(champion: dict[str, float] | None, challenger: dict[str, float], params: RegisterParams,
         reference: dict[str, float] | None = None) -> tuple[bool, str]:
    """The promotion rule on flattened evaluations of the same data; (passes, why). With a
    `reference` (the `gate.reference` alias's evaluation), the challenger must also not fall below
    it on the primary metric by more than the tolerance."""
    g = params.gate
    if reference is not None:
        if g.primary not in reference or g.primary not in challenger:
            raise RegistryError(f"gate metric {g.primary} is not in the evaluation")
        shortfall = reference[g.primary] - challenger[g.primary]
        if shortfall > g.tolerance:
            return False, (f"{g.primary} {challenger[g.primary]:.4f} is {shortfall:.4f} below reference "
                           f"{g.reference} ({reference[g.primary]:.4f}), beyond tolerance {g.tolerance}")
    if champion is None:
        return True, "no champion yet: the first version passes" + (
            f"; not below reference {g.reference}" if reference is not None else "")
    missing = [k for k in (g.primary, *g.guards) if k not in challenger or k not in champion]
    if missing:
        raise RegistryError(f"gate metrics {missing} are not in the evaluation (keys look like "
                            f"{sorted(challenger)[:4]}...)")
    gain = challenger[g.primary] - champion[g.primary]
    if gain < g.min_improvement:
        return False, (f"{g.primary} {challenger[g.primary]:.4f} vs champion {champion[g.primary]:.4f}: "
                       f"gain {gain:+.4f} < required {g.min_improvement:+.4f}")
    for guard in g.guards:
        drop = champion[guard] - challenger[guard]
        if drop > g.tolerance:
            return False, (f"guard {guard} drops {drop:.4f} (challenger {challenger[guard]:.4f}, champion "
                           f"{champion[guard]:.4f}) > tolerance {g.tolerance}")
    return True, (f"{g.primary} {challenger[g.primary]:.4f} vs champion {champion[g.primary]:.4f} "
                  f"(gain {gain:+.4f}); guards hold")


def evaluate_uri(uri: str, evaluate: EvaluateParams, shards_dir: Path, tracking: TrackingParams, *,
                  mlflow_run_id: str | None = None, vqa: VqaParams | None = None
                 ) -> tuple[dict[str, float], str | None]:
    """`uri`'s flattened evaluation, and where it was reused from (None: computed now). With
    `vqa`, its VQA scores too (`vqa/<benchmark>/<group>/accuracy`, a gate metric can name one),
    answered without writing anything (the token features come from the stage's cache)."""
    from biomedclip.evaluate.run import evaluate as run_evaluation

    with tempfile.TemporaryDirectory(prefix="biomedclip-gate-") as tmp:
        out = Path(tmp)
        local = evaluate.model_copy(update={"outputs": EvaluateOutputs(
            metrics=out / "eval.json", plots=out / "plots", report=out / "report.md")})
        result = run_evaluation(local, model=uri, shards_dir=shards_dir, tracking=tracking,
                                mlflow_run_id=mlflow_run_id, examples=False)
        metrics = flatten_metrics(result)
    if vqa is not None:
        from biomedclip.vqa.stage import answer_benchmarks

        metrics.update(answer_benchmarks(vqa, model=uri, tracking=tracking, write=False).flat_metrics())
    return metrics, result.get("reused")


def promote(params: RegisterParams, tracking: TrackingParams, evaluate: EvaluateParams, shards_dir: Path, *,
            version: int | None = None, force: bool = False, reason: str | None = None,
            actor: str | None = None, vqa: VqaParams | None = None) -> dict[str, Any]:
    """Run the gate for `version` (default: the challenger) and move `champion` if it passes. A
    gate metric under `vqa/` (e.g. a guard `vqa/slake/overall/accuracy`) answers `vqa`'s
    benchmarks with both models."""
    gate_metrics = (params.gate.primary, *params.gate.guards)
    vqa = vqa if any(m.startswith("vqa/") for m in gate_metrics) else None
    if force and not reason:
        raise RegistryError("--force needs --reason: overrides are recorded with why")
    client = connect(tracking)
    name = params.model_name
    actor = actor or os.environ.get("BIOMEDCLIP_ACTOR") or getpass.getuser()
    lock = FileLock(str(params.decision_log) + ".lock")
    with lock:
        candidate = model_version(client, f"models:/{name}/{version}") if version else \
            aliased_version(client, name, CHALLENGER)
        if candidate is None:
            raise RegistryError(f"{name} has no {CHALLENGER} alias and no --version was given: register first")
        champion = aliased_version(client, name, CHAMPION)
        if champion is not None and champion.version == candidate.version:
            raise RegistryError(f"{name} version {candidate.version} is already the {CHAMPION}")
        reference = aliased_version(client, name, params.gate.reference) if params.gate.reference else None
        if params.gate.reference and reference is None:
            raise RegistryError(f"register.gate.reference is {params.gate.reference!r}, an alias {name} does not "
                                f"have: `biomedclip register --model SOURCE --alias {params.gate.reference}` first")
        reused: dict[str, str] = {}

        def evaluation(role: str, version: Any) -> dict[str, float]:
            metrics, where = evaluate_uri(f"models:/{name}/{version.version}", evaluate, shards_dir, tracking,
                                           vqa=vqa)
            if where:
                reused[role] = where
            return metrics

        challenger_metrics = evaluation("challenger", candidate)
        champion_metrics = evaluation("champion", champion) if champion is not None else None
        reference_metrics = None
        if reference is not None:
            reference_metrics = (challenger_metrics if reference.version == candidate.version else
                                 evaluation("reference", reference))
        passed, why = gate(champion_metrics, challenger_metrics, params, reference_metrics)
        promoted = passed or force
        record = {"time": utc_now(), "action": "promote", "model": name, "version": int(candidate.version),
                  "previous_champion": int(champion.version) if champion else None, "promoted": promoted,
                  "gate_passed": passed, "why": why, "forced": force and not passed, "reason": reason or "",
                  "actor": actor, "primary": params.gate.primary, "reused_evaluations": reused,
                  "challenger_metrics": {k: challenger_metrics[k] for k in (params.gate.primary, *params.gate.guards)
                                         if k in challenger_metrics},
                  "champion_metrics": {k: champion_metrics[k] for k in (params.gate.primary, *params.gate.guards)
                                       if champion_metrics and k in champion_metrics} or None,
                  **({"reference": params.gate.reference,
                      "reference_metrics": {params.gate.primary: reference_metrics[params.gate.primary]}}
                     if reference_metrics else {})}
        if promoted:
            now = aliased_version(client, name, CHAMPION)  # nobody moved it meanwhile (another machine)
            if (now.version if now else None) != (champion.version if champion else None):
                raise RegistryError(f"{CHAMPION} moved to version {now.version if now else None} during the "
                                    "evaluation: run promote again")
            client.set_registered_model_alias(name, CHAMPION, candidate.version)
            if (c := aliased_version(client, name, CHALLENGER)) is not None and c.version == candidate.version:
                client.delete_registered_model_alias(name, CHALLENGER)
        record_decision(client, params, record)
    log.info("%s version %s: %s (%s)", name, candidate.version, "promoted" if promoted else "not promoted", why)
    return record


def rollback(params: RegisterParams, tracking: TrackingParams, *, reason: str = "",
             actor: str | None = None) -> dict[str, Any]:
    """Move `champion` back to the champion before the current one (from the decision log)."""
    client = connect(tracking)
    name = params.model_name
    actor = actor or os.environ.get("BIOMEDCLIP_ACTOR") or getpass.getuser()
    with FileLock(str(params.decision_log) + ".lock"):
        champion = aliased_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"{name} has no {CHAMPION} to roll back")
        history = [d for d in decisions(params.decision_log)
                   if d.get("model") == name and d.get("action") == "promote" and d.get("promoted")]
        # The promotion that made the current champion holds the one before it (so rolling back
        # twice walks back through the promotions, never forward again).
        made = next((d for d in reversed(history) if d["version"] == int(champion.version)), None)
        previous = made.get("previous_champion") if made else None
        if previous is None:
            raise RegistryError(f"{name} version {champion.version} has no previous {CHAMPION} to roll back to")
        client.set_registered_model_alias(name, CHAMPION, str(previous))
        record = {"time": utc_now(), "action": "rollback", "model": name, "version": int(previous),
                  "previous_champion": int(champion.version), "promoted": True, "reason": reason, "actor": actor}
        record_decision(client, params, record)
    log.info("%s: %s moved back from version %s to %s", name, CHAMPION, champion.version, previous)
    return record
