"""A gated task through the real fleet: the agent works in a worktree, the gate decides."""

from __future__ import annotations

import os
from pathlib import Path

from gitrepo import git, make_repo

from coordinator.agents import resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.gating import GatedAttempts, MergeMode
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from memory_db import AgentMemory, ModificationOutcome
from self_tune import GateCommand, GateSettings, ValidationGate


def setup(tmp_path: Path, check: str) -> tuple[Path, FolderQueue, GatedAttempts, AgentMemory]:
    repo = make_repo(tmp_path / "repo", {"app.py": "VALUE = 1\n"})
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fix.toml").write_text('prompt = "set VALUE to 2"\ngate = true\nmax_attempts = 1\n')
    memory = AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}")
    gate = ValidationGate(repo, env=dict(os.environ), settings=GateSettings(
        commands=(GateCommand(name="check", command=check, timeout_s=60),)))
    return repo, FolderQueue(tasks, retry_backoff_s=0), GatedAttempts(
        gate, merge=MergeMode.AUTO, memory=memory), memory


def run(queue: FolderQueue, gating: GatedAttempts, memory: AgentMemory, command: str) -> None:
    Fleet(queue, resolve_profile(command, {}), memory=memory, gating=gating,
          settings=FleetSettings(poll_s=0.05, workdir=queue.root.parent),
          tunables=lambda: FleetTunables(agents=1, lease_s=60)).run(until_empty=True)


def test_a_gated_task_is_merged_after_the_gate_passes(tmp_path: Path) -> None:
    """The agent edits its worktree; the gate passes; the change is on main; memory says so."""
    repo, queue, gating, memory = setup(tmp_path, "grep -q 'VALUE = 2' app.py")
    run(queue, gating, memory, "echo 'VALUE = 2' > app.py")
    assert queue.get("fix").state == TaskState.DONE
    assert (repo / "app.py").read_text() == "VALUE = 2\n"
    assert git(repo, "status", "--porcelain") == ""
    [mod] = memory.modifications()
    assert mod.outcome is ModificationOutcome.DEPLOYED and mod.files_changed == ("app.py",)
    assert git(repo, "worktree", "list").count("\n") == 0  # the attempt's worktree is gone


def test_a_failing_gate_fails_the_task_and_merges_nothing(tmp_path: Path) -> None:
    """A gate command that fails is a failed attempt; main is unchanged."""
    repo, queue, gating, memory = setup(tmp_path, "exit 1")
    before = git(repo, "rev-parse", "main")
    run(queue, gating, memory, "echo 'VALUE = 3' > app.py")
    record = queue.get("fix")
    assert record.state == TaskState.FAILED
    assert "validation gate" in record.history[-1].reason
    assert git(repo, "rev-parse", "main") == before
    [mod] = memory.modifications()
    assert mod.outcome is ModificationOutcome.VALIDATION_FAILED


def test_a_gated_task_without_a_gate_fails_with_the_reason(tmp_path: Path) -> None:
    """gate = true on a coordinator with no gate is refused, saying how to run one."""
    _, queue, _, _ = setup(tmp_path, "true")
    Fleet(queue, resolve_profile("true", {}), settings=FleetSettings(
        poll_s=0.05, workdir=queue.root.parent)).run(until_empty=True)
    record = queue.get("fix")
    assert record.state == TaskState.FAILED
    assert "--self-improve" in record.history[-1].reason
