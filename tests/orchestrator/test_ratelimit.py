"""Token buckets per provider: requests/s and tokens/min, driven by a fake clock."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from orchestrator.config import LiveConfig, Tunables
from orchestrator.resilience.ratelimit import RateLimiter, TokenBucket


def test_bucket_allows_a_burst_then_refuses_with_the_wait(clock: FakeClock) -> None:
    """A full bucket of 2 admits two, then says how long until the next token."""
    bucket = TokenBucket(rate_per_s=2.0, capacity=2.0, clock=clock)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == 0.0
    assert bucket.try_take() == pytest.approx(0.5)


def test_bucket_refills_with_time(clock: FakeClock) -> None:
    """Tokens come back at the configured rate."""
    bucket = TokenBucket(rate_per_s=2.0, capacity=2.0, clock=clock)
    bucket.try_take(2.0)
    clock.advance(0.5)
    assert bucket.try_take() == 0.0
    assert bucket.try_take() > 0


def test_bucket_validates_its_arguments() -> None:
    """Rate and capacity must be positive."""
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(rate_per_s=0, capacity=1)
    with pytest.raises(ValueError, match="capacity"):
        TokenBucket(rate_per_s=1, capacity=0)


def test_unlimited_by_default(clock: FakeClock) -> None:
    """With no limits configured every request is admitted."""
    limiter = RateLimiter("p", clock=clock)
    assert all(limiter.try_acquire(10_000) == 0.0 for _ in range(1000))


def test_requests_per_second_limit(clock: FakeClock) -> None:
    """At 10 req/s, ten pass in a second and the eleventh waits."""
    limiter = _limiter(LiveConfig(Tunables(rate_limit_rps=10.0)), clock)
    assert [limiter.try_acquire() for _ in range(10)] == [0.0] * 10
    assert limiter.try_acquire() == pytest.approx(0.1)
    clock.advance(0.1)
    assert limiter.try_acquire() == 0.0


def test_tokens_per_minute_limit(clock: FakeClock) -> None:
    """At 6,000 tokens/min, a 5,000 and a 1,000 pass, then more waits for refill."""
    live = LiveConfig(Tunables(rate_limit_tokens_per_min=6000.0))
    limiter = _limiter(live, clock)
    assert limiter.try_acquire(5000) == 0.0
    assert limiter.try_acquire(1000) == 0.0
    assert limiter.try_acquire(100) == pytest.approx(1.0)


def test_output_tokens_are_debited_after_the_call(clock: FakeClock) -> None:
    """Output tokens learnt afterwards count against the tokens/min budget."""
    live = LiveConfig(Tunables(rate_limit_tokens_per_min=600.0))
    limiter = _limiter(live, clock)
    assert limiter.try_acquire(100) == 0.0
    limiter.debit_tokens(500)
    assert limiter.try_acquire(100) > 0


def test_a_refused_request_keeps_its_tokens(clock: FakeClock) -> None:
    """When the request bucket refuses, the token bucket is not charged."""
    live = LiveConfig(Tunables(rate_limit_rps=1.0, rate_limit_tokens_per_min=120.0))
    limiter = _limiter(live, clock)
    assert limiter.try_acquire(60) == 0.0
    assert limiter.try_acquire(60) > 0
    clock.advance(1.0)
    assert limiter.try_acquire(60) == 0.0


def test_rate_is_read_live(clock: FakeClock) -> None:
    """Raising the live rate lets more through at once; removing it lifts the limit."""
    live = LiveConfig(Tunables(rate_limit_rps=1.0))
    limiter = _limiter(live, clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() > 0
    live.set(rate_limit_rps=None)
    assert limiter.try_acquire() == 0.0


def _limiter(live: LiveConfig[Tunables], clock: FakeClock) -> RateLimiter:
    return RateLimiter(
        "p",
        rps=lambda: live.current.rate_limit_rps,
        tokens_per_min=lambda: live.current.rate_limit_tokens_per_min,
        clock=clock,
    )


def test_a_pause_admits_nothing_until_it_ends() -> None:
    """`pause(2)` (a 429's Retry-After) makes `try_acquire` answer the time left, then admit."""
    clock = FakeClock()
    limiter = RateLimiter("p", clock=clock)
    limiter.pause(2.0)
    assert limiter.try_acquire() == pytest.approx(2.0)
    clock.advance(1.5)
    assert limiter.paused_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.try_acquire() == 0.0
