"""The telemetry bus, the sampler, rolling windows and the snapshot adapters."""

from __future__ import annotations

import threading

import pytest

from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from self_tune.sources import PIPELINE_COUNTERS, FleetSource, PipelineSource, flatten
from self_tune.telemetry import InProcessBus, RollingWindows, Sampler, TelemetrySnapshot


class Static:
    def __init__(self, name: str, values: dict[str, float]) -> None:
        self.name = name
        self.values = values

    def read(self) -> dict[str, float]:
        return dict(self.values)


class Broken:
    name = "broken"

    def read(self) -> dict[str, float]:
        raise RuntimeError("down")


def _snap(t: float, **values: float) -> TelemetrySnapshot:
    return TelemetrySnapshot(taken_at=t, values=values)


def test_every_subscriber_gets_every_message() -> None:
    """Publishing fans out to all subscribers, in order."""
    bus: InProcessBus[int] = InProcessBus()
    a, b = bus.subscribe(), bus.subscribe()
    for i in range(3):
        bus.publish(i)
    assert a.drain() == [0, 1, 2]
    assert b.drain() == [0, 1, 2]
    assert bus.published == 3


def test_a_slow_subscriber_drops_its_oldest_and_counts_them() -> None:
    """A full buffer drops the oldest message, counts it, and never blocks the publisher."""
    bus: InProcessBus[int] = InProcessBus()
    slow = bus.subscribe(maxlen=2)
    fast = bus.subscribe(maxlen=100)
    for i in range(5):
        bus.publish(i)
    assert slow.drain() == [3, 4]
    assert slow.dropped == 3
    assert fast.drain() == [0, 1, 2, 3, 4]
    assert fast.dropped == 0


def test_a_closed_subscription_receives_nothing() -> None:
    """close() unsubscribes."""
    bus: InProcessBus[int] = InProcessBus()
    sub = bus.subscribe()
    sub.close()
    bus.publish(1)
    assert sub.drain() == []


def test_publishing_from_threads_loses_nothing_below_capacity() -> None:
    """Concurrent publishers from several threads: every message arrives exactly once."""
    bus: InProcessBus[int] = InProcessBus()
    sub = bus.subscribe(maxlen=10_000)
    threads = [
        threading.Thread(target=lambda k=k: [bus.publish(k * 1000 + i) for i in range(500)])
        for k in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sub.drain()
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(500))


def test_sampler_publishes_counters_as_rates() -> None:
    """A counter becomes `<name>_per_s` over the interval measured on the monotonic clock."""
    now = [0.0]
    source = Static("s", {"shed_total": 10.0, "latency_p95_ms": 40.0})
    bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
    sub = bus.subscribe()
    sampler = Sampler(
        bus,
        (source,),
        counters=frozenset({"shed_total"}),
        clock=lambda: 1000.0 + now[0],
        monotonic=lambda: now[0],
    )
    first = sampler.sample()
    now[0] = 5.0
    source.values["shed_total"] = 30.0
    second = sampler.sample()
    assert first.get("shed_per_s") == 0.0
    assert second.get("shed_per_s") == pytest.approx(4.0)
    assert second.taken_at == 1005.0
    assert [s.taken_at for s in sub.drain()] == [1000.0, 1005.0]


def test_sampler_skips_a_broken_source_and_counts_it() -> None:
    """One failing source is counted; the others still publish."""
    bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
    sampler = Sampler(bus, (Broken(), Static("ok", {"x": 1.0})))
    snap = sampler.sample()
    assert snap.get("x") == 1.0
    assert snap.sources == ("ok",)
    assert sampler.source_errors == {"broken": 1}


def test_sampler_refuses_a_bad_interval() -> None:
    """interval_s <= 0 is a ValueError naming it."""
    with pytest.raises(ValueError, match="interval_s"):
        Sampler(InProcessBus(), (), interval_s=0)


def test_rolling_windows_summarise_each_span() -> None:
    """Means over 1 min and 1 h differ when the recent values differ from the old."""
    windows = RollingWindows()
    for i in range(720):  # one hour at 5 s
        windows.add(_snap(i * 5.0, latency=100.0 if i < 708 else 200.0))
    assert windows.mean("latency", 60) == pytest.approx(200.0)
    assert windows.mean("latency", 3600) == pytest.approx((708 * 100 + 12 * 200) / 720)
    assert windows.percentile("latency", 300, 95) == 200.0
    assert windows.summary("latency")["60s"] == pytest.approx(200.0)


def test_rolling_windows_forget_past_the_longest_window() -> None:
    """Values older than the longest window are dropped."""
    windows = RollingWindows(windows_s=(60.0,))
    windows.add(_snap(0.0, x=1.0))
    windows.add(_snap(100.0, x=2.0))
    assert windows.values("x", 60) == [2.0]
    assert windows.mean("absent", 60) is None


def test_flatten_names_stages_providers_and_breaker_states() -> None:
    """Lists of named entries become dotted names; a breaker state becomes a number."""
    flat = flatten(
        {
            "latency_p95_ms": 12.5,
            "stages": [{"name": "inference", "depth": 5, "capacity": 10}],
            "providers": [{"name": "echo", "breaker_state": "open", "calls_total": 3}],
            "errors_by_type": {"Overloaded": 2},
            "label": "ignored",
        }
    )
    assert flat["latency_p95_ms"] == 12.5
    assert flat["stage.inference.depth"] == 5.0
    assert flat["stage.inference.fill"] == 0.5
    assert flat["provider.echo.breaker_open"] == 1.0
    assert flat["errors_by_type.Overloaded"] == 2.0
    assert "label" not in flat


def test_fleet_source_prefixes_its_metrics() -> None:
    """The fleet's snapshot becomes fleet.* metrics."""
    source = FleetSource(lambda: {"backlog": 4, "agents_busy": 2})
    assert source.read() == {"fleet.backlog": 4.0, "fleet.agents_busy": 2.0}


async def test_snapshot_moves_with_real_traffic() -> None:
    """Driving requests through a real pipeline moves the published snapshot's values."""
    now = [0.0]
    bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        sampler = Sampler(
            bus,
            (PipelineSource(pipeline.snapshot),),
            counters=PIPELINE_COUNTERS,
            monotonic=lambda: now[0],
        )
        before = sampler.sample()
        for i in range(25):
            await pipeline.infer(InferenceRequest(f"telemetry request {i}"))
        now[0] = 5.0
        after = sampler.sample()
    assert before.get("requests_total") == 0.0
    assert after.get("requests_total") == 25.0
    assert after.get("upstream_calls") == 25.0
    assert after.get("requests_per_s") == pytest.approx(5.0)
    assert after.get("throughput_rps") > 0
    assert after.get("stage.inference.capacity") > 0
