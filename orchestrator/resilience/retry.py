"""Retry decisions: exponential backoff with full jitter, honouring Retry-After."""

from __future__ import annotations

import random
from collections.abc import Callable

from orchestrator.errors import ProviderError

__all__ = ["RetryPolicy"]


class RetryPolicy:
    """Decides whether and when to try again after a failed attempt.

    Attempt `n` (1-based) failing retryably waits a uniform random time in
    `[0, min(max_delay_s, retry_base_delay_s * 2**(n-1))]` (full jitter), but never less than the
    provider's `retry_after_s`. Non-retryable errors and the last of `retry_max_attempts`
    attempts get None. `max_attempts()` and `base_delay_s()` are readers, called at each decision.
    """

    __slots__ = ("_base_delay_s", "_max_attempts", "_max_delay_s", "_rng")

    def __init__(
        self,
        *,
        rng: random.Random,
        max_attempts: Callable[[], int] = lambda: 3,
        base_delay_s: Callable[[], float] = lambda: 0.5,
        max_delay_s: float = 30.0,
    ) -> None:
        if max_delay_s <= 0:
            raise ValueError(f"max_delay_s must be > 0, got {max_delay_s!r}")
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._rng = rng
        self._max_delay_s = max_delay_s

    @property
    def max_attempts(self) -> int:
        return self._max_attempts()

    def backoff_s(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to stop trying."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt!r}")
        if not isinstance(error, ProviderError) or not error.retryable:
            return None
        if attempt >= self._max_attempts():
            return None
        ceiling_s = min(self._max_delay_s, self._base_delay_s() * 2 ** (attempt - 1))
        delay_s = self._rng.uniform(0.0, ceiling_s)
        if error.retry_after_s is not None:
            delay_s = max(delay_s, error.retry_after_s)
        return delay_s
