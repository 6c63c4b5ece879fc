"""Fleet events fan out to every subscriber; the metrics turn them into a typed snapshot."""

from __future__ import annotations

import json

import pytest
from fakeclock import FakeClock

from coordinator.metrics import (
    Distribution,
    EventKind,
    FleetEvent,
    FleetEvents,
    FleetMetrics,
)
from coordinator.task import TaskState


def test_every_subscriber_hears_every_event_even_after_one_raises():
    """Two subscribers and a broken one: both working ones get the event."""
    events = FleetEvents()
    heard: list[tuple[str, EventKind]] = []
    events.subscribe(lambda e: heard.append(("a", e.kind)))
    events.subscribe(lambda e: 1 / 0)
    events.subscribe(lambda e: heard.append(("b", e.kind)))
    events.emit(FleetEvent(kind=EventKind.STARTED, agent="x"))
    assert heard == [("a", EventKind.STARTED), ("b", EventKind.STARTED)]


def test_an_unsubscribed_listener_hears_nothing_more():
    """The callable `subscribe` returns removes that subscriber."""
    events = FleetEvents()
    heard: list[FleetEvent] = []
    unsubscribe = events.subscribe(heard.append)
    unsubscribe()
    events.emit(FleetEvent(kind=EventKind.STARTED, agent="x"))
    assert heard == []


def test_snapshot_rates_count_the_last_window_only():
    """Claims, successes and failures in the last minute are the per-minute rates."""
    clock = FakeClock(1000.0)
    metrics = FleetMetrics(window_s=60, clock=clock, wall_clock=lambda: 1.7e9)
    metrics(FleetEvent(kind=EventKind.STARTED, agent="a", at_s=900.0, claim_latency_s=0.5))
    for at in (990.0, 995.0):
        metrics(FleetEvent(kind=EventKind.STARTED, agent="a", at_s=at, claim_latency_s=0.002))
    metrics(FleetEvent(kind=EventKind.SUCCEEDED, agent="a", at_s=996.0, duration_s=6.0))
    metrics(FleetEvent(kind=EventKind.FAILED, agent="a", at_s=999.0, duration_s=4.0))
    metrics(FleetEvent(kind=EventKind.RELEASED, agent="a", at_s=999.0, duration_s=1.0))
    snap = metrics.snapshot(tasks={TaskState.PENDING: 4, TaskState.CLAIMED: 1},
                            agents_target=3, agents_busy=1, agents_idle=2)
    assert (snap.claimed_per_min, snap.done_per_min, snap.failed_per_min) == (2.0, 1.0, 1.0)
    assert snap.backlog == 4
    assert snap.tasks[TaskState.DONE] == 0  # every state is present
    assert snap.claim_latency.count == 3 and snap.claim_latency.max_s == 0.5
    assert snap.attempt_duration == Distribution.of([6.0, 4.0])  # a release is no attempt
    assert (snap.taken_at_s, snap.taken_at_monotonic_s) == (1.7e9, 1000.0)


def test_snapshot_json_names_claimed_running_and_keeps_counts_flat():
    """Dashboards read `running`; every top-level number is a count, the rest is nested."""
    metrics = FleetMetrics(clock=FakeClock(5.0))
    data = metrics.snapshot(tasks={TaskState.CLAIMED: 2}, agents_target=2, agents_busy=2,
                            agents_idle=0).to_json()
    json.dumps(data)
    assert data["running"] == 2 and "claimed" not in data
    numbers = {k for k, v in data.items() if isinstance(v, int | float)}
    assert numbers == {"pending", "running", "done", "failed", "rejected", "cancelled",
                       "backlog", "agents_busy", "agents_idle"}
    assert data["taken_at"]["monotonic_s"] == 5.0


