"""The retrain's decision logic (`biomedclip.retrain.cycle.run_cycle`), without Prefect or DVC.

The steps are a recording stand-in for `WorkspaceSteps`: each records its call and answers what
the scenario says (a test double of the injected steps, not a mock of a library: the real steps
run in test_retrain_units on real files and git, and in test_retrain end to end). What is under
test is the order of the steps, the early end when nothing is new, "already champion", failures
named by step, and the decision users read.
"""

from __future__ import annotations

from typing import Any

import pytest

from biomedclip.retrain.cycle import decision_markdown, run_cycle
from biomedclip.retrain.params import RetrainParams

pytestmark = pytest.mark.unit

SYNCED = {"listed": 105, "new": ["PMC12000001.1"], "changed": ["PMC11000005.1"], "removed": [],
          "retracted": ["PMC11000005.1"], "fetched_objects": 9, "fetched_bytes": 2_500_000, "anything": True}
REGISTERED = {"name": "biomedclip", "version": 2, "uri": "models:/biomedclip/2"}


class Steps:
    """Answers per scenario; `calls` lists the steps in the order they ran."""

    def __init__(self, *, synced: dict[str, Any] | None = SYNCED, recorded: bool = True, up_to_date: bool = False,
                 champion: int | None = 1, decision: dict[str, Any] | None = None, fail: str | None = None) -> None:
        self.synced, self.recorded, self.clean, self.current = synced, recorded, up_to_date, champion
        self.decision = decision or {"promoted": True, "why": "recall_at_10 0.41 vs champion 0.30 (gain +0.11)",
                                     "previous_champion": 1, "version": 2,
                                     "challenger_metrics": {"retrieval/image_to_text/recall_at_10": 0.41},
                                     "champion_metrics": {"retrieval/image_to_text/recall_at_10": 0.30}}
        self.fail = fail
        self.calls: list[str] = []

    def _call(self, name: str, value: Any = None) -> Any:
        self.calls.append(name)
        if name == self.fail:
            raise RuntimeError(f"{name} broke")
        return value

    def sync(self):
        return self._call("sync", self.synced)

    def record(self):
        return self._call("record", self.recorded)

    def up_to_date(self):
        return self._call("status", self.clean)

    def repro(self):
        return self._call("repro")

    def last_ingest(self):
        return {"processed": 26, "unchanged": 79}

    def registered(self):
        return dict(REGISTERED)

    def push(self):
        return self._call("push")

    def champion(self):
        return self._call("champion", self.current)

    def promote(self, version: int):
        return self._call("promote", {**self.decision, "version": version})

    def commit(self, registered: dict[str, Any]):
        return self._call("commit", "c0ffee")

    def announce(self, decision: dict[str, Any], registered: dict[str, Any]):
        return self._call("announce")


def test_what_pmc_added_is_mirrored_recorded_rebuilt_pushed_and_a_better_model_promoted():
    steps = Steps()
    result = run_cycle(steps, RetrainParams())
    assert steps.calls == ["sync", "record", "repro", "push", "champion", "promote", "announce"]
    assert result["status"] == "promoted" and result["steps"] == ["sync", "record", "repro", "push", "promote"]
    assert result["summary"].startswith("models:/biomedclip/2 is the new champion: recall_at_10 0.41")
    assert result["ingest"] == {"processed": 26, "unchanged": 79} and result["registered"] == REGISTERED


@pytest.mark.parametrize(("synced", "recorded"), [(None, False), ({**SYNCED, "anything": False}, False)],
                         ids=["no-source", "nothing-synced"])
def test_nothing_new_ends_the_cycle_before_any_stage_runs(synced, recorded):
    steps = Steps(synced=synced, recorded=recorded, up_to_date=True)
    result = run_cycle(steps, RetrainParams())
    assert steps.calls == ["sync", "record", "status"]
    assert result["status"] == "nothing-new" and "nothing was registered" in result["summary"]
    assert "registered" not in result


@pytest.mark.parametrize("change", ["synced", "recorded", "pipeline", "force"])
def test_any_change_or_force_runs_the_pipeline(change):
    steps = Steps(synced={**SYNCED, "anything": change == "synced"}, recorded=change == "recorded",
                  up_to_date=change != "pipeline")
    run_cycle(steps, RetrainParams(), force=change == "force")
    assert "repro" in steps.calls
    # `dvc status` is asked only when neither the sync nor the record found something.
    assert ("status" in steps.calls) == (change in ("pipeline",))


def test_a_version_that_is_already_champion_is_not_put_through_the_gate():
    steps = Steps(champion=2)
    result = run_cycle(steps, RetrainParams())
    assert "promote" not in steps.calls and "announce" not in steps.calls
    assert result["status"] == "unchanged" and result["summary"] == "models:/biomedclip/2 is already the champion."
    assert result["decision"]["already_champion"] is True


def test_a_refused_challenger_is_registered_not_promoted_and_nothing_is_announced():
    steps = Steps(decision={"promoted": False, "why": "gain -0.0200 < required +0.0000"})
    result = run_cycle(steps, RetrainParams())
    assert "announce" not in steps.calls
    assert result["status"] == "not-promoted"
    assert result["summary"] == "models:/biomedclip/2 registered, not promoted: gain -0.0200 < required +0.0000."


def test_push_promote_and_the_lineage_commit_follow_the_params():
    steps = Steps()
    result = run_cycle(steps, RetrainParams(push=False, promote=False, git_branch="retrain"))
    assert steps.calls == ["sync", "record", "repro", "commit"]
    assert result["status"] == "registered" and result["commit"] == "c0ffee" and result["branch"] == "retrain"


@pytest.mark.parametrize("failing", ["sync", "record", "repro", "push", "promote", "commit"])
def test_a_failed_step_is_named_and_no_later_step_runs(failing):
    order = ["sync", "record", "repro", "push", "champion", "promote", "commit"]
    steps = Steps(fail=failing)
    result = run_cycle(steps, RetrainParams(git_branch="retrain"))
    assert result["status"] == "failed" and result["failed_step"] == failing
    assert result["summary"] == f"retrain failed at step '{failing}': RuntimeError: {failing} broke"
    assert steps.calls == order[:order.index(failing) + 1]
    assert result["steps"] == [s for s in order[:order.index(failing)] if s != "champion"]
    assert f"failed: **{failing}**" in decision_markdown(result)


def test_the_decision_people_read_has_the_sync_the_ingest_and_the_metrics():
    result = run_cycle(Steps(), RetrainParams(git_branch="retrain"))
    text = decision_markdown(result)
    assert text.startswith("## Retrain: promoted\n")
    for row in ("| versions listed | 105 |", "| new | 1 |", "| changed | 1 |", "| removed | 0 |",
                "| retracted | 1 |", "| objects fetched | 9 (2.5 MB) |",
                "Ingest: 26 articles processed, 79 unchanged.",
                "| retrieval/image_to_text/recall_at_10 | 0.4100 | 0.3000 |",
                "Data version committed on `retrain`: `c0ffee`."):
        assert row in text, row
