"""Circuit breaker: opens on failures, probes when half-open, closes at 80% probe success."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from orchestrator.config import LiveConfig
from orchestrator.errors import CircuitOpen
from orchestrator.resilience.breaker import BreakerState, CircuitBreaker


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.allow()
        breaker.record_failure()


def test_opens_after_five_consecutive_failures(clock: FakeClock) -> None:
    """Four failures leave it closed; the fifth opens it and calls are refused."""
    breaker = CircuitBreaker("p", clock=clock)
    _fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.allow()
    assert info.value.provider == "p"
    assert info.value.retry_in_s == pytest.approx(60.0)


def test_a_success_resets_the_failure_count(clock: FakeClock) -> None:
    """Failures must be consecutive to open the breaker."""
    breaker = CircuitBreaker("p", clock=clock)
    _fail(breaker, 4)
    breaker.allow()
    breaker.record_success()
    _fail(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_turns_half_open_after_the_open_duration(clock: FakeClock) -> None:
    """After 60 s open, the breaker admits probe calls."""
    breaker = CircuitBreaker("p", clock=clock)
    _fail(breaker, 5)
    clock.advance(59.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.allow()


def test_half_open_admits_only_the_probe_count(clock: FakeClock) -> None:
    """While half-open, at most `probe_count` calls are let through at once."""
    breaker = CircuitBreaker("p", clock=clock, probe_count=5)
    _fail(breaker, 5)
    clock.advance(60)
    for _ in range(5):
        breaker.allow()
    with pytest.raises(CircuitOpen):
        breaker.allow()


def test_closes_when_eighty_percent_of_probes_succeed(clock: FakeClock) -> None:
    """Four successes out of five probes close the breaker."""
    breaker = CircuitBreaker("p", clock=clock)
    _fail(breaker, 5)
    clock.advance(60)
    breaker.allow()
    breaker.record_failure()
    for _ in range(4):
        breaker.allow()
        breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_reopens_once_eighty_percent_is_out_of_reach(clock: FakeClock) -> None:
    """Two failed probes out of five reopen the breaker for another open period."""
    breaker = CircuitBreaker("p", clock=clock)
    _fail(breaker, 5)
    clock.advance(60)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_total == 2


def test_released_probe_frees_its_slot(clock: FakeClock) -> None:
    """A probe that ends without a verdict (cancelled) gives its slot back."""
    breaker = CircuitBreaker("p", clock=clock, probe_count=1)
    _fail(breaker, 5)
    clock.advance(60)
    breaker.allow()
    breaker.release()
    breaker.allow()


def test_threshold_and_open_time_are_read_live(clock: FakeClock) -> None:
    """Changing the live threshold and open time changes the breaker's behaviour at once."""
    live = LiveConfig()
    breaker = CircuitBreaker(
        "p",
        failure_threshold=lambda: live.current.breaker_failure_threshold,
        open_s=lambda: live.current.breaker_open_s,
        clock=clock,
    )
    live.set(breaker_failure_threshold=2, breaker_open_s=5.0)
    _fail(breaker, 2)
    assert breaker.state is BreakerState.OPEN
    clock.advance(5)
    assert breaker.state is BreakerState.HALF_OPEN


def test_constructor_validates_probe_settings() -> None:
    """Bad probe settings raise ValueError naming the parameter."""
    with pytest.raises(ValueError, match="probe_count"):
        CircuitBreaker("p", probe_count=0)
    with pytest.raises(ValueError, match="close_success_ratio"):
        CircuitBreaker("p", close_success_ratio=1.5)
