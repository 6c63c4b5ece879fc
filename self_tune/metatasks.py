"""Meta-tasks: what the loop found, written as a task file the fleet can work on.

A `Finding` is anything the loop cannot fix by tuning: an anomaly, a breached objective, a
tuned parameter pinned at its bound for several windows, a static-analysis finding. The
`MetaTaskGenerator` turns one into a real task file (TOML written with tomli-w into the task
folder's inbox, the same schema people drop), saying which metric, observed against which
baseline, over which window, which modules are suspected (`SUSPECTS`, below), what was tried
before on the same theme (from the agent memory), and how the change is accepted. Every task
it writes has `created_by = "self-improve"` and `gate = true`.

It refuses to write — and says why — during a kind's cooldown, past the hourly cap, while a
task on the same theme is still open, and for a theme recorded as a dead end. A theme is a
metric and its first suspect module; after `dead_end_after` failed attempts on one theme it is
recorded as a dead end and never proposed again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import tomli_w

from memory_db import AgentMemory, ModificationOutcome
from self_tune.detectors import Severity

__all__ = [
    "CREATED_BY",
    "SUSPECTS",
    "Finding",
    "FindingKind",
    "MetaTaskGenerator",
    "Proposal",
    "suspects_for",
]

CREATED_BY = "self-improve"

SUSPECTS: Mapping[str, tuple[str, ...]] = {
    # metric name pattern (fnmatch) -> the modules an agent should start in, most likely first
    "stage.*.latency*": ("orchestrator/stages/{stage}.py", "orchestrator/pipeline.py"),
    "stage.*.depth*": ("orchestrator/stages/{stage}.py", "orchestrator/resilience/priority.py"),
    "latency*": ("orchestrator/stages/inference.py", "orchestrator/pipeline.py"),
    "provider.*.error*": ("orchestrator/providers/{provider}.py",
                          "orchestrator/resilience/retry.py"),
    "error_rate_429*": ("orchestrator/resilience/ratelimit.py",
                        "orchestrator/resilience/retry.py"),
    "error_rate_timeout*": ("orchestrator/stages/inference.py",
                            "orchestrator/resilience/retry.py"),
    "upstream_error*": ("orchestrator/resilience/retry.py", "orchestrator/resilience/breaker.py",
                        "orchestrator/stages/inference.py"),
    "error_rate*": ("orchestrator/stages/inference.py", "orchestrator/resilience/breaker.py",
                    "orchestrator/resilience/retry.py"),
    "breaker*": ("orchestrator/resilience/breaker.py",),
    "shed*": ("orchestrator/resilience/priority.py", "orchestrator/stages/inference.py"),
    "cache_hit*": ("orchestrator/resilience/cache.py",),
    "dedup*": ("orchestrator/resilience/coalesce.py", "intelligence/dedup.py"),
    "semantic*": ("intelligence/dedup.py",),
    "cost*": ("orchestrator/cost.py", "intelligence/router.py"),
    "claim_latency*": ("coordinator/queue.py",),
    "backlog*": ("coordinator/fleet.py", "coordinator/queue.py"),
    "tasks_failed*": ("coordinator/fleet.py", "coordinator/agents.py"),
    "attempt_duration*": ("coordinator/fleet.py",),
    "agents_*": ("coordinator/fleet.py",),
    "param.*": ("self_tune/params.py", "self_tune/controller.py"),
}
"""Where to look first for each metric; `{stage}` and `{provider}` come from the metric name
(`stage.inference.latency_p95_ms` → `orchestrator/stages/inference.py`). Kept next to the
generator so a new metric gets its suspects in the same change."""

_FALLBACK_SUSPECTS = ("orchestrator/pipeline.py",)


def suspects_for(metric: str) -> tuple[str, ...]:
    """The modules suspected for `metric`, most likely first (the first pattern that matches)."""
    parts = metric.split(".")
    for pattern, modules in SUSPECTS.items():
        if fnmatch.fnmatchcase(metric, pattern):
            name = parts[1] if len(parts) > 2 else ""
            return tuple(m.format(stage=name, provider=name) for m in modules)
    return _FALLBACK_SUSPECTS


class FindingKind(StrEnum):
    """Why the loop writes a task; each kind has its own cooldown."""

    ANOMALY = "anomaly"        # a detector fired on a metric
    OBJECTIVE = "objective"    # an absolute objective (SLO) was breached
    PINNED = "pinned"          # a tuned parameter sat at its bound: tuning alone cannot fix it
    STATIC = "static"          # ruff or vulture found something in the repository


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """Something the fleet should look at; numbers are in the metric's own unit."""

    kind: FindingKind
    metric: str
    severity: Severity = Severity.WARNING
    observed: float | None = None
    baseline: float | None = None
    window_s: float | None = None
    detail: str = ""
    suspects: tuple[str, ...] = ()
    """Modules to start in; empty means `suspects_for(metric)`."""

    @property
    def modules(self) -> tuple[str, ...]:
        return self.suspects or suspects_for(self.metric)

    @property
    def theme(self) -> str:
        """What repeated attempts are counted against: the metric and its first suspect."""
        return f"{self.metric} in {self.modules[0]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """What `propose` did: the file it wrote, or why it wrote none."""

    written: Path | None
    task_id: str | None
    reason: str


@dataclass(slots=True)
class _Written:
    at: float
    theme: str
    task_id: str


DEFAULT_COOLDOWNS_S: Mapping[FindingKind, float] = {
    FindingKind.ANOMALY: 600.0,
    FindingKind.OBJECTIVE: 600.0,
    FindingKind.PINNED: 1800.0,
    FindingKind.STATIC: 3600.0,
}


class MetaTaskGenerator:
    """Writes task files for findings into `tasks_dir`, within cooldowns, caps and memory.

    `open_task_ids` returns the ids of tasks not yet finished (pending or claimed) — the
    coordinator passes its queue's view; `memory` (optional) supplies earlier modifications
    and dead ends, and receives new dead ends. `acceptance` are the commands every meta-task
    must pass before the gate runs.
    """

    def __init__(
        self,
        tasks_dir: Path | str,
        *,
        memory: AgentMemory | None = None,
        open_task_ids: Callable[[], Iterable[str]] = tuple,
        acceptance: Sequence[str] = (),
        cooldowns_s: Mapping[FindingKind, float] | None = None,
        max_per_hour: int = 6,
        dead_end_after: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_hour < 1:
            raise ValueError(f"max_per_hour must be >= 1, got {max_per_hour!r}")
        if dead_end_after < 1:
            raise ValueError(f"dead_end_after must be >= 1, got {dead_end_after!r}")
        self._tasks_dir = Path(tasks_dir)
        self._memory = memory
        self._open_task_ids = open_task_ids
        self._acceptance = tuple(acceptance)
        self._cooldowns_s = {**DEFAULT_COOLDOWNS_S, **(cooldowns_s or {})}
        self._max_per_hour = max_per_hour
        self._dead_end_after = dead_end_after
        self._clock = clock
        self._written: deque[_Written] = deque()
        self._last_by_kind: dict[FindingKind, float] = {}

    def propose(self, finding: Finding) -> Proposal:
        """Write a task file for `finding`, or say why not (cooldown, cap, open, dead end)."""
        now = self._clock()
        while self._written and now - self._written[0].at >= 3600.0:
            self._written.popleft()
        theme, prefix = finding.theme, _theme_prefix(finding)
        if self._is_dead_end(finding):
            return Proposal(written=None, task_id=None,
                            reason=f"{theme} is a recorded dead end")
        open_ids = set(self._open_task_ids())
        still_open = sorted(i for i in open_ids if i.startswith(prefix))
        if still_open:
            return Proposal(written=None, task_id=None,
                            reason=f"{still_open[0]} on {theme} is still open")
        last = self._last_by_kind.get(finding.kind)
        cooldown = self._cooldowns_s[finding.kind]
        if last is not None and now - last < cooldown:
            return Proposal(written=None, task_id=None, reason=(
                f"{finding.kind} cooldown: {cooldown - (now - last):.0f} s left"))
        if len(self._written) >= self._max_per_hour:
            return Proposal(written=None, task_id=None,
                            reason=f"cap of {self._max_per_hour} meta-tasks an hour reached")
        task_id = self._next_id(prefix, open_ids)
        path = self._write(task_id, self._task_table(task_id, finding))
        self._written.append(_Written(at=now, theme=theme, task_id=task_id))
        self._last_by_kind[finding.kind] = now
        return Proposal(written=path, task_id=task_id, reason=f"wrote {path.name} on {theme}")

    def propose_batch(self, findings: Sequence[Finding], *, limit: int = 10) -> Proposal:
        """One task for many findings of one kind (static analysis), capped at `limit` items."""
        if not findings:
            return Proposal(written=None, task_id=None, reason="nothing found")
        kinds = {f.kind for f in findings}
        if len(kinds) != 1:
            raise ValueError(f"a batch holds findings of one kind, got {sorted(kinds)}")
        head = findings[0]
        shown = findings[:limit]
        detail = "\n".join(f"- {f.detail}" for f in shown)
        if len(findings) > limit:
            detail += f"\n- … and {len(findings) - limit} more of the same kind"
        batch = Finding(kind=head.kind, metric=head.metric, severity=head.severity,
                        detail=detail, suspects=tuple(dict.fromkeys(
                            m for f in shown for m in f.modules)))
        return self.propose(batch)

    @staticmethod
    def finding_of(tags: Iterable[str]) -> Finding | None:
        """The finding a meta-task was written for, as far as its theme goes (from the tags
        `_task_table` gives it), or None for a task this generator did not write."""
        tags = tuple(tags)
        values = dict(t.split(":", 1) for t in tags if ":" in t)
        kinds = [k for k in FindingKind if str(k) in tags]
        if "metric" not in values or "module" not in values or not kinds:
            return None
        return Finding(kind=kinds[0], metric=values["metric"], suspects=(values["module"],))

    def record_outcome(self, task_id: str, outcome: ModificationOutcome | str, *,
                       finding: Finding) -> bool:
        """Count a gated attempt's outcome; returns True when it made the theme a dead end.

        The count comes from the memory's modifications of tasks on the same theme, so it
        survives restarts; the caller has already recorded this attempt's modification.
        """
        if self._memory is None or ModificationOutcome(outcome) in (
            ModificationOutcome.DEPLOYED, ModificationOutcome.IN_PROGRESS
        ):
            return False
        prefix = _theme_prefix(finding)
        failures = [m for m in self._memory.modifications(limit=1000)
                    if (m.task_id or "").startswith(prefix)
                    and m.outcome in (ModificationOutcome.VALIDATION_FAILED,
                                      ModificationOutcome.REJECTED,
                                      ModificationOutcome.ROLLED_BACK)]
        if len(failures) < self._dead_end_after or self._is_dead_end(finding):
            return False
        evidence = "; ".join(f"{m.task_id}: {m.outcome} ({m.description[:80]})"
                             for m in failures[: self._dead_end_after * 2])
        self._memory.record_dead_end(
            _dead_end_description(finding), module=finding.modules[0],
            reason=f"{len(failures)} gated attempts on {finding.theme} failed",
            evidence=evidence,
        )
        return True

    # -- the task file --------------------------------------------------------------------

    def _task_table(self, task_id: str, finding: Finding) -> dict[str, object]:
        priority = "high" if finding.severity is Severity.CRITICAL else "normal"
        table: dict[str, object] = {
            "id": task_id,
            "title": _title(finding),
            "prompt": self._prompt(finding),
            "priority": priority,
            "tags": ["self-improve", str(finding.kind), f"metric:{finding.metric}",
                     f"module:{finding.modules[0]}"],
            "created_by": CREATED_BY,
            "gate": True,
        }
        if self._acceptance:
            table["acceptance"] = list(self._acceptance)
        return table

    def _prompt(self, finding: Finding) -> str:
        lines = ["The self-improvement loop found a problem that tuning alone does not fix: "
                 f"{_title(finding)}.", ""]
        if finding.observed is not None:
            observed = f"- {finding.metric}: observed {finding.observed:g}"
            if finding.baseline is not None:
                observed += f" against a baseline of {finding.baseline:g}"
            if finding.window_s is not None:
                observed += f" over the last {_duration(finding.window_s)}"
            lines.append(observed)
        lines.append(f"- severity: {finding.severity}")
        if finding.detail:
            lines += ["", finding.detail]
        lines += ["", "Start in (most likely first):"]
        lines += [f"- {module}" for module in finding.modules]
        tried = self._tried_before(finding)
        if tried:
            lines += ["", "Tried before on this theme (do not repeat these):"]
            lines += [f"- {item}" for item in tried]
        lines += ["", "Make the smallest change that fixes the cause, with a test that fails "
                  "without it. Your change is merged only if the tests and ruff pass."]
        return "\n".join(lines)

    def _tried_before(self, finding: Finding) -> list[str]:
        if self._memory is None:
            return []
        prefix = _theme_prefix(finding)
        earlier = [f"{m.task_id}: {m.outcome} — {m.description[:160]}"
                   for m in self._memory.modifications(limit=200)
                   if (m.task_id or "").startswith(prefix)]
        dead = [f"dead end in {d.module}: {d.description[:160]} ({d.reason})"
                for d in self._memory.dead_ends(module=finding.modules[0], limit=20)]
        return (earlier + dead)[:10]

    def _is_dead_end(self, finding: Finding) -> bool:
        if self._memory is None:
            return False
        wanted = _dead_end_description(finding)
        return any(d.description == wanted
                   for d in self._memory.dead_ends(module=finding.modules[0], limit=1000))

    def _next_id(self, prefix: str, open_ids: set[str]) -> str:
        taken = set(open_ids) | {w.task_id for w in self._written}
        taken |= {p.stem for p in self._tasks_dir.glob(f"{prefix}*.toml")}
        if self._memory is not None:
            taken |= {m.task_id for m in self._memory.modifications(limit=1000) if m.task_id}
        # Wall time in the id keeps ids unique across restarts (the cooldown clock need not).
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        candidate, n = f"{prefix}{stamp}", 1
        while candidate in taken:
            n += 1
            candidate = f"{prefix}{stamp}-{n}"
        return candidate

    def _write(self, task_id: str, table: Mapping[str, object]) -> Path:
        """Write the file elsewhere, then rename it into the inbox: never a half-written task."""
        self._tasks_dir.mkdir(parents=True, exist_ok=True)
        target = self._tasks_dir / f"{task_id}.toml"
        fd, tmp = tempfile.mkstemp(prefix=f".{task_id}.", suffix=".tmp", dir=self._tasks_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                tomli_w.dump(dict(table), out)
            os.rename(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target


def _theme_prefix(finding: Finding) -> str:
    """Task ids on one theme share this prefix: readable, and distinct for distinct themes."""
    slug = re.sub(r"[^a-z0-9]+", "-", finding.metric.lower()).strip("-")[:32] or "metric"
    digest = hashlib.sha1(finding.theme.encode()).hexdigest()[:6]
    return f"si-{slug}-{digest}-"


def _dead_end_description(finding: Finding) -> str:
    return f"self-improve theme: {finding.theme}"


def _title(finding: Finding) -> str:
    what = {
        FindingKind.ANOMALY: "anomaly in",
        FindingKind.OBJECTIVE: "objective breached:",
        FindingKind.PINNED: "tuning pinned at its bound:",
        FindingKind.STATIC: "static analysis findings:",
    }[finding.kind]
    return f"{finding.severity}: {what} {finding.metric}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
