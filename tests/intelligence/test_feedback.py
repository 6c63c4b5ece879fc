"""FeedbackCollector: verdicts reach the router arm and the dedup entry that made the answer."""

from __future__ import annotations

import pytest

from intelligence import LearnedRouter, RewardWeights
from intelligence.feedback import Attribution, FeedbackCollector
from intelligence.quality import FAILED_TASK_FACTOR, TaskVerdict

ARMS = ["anthropic:claude-sonnet-4-6", "openai:gpt-4o-mini"]
QUALITY_ONLY = RewardWeights(quality=1, latency=0, cost=0)


class RecordingDedup:
    """A real DedupFeedback sink that keeps what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[int, bool, float | None]] = []

    def feedback(self, hit: int, *, correct: bool, confidence: float | None = None) -> None:
        self.told.append((hit, correct, confidence))


def _collector(**kwargs) -> tuple[FeedbackCollector, LearnedRouter, RecordingDedup]:
    router = LearnedRouter(ARMS, seed=1, weights=QUALITY_ONLY)
    dedup = RecordingDedup()
    return FeedbackCollector(router=router, dedup=dedup, **kwargs), router, dedup


def _routed(request_id: str, arm: str = ARMS[1], **kwargs) -> Attribution:
    provider, model = arm.split(":")
    return Attribution(request_id=request_id, provider=provider, model=model, arm=arm, **kwargs)


def _mean(router: LearnedRouter, arm: str, context: str | None = None) -> float:
    return {e.arm: e.mean_reward for e in router.estimates(context)}[arm]


def test_a_quality_score_rewards_the_arm_that_answered() -> None:
    """quality() updates the router arm attributed to the request, in its context."""
    collector, router, _ = _collector()
    collector.attribute(_routed("req_1", context="simple"))
    for _ in range(20):
        assert collector.quality("req_1", 1.0)
    assert _mean(router, ARMS[1], "simple") > 0.9
    assert router.estimates("simple")[0].arm == ARMS[1]


def test_the_reward_uses_the_calls_own_latency_and_cost() -> None:
    """With latency weighted, a slow call earns less than a fast one of the same quality."""
    weights = RewardWeights(quality=1, latency=1, cost=0, latency_scale_ms=100)
    router = LearnedRouter(ARMS, seed=1, weights=weights)
    collector = FeedbackCollector(router=router)
    collector.attribute(_routed("fast", ARMS[0], latency_ms=0))
    collector.attribute(_routed("slow", ARMS[1], latency_ms=900))
    for _ in range(10):
        collector.quality("fast", 1.0)
        collector.quality("slow", 1.0)
    assert _mean(router, ARMS[0]) > 0.9 > 0.6 > _mean(router, ARMS[1])


def test_client_feedback_maps_minus_one_to_zero_reward() -> None:
    """A client's -1 is quality 0, +1 is quality 1."""
    collector, router, _ = _collector()
    collector.attribute(_routed("bad", ARMS[0]))
    collector.attribute(_routed("good", ARMS[1]))
    for _ in range(20):
        collector.client_feedback("bad", -1.0)
        collector.client_feedback("good", 1.0)
    assert _mean(router, ARMS[0]) < 0.1 and _mean(router, ARMS[1]) > 0.9


def test_a_cached_answer_teaches_the_router_nothing() -> None:
    """No upstream call chose it, so a cache hit's verdict is no router reward."""
    collector, _, _ = _collector()
    collector.attribute(_routed("hit", cached=True))
    assert not collector.quality("hit", 0.0)
    assert collector.stats.router_updates == 0


def test_negative_client_feedback_on_a_semantic_hit_reports_a_wrong_hit() -> None:
    """The dedup entry that served the answer hears correct=False, with its confidence."""
    collector, _, dedup = _collector()
    collector.attribute(
        Attribution(
            request_id="sem",
            provider="anthropic",
            model="m",
            cached=True,
            dedup_entry=42,
            similarity=0.97,
            confidence=0.9,
        )
    )
    assert collector.client_feedback("sem", -1.0)
    assert dedup.told == [(42, False, 0.9)]


def test_a_low_quality_score_is_not_a_wrong_semantic_hit() -> None:
    """Quality says the answer is poor, not that it answered another question."""
    collector, _, dedup = _collector()
    collector.attribute(
        Attribution(request_id="sem", provider="p", model="m", cached=True, dedup_entry=7)
    )
    collector.quality("sem", 0.0)
    assert dedup.told == []


def test_a_task_outcome_credits_every_request_made_for_it() -> None:
    """task_outcome() rewards each attributed request of the task; others are untouched."""
    collector, router, _ = _collector()
    for i in range(3):
        collector.attribute(_routed(f"t{i}", ARMS[0], task_id="fix-test"))
    collector.attribute(_routed("other", ARMS[1], task_id="another"))
    assert collector.task_outcome("fix-test", TaskVerdict.FAILED) == 3
    estimates = {e.arm: e for e in router.estimates()}
    assert estimates[ARMS[0]].updates_total == 3
    assert estimates[ARMS[1]].updates_total == 0
    assert _mean(router, ARMS[0]) < 0.5 * (1 + FAILED_TASK_FACTOR)
    assert collector.task_outcome("fix-test", TaskVerdict.PASSED) == 0  # already credited


def test_a_passed_task_confirms_its_semantic_hits() -> None:
    """A semantic hit inside a passed task is reported correct; a failed task reports nothing."""
    collector, _, dedup = _collector()
    collector.attribute(
        Attribution(
            request_id="a", provider="p", model="m", cached=True, dedup_entry=1, task_id="ok"
        )
    )
    collector.attribute(
        Attribution(
            request_id="b", provider="p", model="m", cached=True, dedup_entry=2, task_id="bad"
        )
    )
    collector.task_outcome("ok", "passed")
    collector.task_outcome("bad", "failed")
    assert dedup.told == [(1, True, None)]


def test_verdicts_for_unknown_requests_are_counted_not_applied() -> None:
    """A request nobody attributed changes nothing and is counted as unattributed."""
    collector, router, _ = _collector()
    assert not collector.quality("nope", 1.0)
    assert not collector.client_feedback("nope", 1.0)
    assert collector.stats.unattributed == 2
    assert collector.stats.received == {"quality": 1, "client": 1, "task": 0}
    assert all(e.updates_total == 0 for e in router.estimates())


def test_only_the_last_max_requests_attributions_are_kept() -> None:
    """The oldest attribution is forgotten once max_requests newer ones arrived."""
    collector, _, _ = _collector(max_requests=2)
    for i in range(3):
        collector.attribute(_routed(f"r{i}", task_id="t"))
    assert collector.attribution("r0") is None
    assert collector.attribution("r2") is not None
    assert collector.task_outcome("t", "passed") == 2


@pytest.mark.parametrize("score", [1.5, -2, float("nan"), True])
def test_out_of_range_client_scores_are_refused(score: float) -> None:
    """client_feedback() raises ValueError for a score outside [-1, 1]."""
    collector, _, _ = _collector()
    with pytest.raises(ValueError, match="score"):
        collector.client_feedback("x", score)
