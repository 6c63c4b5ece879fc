"""`SloDetector`: an absolute objective (p95 latency, error rate) — Critical when breached.

Statistics learn what is normal, so a system that has been slow for an hour looks normal to
them. An objective does not learn: a value above `limit` is a `Critical` anomaly whatever the
baseline. It follows the detectors' contract so a monitor can hold it beside them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from self_tune.detectors._checks import check_finite
from self_tune.detectors.anomaly import Anomaly, DetectorKind, Severity

__all__ = ["SloDetector"]


class SloDetector:
    """`value > limit` is a Critical anomaly; `score` is value / limit (or the excess at 0)."""

    __slots__ = ("_alarm", "_clock", "_n_seen", "limit", "metric")

    def __init__(
        self, *, metric: str, limit: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.metric = metric
        self.limit = check_finite("limit", limit)
        self._clock = clock
        self._alarm = False
        self._n_seen = 0

    @property
    def alarm(self) -> bool:
        """Whether the most recent value breached the objective."""
        return self._alarm

    @property
    def n_seen(self) -> int:
        """How many values `update` has been given since the last reset."""
        return self._n_seen

    def reset(self) -> None:
        """Clear the alarm; an objective has nothing to forget."""
        self._alarm = False
        self._n_seen = 0

    def update(self, x: float, *, at: float | None = None) -> Anomaly | None:
        """Return a Critical `Anomaly` when `x` exceeds the limit, else None."""
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"{self.metric}: value must be finite, got {x!r}")
        self._n_seen += 1
        self._alarm = x > self.limit
        if not self._alarm:
            return None
        score = x / self.limit if self.limit > 0 else x - self.limit
        return Anomaly(
            metric=self.metric,
            value=x,
            baseline=self.limit,
            score=score,
            severity=Severity.CRITICAL,
            time=self._clock() if at is None else at,
            detector=DetectorKind.SLO,
        )
