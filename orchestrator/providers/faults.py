"""`FaultSchedule`: injected upstream failures, for rehearsing what the system does when its
provider degrades (the echo provider takes one: `ECHO_FAULTS`).

A schedule is a list of phases, each starting after a number of calls or seconds and failing
a share of the calls from then on:

    ECHO_FAULTS="20s:0.3"            from 20 s after start, 30% of calls fail
    ECHO_FAULTS="100:0.5, 300:0"     calls 101-300 fail half the time, then all succeed again

One schedule counts either calls or seconds, not both.

Failures are spread evenly rather than drawn at random (call n of a phase fails when
floor(n·rate) grows), so a rehearsal is the same every time and a 30% phase fails exactly 3
calls in 10. A failure is a retryable `ProviderError` with status 503, as an overloaded
upstream gives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import ProviderError

__all__ = ["FaultPhase", "FaultSchedule"]


@dataclass(frozen=True, slots=True)
class FaultPhase:
    """From `start` (calls, or seconds when `in_seconds`) on, fail `rate` of the calls."""

    start: float
    rate: float
    in_seconds: bool


class FaultSchedule:
    """Decides, call by call, whether an injected fault answers instead of the provider.

    `clock` is monotonic seconds (time-based phases count from construction).
    """

    def __init__(self, phases: tuple[FaultPhase, ...],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len({p.in_seconds for p in phases}) > 1:
            raise ValueError("a fault schedule counts either calls or seconds, not both")
        self.phases = tuple(sorted(phases, key=lambda p: p.start))
        self.in_seconds = bool(phases) and phases[0].in_seconds
        self._clock = clock
        self._started = clock()
        self._calls = 0
        self._phase: FaultPhase | None = None
        self._in_phase = 0
        self.injected = 0

    @classmethod
    def parse(cls, text: str, clock: Callable[[], float] = time.monotonic) -> FaultSchedule:
        """Read `AFTER:RATE[, AFTER:RATE…]`; AFTER is a call count or seconds with `s`.

        Raises ValueError naming the phase at fault.
        """
        phases = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            after, sep, rate_text = part.partition(":")
            in_seconds = after.strip().endswith("s")
            try:
                start = float(after.strip().removesuffix("s")) if sep else math.nan
                rate = float(rate_text)
            except ValueError:
                start = rate = math.nan
            if not (math.isfinite(start) and start >= 0 and math.isfinite(rate)
                    and 0 <= rate <= 1):
                raise ValueError(
                    f"fault phase {part!r}: expected AFTER:RATE, AFTER a number of calls or "
                    f"seconds (e.g. 20s) and RATE between 0 and 1")
            phases.append(FaultPhase(start=start, rate=rate, in_seconds=in_seconds))
        if not phases:
            raise ValueError("a fault schedule needs at least one AFTER:RATE phase")
        return cls(tuple(phases), clock)

    def check(self, provider: str) -> None:
        """Count one call; raise the injected fault if this call is one that fails."""
        self._calls += 1
        phase = self._current()
        if phase is not self._phase:
            self._phase, self._in_phase = phase, 0
        if phase is None or phase.rate == 0:
            return
        self._in_phase += 1
        n = self._in_phase
        if math.floor(n * phase.rate) > math.floor((n - 1) * phase.rate):
            self.injected += 1
            raise ProviderError(provider, "injected fault (fault schedule)", retryable=True,
                                status=503)

    def _current(self) -> FaultPhase | None:
        """The latest phase that has begun (phases are sorted by their start)."""
        reached = self._clock() - self._started if self.in_seconds else self._calls
        begun = [p for p in self.phases if (reached >= p.start if self.in_seconds
                                             else reached > p.start)]
        return begun[-1] if begun else None
