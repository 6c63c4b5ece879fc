"""Gated attempts: the gate's outcome, the merge mode, and the memory's record."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gitrepo import git, make_repo

from coordinator.gating import GatedAttempts, MergeMode
from coordinator.task import Task
from memory_db import AgentMemory, ModificationOutcome
from self_tune import GateCommand, GateSettings, ValidationGate


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"app.py": "VALUE = 1\n"})


@pytest.fixture
def memory(tmp_path: Path):
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as opened:
        yield opened


TASK = Task(id="si-fix", prompt="Make VALUE 2", title="make VALUE 2", gate=True)


def gated(repo: Path, memory: AgentMemory, merge: MergeMode, check: str = "true") -> GatedAttempts:
    memory.record_task(TASK.id, title=TASK.title, prompt=TASK.prompt, priority="normal",
                       state="claimed", created_by="self-improve")
    settings = GateSettings(commands=(GateCommand(name="check", command=check, timeout_s=30),))
    gate = ValidationGate(repo, settings=settings, env=dict(os.environ))
    return GatedAttempts(gate, merge=merge, memory=memory)


def work(attempts: GatedAttempts, text: str | None = "VALUE = 2\n", **kwargs):
    worktree = attempts.begin(TASK, 1)
    if text is not None:
        (worktree.path / "app.py").write_text(text)
    conclusion = attempts.conclude(TASK, worktree, agent_passed=kwargs.pop("passed", True),
                                   **kwargs)
    assert not worktree.path.exists()
    return conclusion


def test_auto_merge_deploys_and_records_the_gate(repo: Path, memory: AgentMemory) -> None:
    """With --merge auto a passing change lands on the target and is recorded Deployed."""
    conclusion = work(gated(repo, memory, MergeMode.AUTO))
    assert conclusion.outcome is ModificationOutcome.DEPLOYED and conclusion.passed
    assert (repo / "app.py").read_text() == "VALUE = 2\n"
    mod = memory.modification(conclusion.modification_id)
    assert mod.outcome is ModificationOutcome.DEPLOYED
    assert (mod.task_id, mod.branch, mod.files_changed) == ("si-fix", "self-improve/si-fix-1",
                                                          ("app.py",))
    assert mod.commit == git(repo, "rev-parse", "main")
    assert [v["name"] for v in mod.verdicts] == ["check"]


def test_review_waits_until_a_person_merges(repo: Path, memory: AgentMemory) -> None:
    """With --merge review the branch waits InProgress; `merge` lands it."""
    attempts = gated(repo, memory, MergeMode.REVIEW)
    conclusion = work(attempts)
    assert conclusion.outcome is ModificationOutcome.IN_PROGRESS and conclusion.passed
    assert (repo / "app.py").read_text() == "VALUE = 1\n"
    assert [m.task_id for m in attempts.waiting()] == ["si-fix"]
    merged = attempts.merge("si-fix")
    assert merged.outcome is ModificationOutcome.DEPLOYED
    assert (repo / "app.py").read_text() == "VALUE = 2\n"
    assert attempts.waiting() == []


def test_discard_rejects_a_waiting_branch(repo: Path, memory: AgentMemory) -> None:
    """A discarded branch is deleted and its record says Rejected."""
    attempts = gated(repo, memory, MergeMode.REVIEW)
    conclusion = work(attempts)
    attempts.discard("si-fix")
    assert memory.modification(conclusion.modification_id).outcome is ModificationOutcome.REJECTED
    assert "self-improve/si-fix-1" not in git(repo, "branch", "--list")
    with pytest.raises(LookupError):
        attempts.merge("si-fix")


def test_a_failing_gate_merges_nothing(repo: Path, memory: AgentMemory) -> None:
    """ValidationFailed leaves the target branch untouched, even with --merge auto."""
    before = git(repo, "rev-parse", "main")
    conclusion = work(gated(repo, memory, MergeMode.AUTO, check="exit 1"))
    assert conclusion.outcome is ModificationOutcome.VALIDATION_FAILED and not conclusion.passed
    assert git(repo, "rev-parse", "main") == before


def test_no_change_is_rejected(repo: Path, memory: AgentMemory) -> None:
    """An agent that changed nothing is Rejected, never Deployed."""
    conclusion = work(gated(repo, memory, MergeMode.AUTO), text=None)
    assert conclusion.outcome is ModificationOutcome.REJECTED


def test_a_failed_agent_is_recorded_without_running_the_gate(
    repo: Path, memory: AgentMemory
) -> None:
    """When the agent or its acceptance failed, the attempt is ValidationFailed with why."""
    conclusion = work(gated(repo, memory, MergeMode.AUTO), passed=False,
                      agent_reason="exit 2")
    assert conclusion.outcome is ModificationOutcome.VALIDATION_FAILED
    assert "exit 2" in conclusion.reason
    mod = memory.modification(conclusion.modification_id)
    assert mod.outcome is ModificationOutcome.VALIDATION_FAILED
