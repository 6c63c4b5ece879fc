"""Tuning signals measured from a real server's traffic and feedback, sampled from its
`GET /v1/status` as `orchestrator serve --self-tune` samples it: the value moves, and the
law's proposal changes because of it (absent, the law holds)."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
from conftest import echo_pipeline
from fakeclock import FakeClock

from self_tune.controller import TuningController
from self_tune.experiment import ExperimentSettings
from self_tune.journal import Change
from self_tune.live import LocalConfig
from self_tune.sources import StatusSource
from self_tune.telemetry import TelemetrySnapshot


def proposed(port: LocalConfig, name: str, snapshot: TelemetrySnapshot) -> list[Change]:
    """What a dry-run controller tuning only `name` recommends for `snapshot` (a fresh one,
    so no cooldown from an earlier step hides a proposal)."""
    return TuningController(port, only=[name], dry_run=True, clock=FakeClock(0.0)).step(snapshot)


def test_stale_feedback_on_a_cached_answer_shortens_the_cache_ttl(
    start_server: Callable[..., str],
) -> None:
    """`POST /v1/feedback` with `stale: true` on an answer the cache served becomes
    `feedback.stale_rate` (stale reports over the cache-served answers): no verdict, the TTL
    law holds; a verdict saying fresh, it lengthens the TTL; one saying stale, it halves it."""
    pipeline = echo_pipeline()
    url = start_server(pipeline)
    port = LocalConfig(pipeline.live)
    source = StatusSource(url)

    def sample() -> TelemetrySnapshot:
        return TelemetrySnapshot(taken_at=0.0, values=source.read())

    def ask() -> dict[str, object]:
        return httpx.post(url + "/v1/prompt", json={"input": "what is the exchange rate?"}).json()

    assert ask()["cached"] is False
    cached = ask()
    assert cached["cached"] is True
    quiet = sample()
    assert quiet.get("feedback.cache_served_total") == 1
    assert "feedback.stale_rate" not in quiet.values
    assert quiet.get("cache_hit_rate") > 0.05
    assert proposed(port, "cache_ttl_s", quiet) == []

    fresh = httpx.post(url + "/v1/feedback", json={"request_id": cached["request_id"],
                                                   "score": 1})
    assert fresh.status_code == 202 and fresh.json()["stale"] is False
    judged = sample()
    assert judged.get("feedback.stale_rate") == 0.0
    (longer,) = proposed(port, "cache_ttl_s", judged)
    assert longer.new > longer.old

    stale = httpx.post(url + "/v1/feedback", json={"request_id": cached["request_id"],
                                                   "score": -1, "stale": True})
    assert stale.status_code == 202 and stale.json() | {"cached": True, "stale": True} \
        == stale.json()
    told = sample()
    assert told.get("feedback.stale_rate") == 1.0
    assert told.get("feedback.stale_total") == 1
    controller = TuningController(port, only=["cache_ttl_s"], clock=FakeClock(0.0),
                                  experiments=ExperimentSettings(min_change=math.inf))
    (shorter,) = controller.step(told)
    assert (shorter.old, shorter.new) == (300.0, 200.0)  # one step: at most ÷1.5
    assert pipeline.live.current.cache_ttl_s == 200.0
