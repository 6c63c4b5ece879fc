"""`SnapshotStore`: versioned configurations with their measured scores, and rollback.

Every change the controller applies makes a new version. A version is judged on the samples
taken while it was in force — until the next version replaced it or `window_s` passed,
whichever came first, and only with at least `min_samples` of them — against the score that
prompted it (the mean of the last few samples before it). Judging a version only by its own
time keeps a later change, or a change in the weather an hour on, from being blamed on it. A
version replaced sooner than `min_age_s` is too young to judge (the measurements lag): it is
judged together with its successor, against the score before the first of them.
Worse by more than `margin` (relative, plus `abs_margin`) and the store names the version to
roll back to: the best-scoring of the versions that ran within `window_s` before the failed
one (at least its predecessor).

A before/after comparison means something only under comparable conditions: the sampler's
`conditions` (demand and upstream call time) are kept beside the scores, and a version
whose conditions moved more than `comparable` (relative) from those before it is not judged
(it is counted in `incomparable`). The controller reacts to a demand step or a slower
provider by changing things; blaming those changes for the step would undo the reaction.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from self_tune.journal import Journal, NullJournal

__all__ = ["ConfigVersion", "SnapshotStore"]


@dataclass(slots=True, kw_only=True)
class ConfigVersion:
    """One configuration as it ran: when, what it replaced, and how it scored."""

    version: int
    config: dict[str, Any]
    started_at: float
    before_score: float | None
    before_conditions: dict[str, float] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    conditions: list[dict[str, float]] = field(default_factory=list)
    judged: bool = False

    @property
    def score(self) -> float | None:
        """Mean objective score while this version ran (None before any sample)."""
        return math.fsum(self.scores) / len(self.scores) if self.scores else None


class SnapshotStore:
    """Versions, scores and rollback verdicts (see the module docstring)."""

    def __init__(
        self,
        *,
        journal: Journal | None = None,
        window_s: float = 60.0,
        margin: float = 0.25,
        abs_margin: float = 0.1,
        before_samples: int = 3,
        min_samples: int = 3,
        comparable: float = 0.25,
        min_age_s: float = 15.0,
        keep: int = 200,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if margin < 0 or abs_margin < 0:
            raise ValueError(f"margins must be >= 0, got {margin!r}, {abs_margin!r}")
        self.window_s, self.margin, self.abs_margin = window_s, margin, abs_margin
        self.min_samples = min_samples
        self.comparable = comparable
        self.min_age_s = min_age_s
        self.incomparable = 0
        self._recent_conditions: deque[dict[str, float]] = deque(maxlen=before_samples)
        self._journal = journal or NullJournal()
        self._versions: deque[ConfigVersion] = deque(maxlen=keep)
        self._recent: deque[float] = deque(maxlen=before_samples)

    @property
    def versions(self) -> list[ConfigVersion]:
        """Every kept version, oldest first."""
        return list(self._versions)

    @property
    def current(self) -> ConfigVersion | None:
        return self._versions[-1] if self._versions else None

    def save(self, config: Mapping[str, Any], at: float) -> ConfigVersion:
        """Start a new version (the configuration now in force)."""
        before = math.fsum(self._recent) / len(self._recent) if self._recent else None
        before_conditions = _mean_conditions(self._recent_conditions)
        previous = self._versions[-1] if self._versions else None
        if previous is not None and not previous.judged and at - previous.started_at < (
            self.min_age_s
        ):
            # Too young to judge: fold it into this one (see the module docstring).
            previous.judged = True
            before, before_conditions = previous.before_score, previous.before_conditions
        number = previous.version + 1 if previous is not None else 1
        version = ConfigVersion(
            version=number,
            config=dict(config),
            started_at=at,
            before_score=before,
            before_conditions=before_conditions,
        )
        self._versions.append(version)
        self._journal.version(number, config, before)
        return version

    def observe(
        self, score: float, at: float, conditions: Mapping[str, float] | None = None
    ) -> tuple[ConfigVersion, ConfigVersion] | None:
        """Add one objective sample (and the conditions it was taken under); when a change
        failed, return (failed version, version to roll back to)."""
        self._recent.append(score)
        self._recent_conditions.append(dict(conditions or {}))
        if not self._versions:
            return None
        current = self._versions[-1]
        current.scores.append(score)
        current.conditions.append(dict(conditions or {}))
        for version in self._versions:
            if version.judged:
                continue
            superseded = version is not current
            if not superseded and at - version.started_at < self.window_s:
                continue
            version.judged = True
            before, after = version.before_score, version.score
            if before is None or after is None or len(version.scores) < self.min_samples:
                continue
            if not self._comparable(version):
                self.incomparable += 1
                continue
            if after > before * (1 + self.margin) + self.abs_margin:
                target = self._best_before(version)
                if target is not None:
                    return version, target
        return None

    def _comparable(self, version: ConfigVersion) -> bool:
        during = _mean_conditions(version.conditions)
        for name, before in version.before_conditions.items():
            now = during.get(name)
            if now is None:
                continue
            scale = max(abs(before), abs(now), 1e-9)
            if abs(now - before) / scale > self.comparable:
                return False
        return True

    def _best_before(self, failed: ConfigVersion) -> ConfigVersion | None:
        earlier = [v for v in self._versions if v.version < failed.version]
        if not earlier:
            return None
        recent = [
            v
            for v in earlier
            if v.score is not None and failed.started_at - v.started_at <= self.window_s
        ]
        return min(recent, key=lambda v: v.score or math.inf) if recent else earlier[-1]

    def rolled_back(self) -> None:
        """Forget pending verdicts: the versions after a rollback ran under a failed change."""
        for version in self._versions:
            version.judged = True


def _mean_conditions(samples: Iterable[Mapping[str, float]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for sample in samples:
        for name, value in sample.items():
            sums.setdefault(name, []).append(value)
    return {name: math.fsum(vals) / len(vals) for name, vals in sums.items()}