def test_snapshot_lists_running_tasks_with_agent_attempt_and_lease():
    """Each claimed task shows who runs it, which attempt it is, and how long its lease has
    left on the wall clock; soonest lease end first, and as JSON under `running_tasks`."""
    from coordinator.memory_queue import MemoryQueue

    wall = FakeClock(1.7e9)
    queue = MemoryQueue(clock=wall)
    for name in ("slow", "quick"):
        queue.add(f"do {name}", task_id=name)
    slow = queue.claim("agent-1", lease_s=60.0)
    assert slow is not None and slow.task.id == "slow"
    queue.fail("slow", slow.token, reason="try again")
    wall.advance(10.0)  # past the retry's backoff
    assert queue.claim("agent-1", lease_s=60.0) is not None  # "slow", its second attempt
    wall.advance(5.0)
    assert queue.claim("agent-2", lease_s=30.0) is not None
    wall.advance(20.0)
    metrics = FleetMetrics(clock=FakeClock(5.0), wall_clock=wall)
    snap = metrics.snapshot(tasks=queue.counts(), agents_target=2, agents_busy=2,
                            agents_idle=0, running=queue.records(TaskState.CLAIMED))
    assert [(t.task_id, t.agent, t.attempt, t.lease_remaining_s, t.lease_s)
            for t in snap.running] == [("quick", "agent-2", 1, 10.0, 30.0),
                                       ("slow", "agent-1", 2, 35.0, 60.0)]
    data = snap.to_json()
    json.dumps(data)
    assert data["running_tasks"][0] == {
        "task_id": "quick", "agent": "agent-2", "attempt": 1,
        "lease_expires_at_s": 1.7e9 + 45.0, "lease_remaining_s": 10.0, "lease_s": 30.0}


def test_a_real_fleets_status_lists_what_its_queue_has_claimed(tmp_path):
    """`Fleet.snapshot()` reads the claimed tasks from its queue, leases included."""
    from coordinator.agents import resolve_profile
    from coordinator.fleet import Fleet
    from coordinator.queue import FolderQueue

    (tmp_path / "a.toml").write_text('prompt = "one"\n')
    queue = FolderQueue(tmp_path)
    queue.ingest()
    claim = queue.claim("agent-7", lease_s=600.0)
    assert claim is not None
    (running,) = Fleet(queue, resolve_profile("echo", {})).snapshot().to_json()["running_tasks"]
    assert (running["task_id"], running["agent"], running["attempt"]) == ("a", "agent-7", 1)
    assert 0 < running["lease_remaining_s"] <= 600.0
    assert running["lease_expires_at_s"] == claim.expires_at


def test_distribution_percentiles_are_order_statistics():
    """p50/p95/p99 of 1..100 are 50, 95 and 99."""
    dist = Distribution.of([float(i) for i in range(100, 0, -1)])
    assert (dist.p50_s, dist.p95_s, dist.p99_s, dist.max_s) == (50.0, 95.0, 99.0, 100.0)
    assert dist.mean_s == pytest.approx(50.5)


def test_status_and_prometheus_show_the_same_fleet_numbers(tmp_path):
    """One source: `/v1/status`'s `fleet` and `/metrics`' `orchestrator_fleet_*` both come from
    the fleet's `FleetSnapshot`, so they agree number for number."""
    import httpx

    from coordinator.agents import resolve_profile
    from coordinator.fleet import Fleet
    from coordinator.queue import FolderQueue
    from orchestrator import EchoWorker, Pipeline, PipelineConfig
    from orchestrator.server import ServerThread, create_app

    (tmp_path / "a.toml").write_text('prompt = "one"\n')
    (tmp_path / "b.toml").write_text('prompt = "two"\n')
    queue = FolderQueue(tmp_path)
    queue.ingest()
    fleet = Fleet(queue, resolve_profile("echo", {}))
    server = ServerThread(create_app(Pipeline(PipelineConfig(), EchoWorker()),
                                     fleet_status=lambda: fleet.snapshot().to_json()))
    url = server.start()
    try:
        status = httpx.get(url + "/v1/status").json()["fleet"]
        scraped = httpx.get(url + "/metrics").text
    finally:
        server.stop()
    assert status["pending"] == 2 and status["tasks"]["pending"] == 2
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in scraped.splitlines() if line.startswith("orchestrator_fleet")}
    for state, count in status["tasks"].items():
        assert samples[f'orchestrator_fleet_tasks{{state="{state}"}}'] == count
    assert samples["orchestrator_fleet_backlog"] == status["backlog"] == 2
    assert samples['orchestrator_fleet_agents{kind="target"}'] == status["agents"]["target"]
    assert samples['orchestrator_fleet_per_minute{event="claimed"}'] == 0.0
