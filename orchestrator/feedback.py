"""`FeedbackLog`: verdicts on answers, each attributed by request id to what produced it.

    pipeline.feedback.record("req_1", score=-1.0, comment="wrong file")   # POST /v1/feedback
    pipeline.feedback.get("req_1").provider                               # "anthropic"

The pipeline tells the log about every answer it gives (`answered`), so a score that arrives
later is attributed to the provider and model that produced that answer. Listeners
(`subscribe`) get every `Feedback` as it is recorded: a learner (the learned router's
feedback collector) plugs in there. Both the answers remembered and the feedback kept are
bounded (the oldest go first).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
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
    unknown or long-gone request id)."""

    request_id: str
    score: float
    comment: str | None = None
    provider: str | None = None
    model: str | None = None
    cached: bool = False


FeedbackListener = Callable[[Feedback], None]


@dataclass(frozen=True, slots=True)
class _Producer:
    provider: str
    model: str
    cached: bool


class FeedbackLog:
    """The producers of the last `max_entries` answers and the feedback on them, by request
    id (a newer feedback for the same id replaces the older). `received_total` counts every
    feedback ever recorded; `attributed_total` those whose answer was remembered."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._answers: OrderedDict[str, _Producer] = OrderedDict()
        self._entries: OrderedDict[str, Feedback] = OrderedDict()
        self._listeners: list[FeedbackListener] = []
        self.received_total = 0
        self.attributed_total = 0

    def answered(self, response: InferenceResponse) -> None:
        """Remember who produced the answer to `response.request_id`."""
        producer = _Producer(response.provider, response.model, response.cached or response.deduped)
        _put(self._answers, response.request_id, producer, self.max_entries)

    def record(self, request_id: str, score: float, comment: str | None = None) -> Feedback:
        """Record a verdict on `request_id`'s answer; tell every listener; return it.

        Raises ValueError for an empty request id or a score outside [-1, 1].
        """
        if not request_id:
            raise ValueError("request_id must not be empty")
        if isinstance(score, bool) or not isinstance(score, int | float) or not (
            math.isfinite(score) and -1 <= score <= 1
        ):
            raise ValueError(f"score must be a number in [-1, 1], got {score!r}")
        producer = self._answers.get(request_id)
        feedback = Feedback(
            request_id=request_id,
            score=float(score),
            comment=comment,
            provider=producer.provider if producer else None,
            model=producer.model if producer else None,
            cached=producer.cached if producer else False,
        )
        _put(self._entries, request_id, feedback, self.max_entries)
        self.received_total += 1
        self.attributed_total += producer is not None
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


def _put(entries: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    entries.pop(key, None)
    entries[key] = value
    while len(entries) > limit:
        entries.popitem(last=False)
