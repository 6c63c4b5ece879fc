"""`FeedbackCollector`: every verdict on an answer, turned into learning where it belongs.

    collector = FeedbackCollector(router=router, dedup=dedup)
    collector.attribute(Attribution(request_id="req_1", provider="openai", model="gpt-4o-mini",
                                    arm="openai:gpt-4o-mini", latency_ms=800, cost_usd=0.001))
    collector.quality("req_1", 0.9)            # the QualityEstimator's score, at once
    collector.client_feedback("req_1", -1.0)   # POST /v1/feedback, later
    collector.task_outcome("fix-flaky-test", TaskVerdict.PASSED)   # the coordinator, later still

Each verdict is attributed by `request_id` to what produced the answer:
- an answer from an upstream call that the learned router chose: a router reward, the
  `RewardWeights` of the verdict's quality with the call's own latency and cost;
- a semantic-dedup hit: whether the hit was right, for that cache entry's threshold
  (`SemanticDedup.feedback`). Only a client's verdict (negative: wrong) and a passed task
  (right) count here: a low quality score or a failed task says the answer was poor, not
  that it was another question's answer;
- an exact cache hit or a coalesced answer: nothing to learn (no choice was made).
A client's score in [-1, 1] is the quality (score + 1) / 2; a task's verdict is 1 when it
passed and `FAILED_TASK_FACTOR` when it failed, for every request made on its behalf.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from intelligence.quality import FAILED_TASK_FACTOR, TaskVerdict
from intelligence.router import LearnedRouter, RewardWeights

__all__ = [
    "TASK_ID",
    "Attribution",
    "DedupFeedback",
    "FeedbackCollector",
    "FeedbackSource",
    "FeedbackStats",
]


TASK_ID = "task_id"  # orchestrator.request.TASK_ID (not imported: this package never
# imports the pipeline)
"""The request `metadata` key naming the fleet task a request was made for (the server sets
it from the `x-orchestrator-task` header); it becomes `Attribution.task_id`, so the task's
outcome (`FeedbackCollector.task_outcome`) credits that request."""


class FeedbackSource(StrEnum):
    """Where a verdict on an answer came from."""

    QUALITY = "quality"  # the QualityEstimator, when the answer was made
    CLIENT = "client"  # POST /v1/feedback
    TASK = "task"  # the fleet task the request was made for ended


@runtime_checkable
class DedupFeedback(Protocol):
    """What the collector tells semantic dedup (`intelligence.SemanticDedup` is one)."""

    def feedback(self, hit: int, *, correct: bool, confidence: float | None = None) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribution:
    """What produced the answer to one request.

    `arm`/`context`: the learned router's choice (None if it made none). `cached`: no upstream
    call answered it (an exact cache hit, a coalesced follower, or a semantic hit).
    `dedup_entry`, `similarity`, `confidence`: the semantic-dedup entry that served it.
    `task_id`: the fleet task the request was made for, if known.
    """

    request_id: str
    provider: str
    model: str
    arm: str | None = None
    context: str | None = None
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    cached: bool = False
    dedup_entry: int | None = None
    similarity: float | None = None
    confidence: float | None = None
    task_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackStats:
    """Counts since start: verdicts received by source, what reached a learner, and verdicts
    for requests nobody attributed (or attributed too long ago to remember)."""

    received: dict[str, int]
    router_updates: int
    dedup_updates: int
    unattributed: int


class FeedbackCollector:
    """Attributes verdicts to the router arm and the dedup entry that produced an answer.

    Remembers the last `max_requests` attributions (and, per task, the requests made for it).
    `weights` default to the router's. Thread-safe.
    """

    def __init__(
        self,
        *,
        router: LearnedRouter | None = None,
        dedup: DedupFeedback | None = None,
        weights: RewardWeights | None = None,
        max_requests: int = 10_000,
    ) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be >= 1, got {max_requests!r}")
        self.router = router
        self.dedup = dedup
        if weights is None:
            weights = router.weights if router is not None else RewardWeights()
        self.weights = weights
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._by_request: OrderedDict[str, Attribution] = OrderedDict()
        self._by_task: dict[str, list[str]] = {}
        self._received = dict.fromkeys((str(s) for s in FeedbackSource), 0)
        self._router_updates = 0
        self._dedup_updates = 0
        self._unattributed = 0

    def attribute(self, attribution: Attribution) -> None:
        """Remember what produced `attribution.request_id`'s answer."""
        with self._lock:
            request_id = attribution.request_id
            self._by_request.pop(request_id, None)
            self._by_request[request_id] = attribution
            if attribution.task_id is not None:
                self._by_task.setdefault(attribution.task_id, []).append(request_id)
            while len(self._by_request) > self.max_requests:
                _, dropped = self._by_request.popitem(last=False)
                self._forget_task_link(dropped)

    def attribution(self, request_id: str) -> Attribution | None:
        """What produced `request_id`'s answer, if still remembered."""
        with self._lock:
            return self._by_request.get(request_id)

    def quality(self, request_id: str, score: float) -> bool:
        """The quality estimate (0..1) of `request_id`'s answer; True if a learner took it."""
        _check_unit("score", score)
        with self._lock:
            self._received[FeedbackSource.QUALITY] += 1
            found = self._find(request_id)
            return found is not None and self._reward(found, score)

    def client_feedback(self, request_id: str, score: float) -> bool:
        """A client's verdict in [-1, 1] on `request_id`'s answer; True if a learner took it."""
        if isinstance(score, bool) or not isinstance(score, int | float) or not -1 <= score <= 1:
            raise ValueError(f"score must be a number in [-1, 1], got {score!r}")
        with self._lock:
            self._received[FeedbackSource.CLIENT] += 1
            found = self._find(request_id)
            if found is None:
                return False
            learned = self._reward(found, (score + 1.0) / 2.0)
            if found.dedup_entry is not None and score != 0:
                learned = self._tell_dedup(found, correct=score > 0) or learned
            return learned

    def task_outcome(self, task_id: str, verdict: TaskVerdict | str) -> int:
        """A fleet task ended; credit every remembered request made for it. Returns how many
        reached a learner."""
        verdict = TaskVerdict(verdict)
        quality = 1.0 if verdict is TaskVerdict.PASSED else FAILED_TASK_FACTOR
        with self._lock:
            self._received[FeedbackSource.TASK] += 1
            request_ids = self._by_task.pop(task_id, [])
            if not request_ids:
                self._unattributed += 1
            credited = 0
            for request_id in request_ids:
                found = self._by_request.get(request_id)
                if found is None:
                    continue
                learned = self._reward(found, quality)
                if found.dedup_entry is not None and verdict is TaskVerdict.PASSED:
                    learned = self._tell_dedup(found, correct=True) or learned
                credited += learned
            return credited

    @property
    def stats(self) -> FeedbackStats:
        with self._lock:
            return FeedbackStats(
                received=dict(self._received),
                router_updates=self._router_updates,
                dedup_updates=self._dedup_updates,
                unattributed=self._unattributed,
            )

    # -- internals (lock held) -------------------------------------------------------------

    def _find(self, request_id: str) -> Attribution | None:
        found = self._by_request.get(request_id)
        if found is None:
            self._unattributed += 1
        return found

    def _reward(self, found: Attribution, quality: float) -> bool:
        if self.router is None or found.arm is None or found.cached:
            return False
        reward = self.weights.reward(
            quality=quality, latency_ms=found.latency_ms, cost_usd=found.cost_usd
        )
        self.router.update(found.arm, reward, found.context)
        self._router_updates += 1
        return True

    def _tell_dedup(self, found: Attribution, *, correct: bool) -> bool:
        if self.dedup is None or found.dedup_entry is None:
            return False
        self.dedup.feedback(found.dedup_entry, correct=correct, confidence=found.confidence)
        self._dedup_updates += 1
        return True

    def _forget_task_link(self, dropped: Attribution) -> None:
        if dropped.task_id is None:
            return
        ids = self._by_task.get(dropped.task_id)
        if ids is None:
            return
        with contextlib.suppress(ValueError):
            ids.remove(dropped.request_id)
        if not ids:
            del self._by_task[dropped.task_id]


def _check_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
