"""`FeedbackLog`'s stale-answer rate: stale reports over the answers a cache served lately."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from orchestrator import FeedbackLog, InferenceResponse, Usage


def answer(request_id: str, *, cached: bool = True, deduped: bool = False) -> InferenceResponse:
    return InferenceResponse(text="42", usage=Usage(), cost_usd=0.0, provider="p", model="m",
                             latency_ms=1.0, request_id=request_id, cached=cached,
                             deduped=deduped)


def test_stale_rate_is_unknown_until_a_cache_served_answer_gets_a_verdict() -> None:
    """Silence says nothing: no rate until a verdict on a cache-served answer arrives; a
    verdict on a fresh upstream answer or a coalesced one does not count."""
    log = FeedbackLog(clock=FakeClock(0.0))
    log.answered(answer("hit"))
    log.answered(answer("upstream", cached=False))
    log.answered(answer("joined", cached=False, deduped=True))
    log.record("upstream", -1.0, stale=True)
    log.record("joined", -1.0, stale=True)
    assert log.stale_rate is None and log.stale_total == 2
    log.record("hit", 1.0)
    assert log.stale_rate == 0.0


def test_stale_rate_counts_reports_against_cache_hits_served_and_a_newer_verdict_wins() -> None:
    """One of two cache-served answers reported stale is 50%; a later fresh verdict on it
    replaces the stale one."""
    log = FeedbackLog(clock=FakeClock(0.0))
    log.answered(answer("a"))
    log.answered(answer("b"))
    log.record("a", -1.0, stale=True)
    assert log.stale_rate == 0.5
    assert log.status() == {"received_total": 1, "attributed_total": 1, "stale_total": 1,
                            "cache_served_total": 2, "stale_rate": 0.5}
    log.record("a", 1.0)
    assert log.stale_rate == 0.0


def test_answers_served_before_the_window_are_forgotten() -> None:
    """A stale report on an answer served longer ago than `stale_window_s` leaves the rate
    (the TTL in force then is not the one in force now)."""
    clock = FakeClock(0.0)
    log = FeedbackLog(stale_window_s=60.0, clock=clock)
    log.answered(answer("old"))
    log.record("old", -1.0, stale=True)
    assert log.stale_rate == 1.0
    clock.advance(61.0)
    assert log.stale_rate is None
    log.answered(answer("new"))
    log.record("new", 1.0)
    assert log.stale_rate == 0.0


def test_a_bad_window_is_refused() -> None:
    """A window that is not a positive span is a ValueError naming it."""
    with pytest.raises(ValueError, match="stale_window_s"):
        FeedbackLog(stale_window_s=0)
