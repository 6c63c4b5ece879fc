"""Where the tuner writes down what it did: every change with its reason, every configuration
version with its score, every rollback and every experiment's decision.

`Journal` is the interface; `MemoryJournal` keeps it in the agent memory (a change or an
adopted experiment is a modification with outcome `Deployed`, a rollback `RolledBack`, a
rejected experiment `Rejected`, with the numbers in `metric_deltas`; a configuration version
is a config snapshot labelled ``self_tune v<N>``). Without a memory, `NullJournal` keeps
nothing.

A change is recorded when it is made; what it did is known only later. `change` returns a
reference, and `measured(ref, before, after)` adds the telemetry from before and after the
change to that record (``<metric>.before``, ``<metric>.after``, ``<metric>.delta``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

__all__ = ["Change", "ChangeKind", "Journal", "MemoryJournal", "NullJournal"]


class ChangeKind(StrEnum):
    """Why a parameter moved."""

    TUNED = "tuned"
    RECOMMENDED = "recommended"  # --dry-run: what would have been applied
    ROLLED_BACK = "rolled_back"
    EXPERIMENT = "experiment"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One parameter change (or, in a dry run, recommendation), with its reason."""

    parameter: str
    old: float | None
    new: float | None
    reason: str
    kind: ChangeKind
    at: float
    applied: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "parameter": self.parameter,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
            "kind": self.kind.value,
            "at": self.at,
            "applied": self.applied,
        }


class Journal(Protocol):
    def change(self, change: Change) -> int | None:
        """Record `change`; return a reference for `measured` (None: nothing kept)."""
        ...

    def measured(self, ref: int, before: Mapping[str, float],
                 after: Mapping[str, float]) -> None:
        """Add the metrics' means before and after the change `ref` names to its record."""
        ...

    def version(self, version: int, config: Mapping[str, Any], score: float | None) -> None: ...

    def experiment(self, description: str, *, adopted: bool, numbers: Mapping[str, float]) -> None:
        ...


class NullJournal:
    """Keeps nothing (the controller still keeps its recent changes in memory)."""

    def change(self, change: Change) -> int | None:
        return None

    def measured(self, ref: int, before: Mapping[str, float],
                 after: Mapping[str, float]) -> None:
        return None

    def version(self, version: int, config: Mapping[str, Any], score: float | None) -> None:
        return None

    def experiment(self, description: str, *, adopted: bool, numbers: Mapping[str, float]) -> None:
        return None


class MemoryJournal:
    """The agent memory as the tuner's journal (see the module docstring)."""

    def __init__(self, memory: Any) -> None:
        self._memory = memory  # an AgentMemory; typed loosely so memory_db loads only here

    def change(self, change: Change) -> int | None:
        if not change.applied:
            return None  # a recommendation changed nothing; it is in the controller's log only
        from memory_db import ModificationOutcome

        outcome = (
            ModificationOutcome.ROLLED_BACK
            if change.kind is ChangeKind.ROLLED_BACK
            else ModificationOutcome.DEPLOYED
        )
        delta = (
            float(change.new) - float(change.old)
            if change.new is not None and change.old is not None
            else 0.0
        )
        return int(self._memory.record_modification(
            f"self_tune {change.kind.value}: {change.parameter} {change.old} -> {change.new}: "
            f"{change.reason}",
            files_changed=[],
            outcome=outcome,
            metric_deltas={change.parameter: delta},
        ))

    def measured(self, ref: int, before: Mapping[str, float],
                 after: Mapping[str, float]) -> None:
        record = self._memory.modification(ref)
        deltas = dict(record.metric_deltas)
        for name in sorted(set(before) & set(after)):
            deltas[f"{name}.before"] = before[name]
            deltas[f"{name}.after"] = after[name]
            deltas[f"{name}.delta"] = after[name] - before[name]
        self._memory.set_modification_outcome(ref, record.outcome, metric_deltas=deltas)

    def version(self, version: int, config: Mapping[str, Any], score: float | None) -> None:
        self._memory.snapshot_config(
            f"self_tune v{version}", {"version": version, "config": dict(config), "score": score}
        )

    def experiment(self, description: str, *, adopted: bool, numbers: Mapping[str, float]) -> None:
        from memory_db import ModificationOutcome

        self._memory.record_modification(
            f"self_tune experiment: {description}",
            files_changed=[],
            outcome=ModificationOutcome.DEPLOYED if adopted else ModificationOutcome.REJECTED,
            metric_deltas=dict(numbers),
        )
