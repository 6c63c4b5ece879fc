"""The throughput history: a bounded ring of per-bucket rates, measured on an injected clock."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from orchestrator.throughput import ThroughputHistory


def test_each_complete_bucket_gives_its_rate_and_the_filling_one_is_left_out() -> None:
    """Requests recorded in a bucket become that bucket's requests per second once it ends."""
    clock = FakeClock(start=100.0)
    history = ThroughputHistory(bucket_s=5.0, horizon_s=60.0, clock=clock)
    history.record(n=10)
    clock.advance(5.0)
    history.record(n=5)
    assert history.points() == [(105.0, 2.0)]
    clock.advance(5.0)
    assert history.points() == [(105.0, 2.0), (110.0, 1.0)]


def test_quiet_buckets_count_as_zero() -> None:
    """A stretch with no traffic shows as zeros, not as a gap the chart would bridge."""
    clock = FakeClock(start=0.0)
    history = ThroughputHistory(bucket_s=1.0, horizon_s=10.0, clock=clock)
    history.record(n=3)
    clock.advance(4.0)
    history.record(n=1)
    clock.advance(1.0)
    assert history.points() == [(1.0, 3.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0), (5.0, 1.0)]


def test_the_ring_keeps_only_the_horizon_however_long_it_runs() -> None:
    """After far more than the horizon, only the buckets within it are kept, the old ones
    overwritten (bounded memory), and a bucket's count never leaks into a later one."""
    clock = FakeClock(start=0.0)
    history = ThroughputHistory(bucket_s=1.0, horizon_s=5.0, clock=clock)
    for second in range(1000):
        history.record(n=second)
        clock.advance(1.0)
    points = history.points()
    assert points == [(996.0, 995.0), (997.0, 996.0), (998.0, 997.0), (999.0, 998.0),
                      (1000.0, 999.0)]
    assert len(history._counts) == 6  # the five, and the one filling


def test_a_record_older_than_the_horizon_is_dropped() -> None:
    """A late record for a bucket the ring has already reused does not corrupt the newer one."""
    clock = FakeClock(start=0.0)
    history = ThroughputHistory(bucket_s=1.0, horizon_s=3.0, clock=clock)
    clock.advance(3.0)
    history.record(n=2)
    history.record(now=0.5, n=100)  # bucket 0 shares a slot with bucket 3
    clock.advance(1.0)
    assert history.points()[-1] == (4.0, 2.0)


def test_the_bucket_the_history_began_in_is_divided_by_the_part_it_covered() -> None:
    clock = FakeClock(start=12.5)
    history = ThroughputHistory(bucket_s=5.0, horizon_s=60.0, clock=clock)
    history.record(n=5)
    clock.advance(2.5)
    assert history.points() == [(15.0, 2.0)]


@pytest.mark.parametrize(("bucket_s", "horizon_s", "name"),
                         [(0.0, 10.0, "bucket_s"), (5.0, 1.0, "horizon_s")])
def test_bad_sizes_are_refused(bucket_s: float, horizon_s: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ThroughputHistory(bucket_s=bucket_s, horizon_s=horizon_s)


async def test_the_pipeline_keeps_the_history_of_its_real_traffic() -> None:
    """Requests the pipeline answers land in its history on the pipeline's clock, the one
    its snapshots' `taken_at_s` are on."""
    clock = FakeClock(start=1000.0)
    async with Pipeline(PipelineConfig(), EchoWorker(latency_s=0.0), clock=clock) as pipeline:
        for i in range(4):
            await pipeline.infer(InferenceRequest(f"q {i}"))
        clock.advance(5.0)
        await pipeline.infer(InferenceRequest("q next"))
        clock.advance(5.0)
        history = pipeline.throughput_history()
    assert history["bucket_s"] == 5.0 and history["horizon_s"] == 900.0
    assert history["points"] == [[1005.0, 0.8], [1010.0, 0.2]]
    assert pipeline.snapshot().taken_at_s == 1010.0
