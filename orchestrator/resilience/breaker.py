"""Circuit breaker: one per provider, so a dead provider is skipped instead of hammered."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from orchestrator.errors import CircuitOpen

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    """closed: calls flow; open: calls refused; half_open: a few probe calls decide."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after `breaker_failure_threshold` consecutive failures (timeouts included).

    While open, `allow()` raises `CircuitOpen`. After `breaker_open_s` it turns half-open and
    admits up to `probe_count` probe calls; once their outcomes show at least
    `close_success_ratio` successes it closes, and as soon as that ratio is out of reach it opens
    again. `failure_threshold()` and `open_s()` are readers, called at each use, so live changes
    apply at once.
    """

    __slots__ = (
        "_clock",
        "_close_success_ratio",
        "_failure_threshold",
        "_failures",
        "_open_s",
        "_opened_at",
        "_probe_count",
        "_probe_failures",
        "_probe_successes",
        "_probes_admitted",
        "_state",
        "name",
        "opened_total",
    )

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: Callable[[], int] = lambda: 5,
        open_s: Callable[[], float] = lambda: 60.0,
        probe_count: int = 5,
        close_success_ratio: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if probe_count < 1:
            raise ValueError(f"probe_count must be >= 1, got {probe_count!r}")
        if not 0 < close_success_ratio <= 1:
            raise ValueError(f"close_success_ratio must be in (0, 1], got {close_success_ratio!r}")
        self.name = name
        self._failure_threshold = failure_threshold
        self._open_s = open_s
        self._probe_count = probe_count
        self._close_success_ratio = close_success_ratio
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes_admitted = self._probe_successes = self._probe_failures = 0
        self.opened_total = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose time is up reports half_open)."""
        if self._state is BreakerState.OPEN and self._retry_in_s() <= 0:
            self._half_open()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow(self) -> None:
        """Admit one call or raise `CircuitOpen`; every admitted call must be settled with
        `record_success`, `record_failure` or `release`."""
        state = self._state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.OPEN:
            retry_in_s = self._retry_in_s()
            if retry_in_s > 0:
                raise CircuitOpen(self.name, retry_in_s)
            self._half_open()
        if self._probes_admitted >= self._probe_count:
            raise CircuitOpen(self.name, 0.0)
        self._probes_admitted += 1

    def record_success(self) -> None:
        """The provider answered."""
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            self._settle_probes()

    def record_failure(self) -> None:
        """The provider failed in a way that says it is unhealthy (5xx, timeout, ...; a 429 is
        backpressure and is recorded as a success by the inference stage)."""
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._failure_threshold():
                self._open()
        elif self._state is BreakerState.HALF_OPEN:
            self._probe_failures += 1
            self._settle_probes()

    def release(self) -> None:
        """An admitted call ended without telling anything about health (e.g. cancelled)."""
        if self._state is BreakerState.HALF_OPEN and self._probes_admitted > 0:
            self._probes_admitted -= 1

    def _settle_probes(self) -> None:
        needed = self._probe_count * self._close_success_ratio
        if self._probe_successes >= needed - 1e-9:
            self._state = BreakerState.CLOSED
            self._failures = 0
        elif self._probe_count - self._probe_failures < needed - 1e-9:
            self._open()

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self.opened_total += 1

    def _half_open(self) -> None:
        self._state = BreakerState.HALF_OPEN
        self._probes_admitted = self._probe_successes = self._probe_failures = 0

    def _retry_in_s(self) -> float:
        return self._opened_at + self._open_s() - self._clock()
