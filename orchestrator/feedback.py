"""`FeedbackLog`: verdicts on answers, each attributed by request id to what produced it.

    pipeline.feedback.record("req_1", score=-1.0, comment="wrong file")   # POST /v1/feedback
    pipeline.feedback.get("req_1").provider                               # "anthropic"
    pipeline.feedback.record("req_2", score=-1.0, stale=True)   # a cached answer out of date

The pipeline tells the log about every answer it gives (`answered`), so a score that arrives
later is attributed to the provider and model that produced that answer. Listeners
(`subscribe`) get every `Feedback` as it is recorded: a learner (the learned router's
feedback collector) plugs in there. Both the answers remembered and the feedback kept are
bounded (the oldest go first).

A client can say an answer was stale (`stale=True`: true once, out of date now). Against the
answers served from a cache (exact or semantic store) within the last `stale_window_s`, the
share reported stale is `stale_rate`: the signal the self-tuner's cache TTL law reads
(`feedback.stale_rate` in the telemetry). It is None until a verdict, stale or not, arrived
on one of those answers: silence says nothing about staleness.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.request import InferenceResponse

__all__ = ["Feedback", "FeedbackListener", "FeedbackLog"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    """A verdict on one answer: `score` from -1 (bad) to 1 (good), an optional comment, and
    the provider and model that produced the answer (None when it is not remembered: an
    unknown or long-gone request id). `stale`: the client said the answer was out of date."""

    request_id: str
    score: float
    comment: str | None = None
    provider: str | None = None
    model: str | None = None
    cached: bool = False
    stale: bool = False


FeedbackListener = Callable[[Feedback], None]


# Who produced an answer: (provider, model, cached, from_cache). `cached`: no upstream call
# made it for this caller (a cache hit, or coalesced); `from_cache`: served from a cache (exact
# or semantic store), so the TTL decided. A plain tuple of strings and booleans, which Python's
# cyclic GC stops tracking: the log holds `max_entries` of them, which every full collection
# would walk otherwise (see `MemoryCache`).
_Producer = tuple[str, str, bool, bool]


class FeedbackLog:
    """The producers of the last `max_entries` answers and the feedback on them, by request
    id (a newer feedback for the same id replaces the older). `received_total` counts every
    feedback ever recorded; `attributed_total` those whose answer was remembered;
    `stale_total` those that said stale; `cache_served_total` the answers served from a
    cache. `stale_window_s` (on `clock`, seconds) is how far back `stale_rate` looks."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        stale_window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        if not stale_window_s > 0:
            raise ValueError(f"stale_window_s must be > 0, got {stale_window_s!r}")
        self.max_entries = max_entries
        self.stale_window_s = stale_window_s
        self._clock = clock
        self._answers: OrderedDict[str, _Producer] = OrderedDict()
        self._entries: OrderedDict[str, Feedback] = OrderedDict()
        self._listeners: list[FeedbackListener] = []
        self.received_total = 0
        self.attributed_total = 0
        self.stale_total = 0
        self.cache_served_total = 0
        # The cache-served answers of the window, oldest first, and which of them got a
        # verdict and which were said stale (by request id; a newer verdict replaces).
        self._served: deque[tuple[float, str]] = deque()
        self._in_window: dict[str, int] = {}
        self._judged: set[str] = set()
        self._stale: set[str] = set()

    def answered(self, response: InferenceResponse) -> None:
        """Remember who produced the answer to `response.request_id`."""
        producer: _Producer = (
            response.provider,
            response.model,
            response.cached or response.deduped,
            response.cached,
        )
        _put(self._answers, response.request_id, producer, self.max_entries)
        if response.cached:
            self.cache_served_total += 1
            self._expire()
            self._served.append((self._clock(), response.request_id))
            ids = self._in_window
            ids[response.request_id] = ids.get(response.request_id, 0) + 1

    @property
    def stale_rate(self) -> float | None:
        """The share of the answers served from a cache in the last `stale_window_s` that a
        client said were stale; None while no verdict arrived on any of them."""
        self._expire()
        if not self._judged:
            return None
        return len(self._stale) / len(self._served)

    def status(self) -> dict[str, float | int]:
        """JSON-ready counts (`received_total`, `attributed_total`, `stale_total`,
        `cache_served_total`) and, once known, `stale_rate`."""
        data: dict[str, float | int] = {
            "received_total": self.received_total,
            "attributed_total": self.attributed_total,
            "stale_total": self.stale_total,
            "cache_served_total": self.cache_served_total,
        }
        rate = self.stale_rate
        if rate is not None:
            data["stale_rate"] = rate
        return data

    def record(
        self, request_id: str, score: float, comment: str | None = None, *, stale: bool = False
    ) -> Feedback:
        """Record a verdict on `request_id`'s answer (`stale`: it was out of date); tell
        every listener; return it.

        Raises ValueError for an empty request id or a score outside [-1, 1].
        """
        if not request_id:
            raise ValueError("request_id must not be empty")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not (math.isfinite(score) and -1 <= score <= 1)
        ):
            raise ValueError(f"score must be a number in [-1, 1], got {score!r}")
        producer = self._answers.get(request_id)
        provider, model, cached, from_cache = producer or (None, None, False, False)
        feedback = Feedback(
            request_id=request_id,
            score=float(score),
            comment=comment,
            provider=provider,
            model=model,
            cached=cached,
            stale=stale,
        )
        _put(self._entries, request_id, feedback, self.max_entries)
        self.received_total += 1
        self.attributed_total += producer is not None
        self.stale_total += stale
        if from_cache:
            self._expire()
            if request_id in self._in_window:
                self._judged.add(request_id)
                if stale:
                    self._stale.add(request_id)
                else:
                    self._stale.discard(request_id)
        for listener in tuple(self._listeners):
            try:
                listener(feedback)
            except Exception:  # a learner's bug must not lose the client's feedback
                log.exception("feedback listener %r failed on %s", listener, request_id)
        return feedback

    def subscribe(self, listener: FeedbackListener) -> None:
        """Call `listener(feedback)` for every feedback recorded from now on."""
        self._listeners.append(listener)

    def get(self, request_id: str) -> Feedback | None:
        """The latest feedback on `request_id`, if kept."""
        return self._entries.get(request_id)

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        horizon = self._clock() - self.stale_window_s
        served = self._served
        while served and served[0][0] < horizon:
            _, request_id = served.popleft()
            left = self._in_window.pop(request_id) - 1
            if left:
                self._in_window[request_id] = left
            else:
                self._judged.discard(request_id)
                self._stale.discard(request_id)


def _put(entries: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    entries.pop(key, None)
    entries[key] = value
    while len(entries) > limit:
        entries.popitem(last=False)
