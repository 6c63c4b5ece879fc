"""Retry policy: exponential backoff with full jitter, Retry-After, non-retryable errors."""

from __future__ import annotations

import random

import pytest

from orchestrator.config import LiveConfig, Tunables
from orchestrator.errors import ProviderError
from orchestrator.resilience.retry import RetryPolicy

RETRYABLE = ProviderError("p", "HTTP 503", status=503, retryable=True)


def _policy(seed: int = 7, **tunables: object) -> RetryPolicy:
    live = LiveConfig(Tunables(**tunables))  # type: ignore[arg-type]
    return _policy_reading(live, seed)


def _policy_reading(live: LiveConfig[Tunables], seed: int) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=lambda: live.current.retry_max_attempts,
        base_delay_s=lambda: live.current.retry_base_delay_s,
        rng=random.Random(seed),
    )


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    """Attempt n waits somewhere in [0, base * 2**(n-1)]."""
    policy = _policy(retry_max_attempts=10, retry_base_delay_s=0.5)
    for attempt in range(1, 6):
        ceiling = 0.5 * 2 ** (attempt - 1)
        delays = [policy.backoff_s(attempt, RETRYABLE) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling * 0.8


def test_same_seed_gives_the_same_delays() -> None:
    """The jitter comes from the injected RNG only."""
    a = [_policy(seed=3).backoff_s(1, RETRYABLE) for _ in range(3)]
    b = [_policy(seed=3).backoff_s(1, RETRYABLE) for _ in range(3)]
    assert a == b


def test_non_retryable_errors_are_never_retried() -> None:
    """A 400 gets no retry, whatever the attempt."""
    error = ProviderError("p", "bad request", status=400, retryable=False)
    assert _policy().backoff_s(1, error) is None


def test_unknown_exceptions_are_not_retried() -> None:
    """Only ProviderErrors that say so are retryable."""
    assert _policy().backoff_s(1, RuntimeError("bug")) is None


def test_stops_after_max_attempts() -> None:
    """With 3 attempts, failures 1 and 2 retry and failure 3 stops."""
    policy = _policy(retry_max_attempts=3)
    assert policy.backoff_s(2, RETRYABLE) is not None
    assert policy.backoff_s(3, RETRYABLE) is None


def test_retry_after_is_a_floor() -> None:
    """The provider's Retry-After hint is waited for at least."""
    error = ProviderError("p", "slow down", status=429, retryable=True, retry_after_s=7.0)
    assert _policy(retry_base_delay_s=0.1).backoff_s(1, error) == pytest.approx(7.0)


def test_attempts_and_base_delay_are_read_live() -> None:
    """Live changes to attempts and base delay apply to the next decision."""
    live = LiveConfig()
    policy = _policy_reading(live, 1)
    live.set(retry_max_attempts=1)
    assert policy.backoff_s(1, RETRYABLE) is None
    live.set(retry_max_attempts=5, retry_base_delay_s=0.0)
    assert policy.backoff_s(1, RETRYABLE) == 0.0
