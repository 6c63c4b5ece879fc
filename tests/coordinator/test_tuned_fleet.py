"""The fleet's two self-tuned parameters: a change the `TuningController` makes (from a
snapshot that calls for it) changes what the fleet does — more agent loops, longer leases.

The pipeline's ten are in tests/orchestrator/test_tuned_parameters.py.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from coordinator.agents import resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.metrics import EventKind, FleetEvent
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from orchestrator.config import LiveConfig
from self_tune.controller import TuningController
from self_tune.experiment import ExperimentSettings
from self_tune.journal import Change, ChangeKind
from self_tune.live import LocalConfig
from self_tune.telemetry import TelemetrySnapshot

WAIT_S = 30.0  # upper bound on waiting for an event; a passing test takes far less


def tune(live: LiveConfig[FleetTunables], name: str, values: Mapping[str, float]) -> Change:
    controller = TuningController(LocalConfig(live), only=[name],
                                  experiments=ExperimentSettings(min_change=math.inf))
    (change,) = controller.step(TelemetrySnapshot(taken_at=0.0, values=dict(values)))
    assert change.kind is ChangeKind.TUNED and change.applied
    assert getattr(live.current, name) == change.new
    return change


class Running:
    """Fleet events, and a wait for how many attempts run at once."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.events: list[FleetEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: FleetEvent) -> None:
        with self._changed:
            self.events.append(event)
            if event.kind == EventKind.STARTED:
                self.busy.add(event.agent)
            elif event.task_id:
                self.busy.discard(event.agent)
            self._changed.notify_all()

    def wait_for(self, condition) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, timeout=WAIT_S)


def gated_fleet(tmp_path: Path, live: LiveConfig[FleetTunables], tasks: int):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(tasks):
        (folder / f"t{i}.toml").write_text(f'prompt = "{i}"\n')
    go = tmp_path / "go"
    running = Running()
    fleet = Fleet(
        FolderQueue(folder, retry_backoff_s=0),
        resolve_profile(f"while [ ! -e {go} ]; do sleep 0.02; done", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        tunables=lambda: live.current, on_event=running,
    )
    thread = threading.Thread(target=fleet.run, kwargs={"until_empty": True})
    thread.start()
    return fleet, running, go, thread


def test_agents_raised_by_the_tuner_start_another_agent_loop(tmp_path: Path) -> None:
    """A backlog no idle agent takes: the tuner goes from 1 agent to 2, and two tasks run at
    once where one did."""
    live = LiveConfig(FleetTunables(agents=1))
    fleet, running, go, thread = gated_fleet(tmp_path, live, 3)
    try:
        running.wait_for(lambda: len(running.busy) == 1)
        change = tune(live, "agents", {"fleet.backlog": 2.0, "fleet.agents_idle": 0.0,
                                       "fleet.attempt_duration.p50_s": 600.0})
        assert (change.old, change.new) == (1, 2)
        running.wait_for(lambda: len(running.busy) == 2)
    finally:
        go.touch()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert fleet.queue.counts()[TaskState.DONE] == 3


def test_lease_raised_by_the_tuner_gives_the_next_claim_a_longer_lease(tmp_path: Path) -> None:
    """A live agent lost its lease: the tuner lengthens leases from 60 s to 90 s, and the
    fleet's next claim holds its task for 90 s."""
    live = LiveConfig(FleetTunables(lease_s=60.0))
    change = tune(live, "lease_s", {"fleet.leases.lost_per_s": 0.1})
    assert (change.old, change.new) == (60.0, 90.0)
    fleet, running, go, thread = gated_fleet(tmp_path, live, 1)
    try:
        running.wait_for(lambda: len(running.busy) == 1)
        lease = fleet.queue.get("t0").lease
        assert lease is not None
        assert 80.0 < lease.expires_at - time.time() <= 90.0
    finally:
        go.touch()
        thread.join(WAIT_S)
    assert fleet.queue.counts()[TaskState.DONE] == 1


def test_a_real_fleets_snapshot_carries_what_the_fleet_laws_read(tmp_path: Path) -> None:
    """Flattened as the sampler does, a running fleet's snapshot has the backlog, idle
    agents, attempt duration, heartbeat gaps and lease losses the laws are driven by."""
    from self_tune.sources import FleetSource

    live = LiveConfig(FleetTunables(agents=1, lease_s=0.6))  # a renewal every 0.2 s
    fleet, running, go, thread = gated_fleet(tmp_path, live, 2)
    try:
        running.wait_for(lambda: len(running.busy) == 1)
        deadline = time.monotonic() + WAIT_S
        while fleet.snapshot().heartbeat_gap.count < 3:
            assert time.monotonic() < deadline, "no heartbeats measured"
            time.sleep(0.05)
        values = FleetSource(lambda: fleet.snapshot().to_json()).read()
    finally:
        go.touch()
        thread.join(WAIT_S)
    assert values["fleet.backlog"] == 1.0 and values["fleet.agents_idle"] == 0.0
    assert 0.15 < values["fleet.heartbeat_gap.p99_s"] < 5.0
    assert values["fleet.leases.lost_total"] == 0.0
    assert "fleet.attempt_duration.p50_s" in values
