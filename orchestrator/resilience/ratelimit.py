"""Token-bucket rate limits per provider: requests per second and tokens per minute, and the
pause a provider's 429 (with its Retry-After) asks for."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "TokenBucket"]


class TokenBucket:
    """A bucket refilled at `rate_per_s` up to `capacity`; `try_take` never blocks.

    The bucket may go negative through `debit` (work found to cost more after the fact);
    it then refuses until refilled above zero.
    """

    __slots__ = ("_clock", "_level", "_stamp", "capacity", "rate_per_s")

    def __init__(
        self, *, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s!r}")
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        self.rate_per_s, self.capacity, self._clock = rate_per_s, capacity, clock
        self._level = capacity
        self._stamp = clock()

    def reconfigure(self, *, rate_per_s: float, capacity: float) -> None:
        """Change rate and size, keeping the tokens already earned (clipped to the new size)."""
        self._refill(self._clock())
        self.rate_per_s, self.capacity = rate_per_s, capacity
        self._level = min(self._level, capacity)

    def try_take(self, amount: float = 1.0, now: float | None = None) -> float:
        """Take `amount` and return 0.0, or take nothing and return the seconds until it fits.

        An `amount` larger than the bucket is allowed once the bucket is full. `now` saves a
        clock read when the caller has one.
        """
        self._refill(self._clock() if now is None else now)
        need = amount if amount < self.capacity else self.capacity
        # A caller that slept exactly the wait we returned must get its token: rounding can
        # leave the level a hair short, and a wait of 1e-17 s would not move a clock at all.
        if self._level >= need - 1e-9:
            self._level -= amount
            return 0.0
        return (need - self._level) / self.rate_per_s

    def debit(self, amount: float) -> None:
        """Remove `amount` unconditionally."""
        self._refill(self._clock())
        self._level -= amount

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            level = self._level + elapsed * self.rate_per_s
            self._level = level if level < self.capacity else self.capacity
        self._stamp = now


class RateLimiter:
    """One provider's limits, read at each use from the readers `rps()` (requests/s, burst of
    one second) and `tokens_per_min()` (burst of one minute). None means unlimited."""

    __slots__ = ("_clock", "_paused_until", "_requests", "_rps", "_tokens", "_tpm", "name")

    def __init__(
        self,
        name: str,
        *,
        rps: Callable[[], float | None] = lambda: None,
        tokens_per_min: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._rps = rps
        self._tpm = tokens_per_min
        self._clock = clock
        self._requests: TokenBucket | None = None
        self._tokens: TokenBucket | None = None
        self._paused_until = -math.inf

    def pause(self, seconds: float) -> None:
        """Admit nothing for `seconds` (the provider answered 429 with this Retry-After)."""
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused_s(self) -> float:
        """Seconds left of a pause (0.0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    def try_acquire(self, tokens: int = 0) -> float:
        """Admit one request estimated at `tokens` input tokens: 0.0, or seconds to wait
        (the rest of a pause, else what the buckets need to refill)."""
        if self._paused_until > -math.inf:
            paused_s = self._paused_until - self._clock()
            if paused_s > 0:
                return paused_s
            self._paused_until = -math.inf
        rps, tpm = self._rps(), self._tpm()
        if rps is None and tpm is None:
            return 0.0
        now = self._clock()
        token_bucket = None
        if tpm is not None and tokens > 0:
            token_bucket = self._tokens
            if token_bucket is None or token_bucket.rate_per_s != tpm / 60.0:
                token_bucket = self._tokens = self._bucket(self._tokens, tpm / 60.0, 60.0)
            wait_s = token_bucket.try_take(tokens, now)
            if wait_s > 0:
                return wait_s
        if rps is not None:
            requests = self._requests
            if requests is None or requests.rate_per_s != rps:
                requests = self._requests = self._bucket(self._requests, rps, 1.0)
            wait_s = requests.try_take(1.0, now)
            if wait_s > 0:
                if token_bucket is not None:
                    token_bucket.debit(-tokens)  # give the tokens back
                return wait_s
        return 0.0

    def debit_tokens(self, tokens: int) -> None:
        """Charge tokens learnt after the call (the output) to the tokens/min bucket."""
        if self._tokens is not None and self._tpm() is not None:
            self._tokens.debit(tokens)

    def _bucket(self, bucket: TokenBucket | None, rate_per_s: float, burst_s: float) -> TokenBucket:
        capacity = max(1.0, rate_per_s * burst_s)
        if bucket is None:
            return TokenBucket(rate_per_s=rate_per_s, capacity=capacity, clock=self._clock)
        bucket.reconfigure(rate_per_s=rate_per_s, capacity=capacity)
        return bucket
