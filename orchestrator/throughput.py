"""The recent throughput history: finished requests per second, bucket by bucket.

`ThroughputHistory` is a fixed ring of `horizon_s / bucket_s` complete buckets (and the one
filling). The pipeline records every finished request (answered or failed, as
`throughput_rps` counts them) on its own clock, so the history is measured from real traffic
and is there for whoever asks first: a dashboard opened after ten minutes of traffic draws
those ten minutes at once. Buckets no request fell into count as zero; the bucket still
filling is left out (its rate is not known yet).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ThroughputHistory"]


class ThroughputHistory:
    """Finished requests per second over the last `horizon_s` seconds, in `bucket_s` buckets.

    `clock` gives the times `record` and `points` use when not told (monotonic seconds: the
    pipeline's clock, the one its snapshots' `taken_at_s` are on). Memory is bounded by the
    number of buckets whatever the traffic. Raises ValueError for a non-positive `bucket_s`
    or a `horizon_s` shorter than one bucket.
    """

    __slots__ = ("_buckets", "_clock", "_counts", "_slots", "_started_at_s", "bucket_s",
                 "horizon_s")

    def __init__(
        self,
        *,
        bucket_s: float = 5.0,
        horizon_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not bucket_s > 0:
            raise ValueError(f"bucket_s must be > 0, got {bucket_s!r}")
        if not horizon_s >= bucket_s:
            raise ValueError(f"horizon_s must be >= bucket_s ({bucket_s!r}), got {horizon_s!r}")
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self._clock = clock
        # One slot more than the horizon holds: the bucket still filling has its own.
        self._slots = math.ceil(horizon_s / bucket_s - 1e-9) + 1
        self._counts = [0] * self._slots
        self._buckets = [-1] * self._slots  # the bucket number each slot counts now
        self._started_at_s = clock()

    def record(self, now: float | None = None, n: int = 1) -> None:
        """Count `n` requests that finished at `now` (default: the clock's now)."""
        at = self._clock() if now is None else now
        bucket = math.floor(at / self.bucket_s)
        slot = bucket % self._slots
        if self._buckets[slot] != bucket:
            if bucket < self._buckets[slot]:
                return  # older than the horizon the slot now covers
            self._buckets[slot] = bucket
            self._counts[slot] = 0
        self._counts[slot] += n

    def points(self, now: float | None = None) -> list[tuple[float, float]]:
        """`(end_s, rps)` for each complete bucket within the horizon, oldest first.

        `end_s` is when the bucket ended (on the clock); a bucket the history began in
        part-way through is divided by the part it covered. Empty buckets give 0.0.
        """
        at = self._clock() if now is None else now
        current = math.floor(at / self.bucket_s)
        first = max(current - self._slots + 1, math.floor(self._started_at_s / self.bucket_s))
        out = []
        for bucket in range(first, current):
            slot = bucket % self._slots
            count = self._counts[slot] if self._buckets[slot] == bucket else 0
            end_s = (bucket + 1) * self.bucket_s
            span_s = min(self.bucket_s, end_s - self._started_at_s)
            if span_s <= 0:
                continue
            out.append((end_s, count / span_s))
        return out

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready: `bucket_s`, `horizon_s` and `points` as `[end_s, rps]` pairs."""
        return {
            "bucket_s": self.bucket_s,
            "horizon_s": self.horizon_s,
            "points": [[t, rps] for t, rps in self.points(now)],
        }
