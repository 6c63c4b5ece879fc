"""benchmarks/tuning.py's simulated inference stage behaves as the pipeline's does: its queues
age waiting requests, a full queue displaces lower priorities, and the deadline fails a
request wherever it is (measured there; a call it cuts short is no breaker failure)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.config import LiveConfig, PipelineConfig, Tunables
from orchestrator.request import Priority


@pytest.fixture(scope="module")
def bt() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "tuning.py"
    spec = importlib.util.spec_from_file_location("tuning_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _sim(bt: ModuleType, *, demand: float, latency_s: float, seed: int = 3,
         **tunables: Any) -> Any:
    scenario = bt.Scenario("test", 0.0, 600.0, lambda t: demand, lambda t: latency_s,
                           lambda t: math.inf)
    sim = bt.Sim(scenario, LiveConfig(Tunables(**tunables)), seed=seed)
    sim.start()
    return sim


def test_a_request_that_expired_in_the_queue_is_measured_at_its_deadline(
    bt: ModuleType,
) -> None:
    """One slot, calls that outlast the deadline: requests expire while queued. As in the
    pipeline (which fails a request at its deadline wherever it is), each is measured at its
    deadline, never later, and in the bucket of that second."""
    sim = _sim(bt, demand=1.0, latency_s=100.0, inference_concurrency=1)
    sim.run_until(200.0)
    latencies = [x for b in sim.buckets.values() for x in b.latencies]
    assert len(latencies) > 20
    assert max(latencies) <= bt.DEADLINE_S + 1e-9


def test_a_call_cut_short_by_the_deadline_is_no_breaker_failure(bt: ModuleType) -> None:
    """The pipeline's deadline timer cancels a call still running (the call's own timeout is
    later): the breaker hears nothing, the slot comes back at the deadline."""
    sim = _sim(bt, demand=2.0, latency_s=100.0, inference_concurrency=4,
               breaker_failure_threshold=1)
    sim.run_until(120.0)
    assert sim.breaker.opened_total == 0
    assert sim.metrics.errors_by_type["DeadlineExceeded"] > 100
    assert sim.active <= 4
    assert sim.metrics.upstream_calls >= 4 * 3  # a fresh call every 30 s in each slot


def _low_answered_late(bt: ModuleType, monkeypatch: pytest.MonkeyPatch, ageing_s: float) -> int:
    """Low-priority requests answered in the second half of a minute in which high and normal
    arrivals alone exceed what one slot drains."""
    monkeypatch.setattr(bt, "PIPELINE", PipelineConfig(priority_ageing_s=ageing_s))
    sim = _sim(bt, demand=10.0, latency_s=0.2, inference_concurrency=1)
    answered: list[tuple[float, Priority]] = []
    complete = sim._complete

    def record(req: Any) -> None:
        if not req.done:
            answered.append((sim.now, req.priority))
        complete(req)

    sim._complete = record
    sim.run_until(60.0)
    return sum(1 for t, p in answered if t >= 30.0 and p is Priority.LOW)


def test_the_queues_age_waiting_requests_as_the_pipelines_do(
    bt: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the pipeline's ageing (one level per `priority_ageing_s` waited), low priority is
    still served under more high and normal work than the stage drains; without it, never."""
    assert _low_answered_late(bt, monkeypatch, PipelineConfig().priority_ageing_s) > 10
    assert _low_answered_late(bt, monkeypatch, 1e9) == 0


def test_a_full_queue_displaces_low_priority_for_higher(bt: ModuleType) -> None:
    """As `PriorityQueue.put`: a higher-priority arrival at a full queue displaces the newest
    lower-priority request (failed as shed) instead of being refused."""
    sim = _sim(bt, demand=20.0, latency_s=100.0, inference_concurrency=1,
               inference_queue_capacity=8, shed_threshold=1.0)
    sim.run_until(20.0)  # before any deadline
    assert all(q.depth_by_priority()[Priority.LOW] == 0 for q in sim.queues)
    assert sum(len(q) for q in sim.queues) == 8
    assert sim.metrics.errors_by_type["Overloaded"] == sim.shed_total > 0
    displaced = [x for b in sim.buckets.values() for x in b.latencies]
    assert displaced and all(x > 0 for x in displaced)  # measured when displaced
