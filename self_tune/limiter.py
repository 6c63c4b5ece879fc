"""Concurrency limiters in the manner of Netflix's concurrency-limits: AIMD and gradient.

Where PID is the wrong tool — the right concurrency is not a setpoint on one measured signal
but the largest limit the upstream tolerates — a limiter probes for it from round-trip times
and drops. Both take one sample per completed call (or per control interval) through
`update(rtt_s, inflight=..., dropped=...)` and return the new limit.
"""

from __future__ import annotations

import math

__all__ = ["AIMDLimiter", "GradientLimiter"]


def _check_limits(initial: float, minimum: float, maximum: float) -> None:
    for name, value in (("initial_limit", initial), ("min_limit", minimum), ("max_limit", maximum)):
        if not math.isfinite(value) or value < 1:
            raise ValueError(f"{name} must be a finite number >= 1, got {value!r}")
    if not minimum <= initial <= maximum:
        raise ValueError(
            f"initial_limit must be within [min_limit, max_limit] = [{minimum}, {maximum}], "
            f"got {initial!r}"
        )


def _check_sample(rtt_s: float, inflight: int) -> None:
    if not math.isfinite(rtt_s) or rtt_s < 0:
        raise ValueError(f"rtt_s must be a finite number >= 0, got {rtt_s!r}")
    if inflight < 0:
        raise ValueError(f"inflight must be >= 0, got {inflight!r}")


class AIMDLimiter:
    """Additive increase, multiplicative decrease (Netflix `AIMDLimit`).

    A drop (a 429, a timeout, an RTT past `timeout_s`) multiplies the limit by `backoff_ratio`;
    a good sample while the limit is in use (`inflight * 2 >= limit`) adds `increase_by`.
    """

    __slots__ = ("_limit", "backoff_ratio", "increase_by", "max_limit", "min_limit", "timeout_s")

    def __init__(
        self,
        *,
        initial_limit: float = 20,
        min_limit: float = 1,
        max_limit: float = 1000,
        backoff_ratio: float = 0.9,
        increase_by: float = 1.0,
        timeout_s: float = math.inf,
    ) -> None:
        _check_limits(initial_limit, min_limit, max_limit)
        if not 0.5 <= backoff_ratio < 1:
            raise ValueError(f"backoff_ratio must be in [0.5, 1), got {backoff_ratio!r}")
        if not increase_by > 0:
            raise ValueError(f"increase_by must be > 0, got {increase_by!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.min_limit, self.max_limit = float(min_limit), float(max_limit)
        self.backoff_ratio, self.increase_by, self.timeout_s = backoff_ratio, increase_by, timeout_s
        self._limit = float(initial_limit)

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return max(1, int(self._limit))

    def set_limit(self, limit: float) -> None:
        """Adopt a limit set from outside (a controller's clamp, a person), within bounds."""
        self._limit = min(self.max_limit, max(self.min_limit, float(limit)))

    def reset(self, initial_limit: float | None = None) -> None:
        """Start again from `initial_limit` (default: the minimum)."""
        start = self.min_limit if initial_limit is None else initial_limit
        self._limit = min(self.max_limit, max(self.min_limit, float(start)))

    def update(self, rtt_s: float, *, inflight: int, dropped: bool = False) -> int:
        """One sample: back off on a drop or slow call, grow while the limit is used."""
        _check_sample(rtt_s, inflight)
        if dropped or rtt_s > self.timeout_s:
            self._limit = max(self.min_limit, self._limit * self.backoff_ratio)
        elif inflight * 2 >= self._limit:
            self._limit = min(self.max_limit, self._limit + self.increase_by)
        return self.limit


class GradientLimiter:
    """A gradient limiter (Netflix `Gradient2Limit`).

    Compares a long-term RTT average (the no-load latency) with the short-term one: while they
    match, the limit grows by a queue allowance of ``sqrt(limit)``; when queueing inflates the
    short RTT, ``gradient = tolerance · long / short`` (clamped to [0.5, 1]) shrinks it.
    `smoothing` damps each step; a drop counts as a sample at the long RTT × 2.
    """

    __slots__ = (
        "_limit",
        "_long_rtt",
        "_long_window",
        "_samples",
        "max_limit",
        "min_limit",
        "smoothing",
        "tolerance",
    )

    def __init__(
        self,
        *,
        initial_limit: float = 20,
        min_limit: float = 1,
        max_limit: float = 1000,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
    ) -> None:
        _check_limits(initial_limit, min_limit, max_limit)
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if not tolerance >= 1:
            raise ValueError(f"tolerance must be >= 1, got {tolerance!r}")
        if long_window < 1:
            raise ValueError(f"long_window must be >= 1, got {long_window!r}")
        self.min_limit, self.max_limit = float(min_limit), float(max_limit)
        self.smoothing, self.tolerance, self._long_window = smoothing, tolerance, long_window
        self._limit = float(initial_limit)
        self._long_rtt = 0.0
        self._samples = 0

    @property
    def limit(self) -> int:
        """The current concurrency limit."""
        return max(1, int(self._limit))

    @property
    def long_rtt_s(self) -> float:
        """The long-term RTT average (0.0 before any sample)."""
        return self._long_rtt

    def set_limit(self, limit: float) -> None:
        """Adopt a limit set from outside (a controller's clamp, a person), within bounds."""
        self._limit = min(self.max_limit, max(self.min_limit, float(limit)))

    def reset(self, initial_limit: float | None = None) -> None:
        """Forget the RTT history and start again from `initial_limit` (default: the minimum)."""
        start = self.min_limit if initial_limit is None else initial_limit
        self._limit = min(self.max_limit, max(self.min_limit, float(start)))
        self._long_rtt = 0.0
        self._samples = 0

    def update(self, rtt_s: float, *, inflight: int, dropped: bool = False) -> int:
        """One sample of the short-term RTT (seconds); returns the new limit."""
        _check_sample(rtt_s, inflight)
        if dropped and self._long_rtt > 0:
            rtt_s = max(rtt_s, 2 * self._long_rtt)
        if rtt_s <= 0:
            return self.limit
        self._samples += 1
        n = min(self._samples, self._long_window)
        self._long_rtt += (rtt_s - self._long_rtt) / n
        # A long RTT far above the short one means the no-load latency fell: let it follow.
        if self._long_rtt / rtt_s > 2:
            self._long_rtt *= 0.95
        # Application-limited: the limit is not what holds traffic back, so leave it alone.
        if inflight < self._limit / 2:
            return self.limit
        gradient = max(0.5, min(1.0, self.tolerance * self._long_rtt / rtt_s))
        new_limit = self._limit * gradient + math.sqrt(self._limit)
        new_limit = self._limit * (1 - self.smoothing) + new_limit * self.smoothing
        self._limit = min(self.max_limit, max(self.min_limit, new_limit))
        return self.limit
