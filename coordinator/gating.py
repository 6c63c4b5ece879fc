"""Gated attempts: a task with `gate = true` works in its own worktree, and lands only through
the validation gate.

The fleet calls `begin` before starting the agent (the agent's working directory becomes the
returned worktree) and `conclude` after the agent and the task's acceptance commands finished.
`conclude` runs the gate, records the modification in the agent memory (branch, commit, files,
the verdict per command, metric deltas), merges with `--merge auto` or leaves the branch for a
person with `--merge review`, and removes the worktree. A person then calls `merge` or
`discard` (`coordinator gate merge|discard ID`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from coordinator.task import Task
from memory_db import AgentMemory, ModificationOutcome, ModificationRecord
from self_tune.gate import GateResult, ValidationGate, Worktree

__all__ = ["GateConclusion", "GatedAttempts", "MergeMode"]

log = logging.getLogger(__name__)


class MergeMode(StrEnum):
    """What happens to a branch that passed the gate."""

    AUTO = "auto"  # merged into the target branch at once: Deployed
    REVIEW = "review"  # kept, InProgress, until `coordinator gate merge` or `discard`


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConclusion:
    """How a gated attempt ended: `passed` means the task may be marked done."""

    outcome: ModificationOutcome
    reason: str
    branch: str
    modification_id: int | None = None

    @property
    def passed(self) -> bool:
        return self.outcome in (ModificationOutcome.DEPLOYED, ModificationOutcome.IN_PROGRESS)


class GatedAttempts:
    """The validation gate as the fleet uses it, with the memory's record of every outcome.

    `on_outcome(task, outcome)` hears how each gated attempt ended, after it was recorded
    (the self-improvement loop counts failures per theme with it).
    """

    def __init__(
        self, gate: ValidationGate, *, merge: MergeMode = MergeMode.REVIEW,
        memory: AgentMemory | None = None,
        on_outcome: Callable[[Task, ModificationOutcome], None] | None = None,
    ) -> None:
        self._gate = gate
        self._merge = MergeMode(merge)
        self._memory = memory
        self._on_outcome = on_outcome

    @property
    def gate(self) -> ValidationGate:
        return self._gate

    def begin(self, task: Task, attempt: int) -> Worktree:
        """A fresh branch and worktree for this attempt."""
        return self._gate.prepare(task.id, attempt)

    def conclude(self, task: Task, worktree: Worktree, *, agent_passed: bool,
                 agent_reason: str = "") -> GateConclusion:
        """Gate the attempt's work, record it, merge or park it, and remove the worktree."""
        try:
            if agent_passed:
                result = self._gate.validate(worktree, description=_describe(task))
            else:
                result = GateResult(
                    outcome=ModificationOutcome.VALIDATION_FAILED, branch=worktree.branch,
                    base_commit=worktree.base_commit,
                    reason=f"the agent did not finish: {agent_reason or 'failed'}")
            outcome, reason = result.outcome, result.reason
            mod_id = self._record(task, result)
            if result.passed and self._merge is MergeMode.AUTO:
                merged = self._gate.merge(result.branch)
                if merged.merged:
                    outcome, reason = ModificationOutcome.DEPLOYED, merged.reason
                    self._set(mod_id, outcome, commit=merged.commit)
                else:  # e.g. a conflict, or the user's checkout has local changes: it waits
                    reason = f"gate passed; not merged: {merged.reason}"
            elif result.passed:
                reason = (f"gate passed; {result.branch} waits for review "
                          f"(coordinator gate merge {task.id})")
            if self._on_outcome is not None:
                try:
                    self._on_outcome(task, outcome)
                except Exception:  # the record stands; a listener's fault must not undo it
                    log.exception("gating: the outcome listener failed for %s", task.id)
            return GateConclusion(outcome=outcome, reason=reason, branch=result.branch,
                                  modification_id=mod_id)
        finally:
            self._gate.release(worktree)

    def waiting(self) -> list[ModificationRecord]:
        """Branches that passed the gate and wait for a person, newest first."""
        if self._memory is None:
            return []
        return [m for m in self._memory.modifications(ModificationOutcome.IN_PROGRESS)
                if m.branch]

    def merge(self, task_id: str) -> GateConclusion:
        """Merge the newest waiting branch of `task_id`; raises LookupError if none waits."""
        mod = self._waiting_for(task_id)
        assert mod.branch is not None
        merged = self._gate.merge(mod.branch)
        if not merged.merged:
            return GateConclusion(outcome=ModificationOutcome.IN_PROGRESS, reason=merged.reason,
                                  branch=mod.branch, modification_id=mod.mod_id)
        self._set(mod.mod_id, ModificationOutcome.DEPLOYED, commit=merged.commit)
        return GateConclusion(outcome=ModificationOutcome.DEPLOYED, reason=merged.reason,
                              branch=mod.branch, modification_id=mod.mod_id)

    def discard(self, task_id: str) -> GateConclusion:
        """Delete the newest waiting branch of `task_id` and record it `Rejected`."""
        mod = self._waiting_for(task_id)
        assert mod.branch is not None
        self._gate.discard(mod.branch)
        self._set(mod.mod_id, ModificationOutcome.REJECTED)
        return GateConclusion(outcome=ModificationOutcome.REJECTED, reason="discarded by a person",
                              branch=mod.branch, modification_id=mod.mod_id)

    def _waiting_for(self, task_id: str) -> ModificationRecord:
        for mod in self.waiting():
            if mod.task_id == task_id:
                return mod
        raise LookupError(f"no branch of task {task_id!r} waits for review")

    def _record(self, task: Task, result: GateResult) -> int | None:
        if self._memory is None:
            return None
        return self._memory.record_modification(
            _describe(task), files_changed=result.files_changed, outcome=result.outcome,
            task_id=task.id, metric_deltas=result.metric_deltas, branch=result.branch,
            commit=result.commit, verdicts=[v.to_json() for v in result.verdicts],
        )

    def _set(self, mod_id: int | None, outcome: ModificationOutcome, *,
             commit: str | None = None) -> None:
        if self._memory is not None and mod_id is not None:
            self._memory.set_modification_outcome(mod_id, outcome, commit=commit)


def _describe(task: Task) -> str:
    return task.title or task.prompt.strip().splitlines()[0][:200]
