"""The fleet follows its live tunables: loops come and go with `agents`, leases with `lease_s`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from coordinator.agents import resolve_profile
from coordinator.fleet import Fleet, FleetSettings, FleetTunables
from coordinator.metrics import EventKind, FleetEvent
from coordinator.queue import FolderQueue
from coordinator.task import TaskState
from orchestrator.config import LiveConfig

WAIT_S = 30.0  # upper bound on waiting for an event; a passing test takes far less


class Recorder:
    """Collects fleet events and lets a test wait for a condition over them."""

    def __init__(self) -> None:
        self.events: list[FleetEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: FleetEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, condition) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: condition(self.events), timeout=WAIT_S)

    def running(self) -> set[str]:
        """Agents whose latest attempt event is a start."""
        busy: set[str] = set()
        for event in self.events:
            if event.kind == EventKind.STARTED:
                busy.add(event.agent)
            elif event.task_id:
                busy.discard(event.agent)
        return busy


def gated_fleet(tmp_path: Path, tasks: int, *, agents: int, lease_s: float = 60.0):
    """A fleet whose agents block until the file `go` exists; returns (fleet, live config,
    recorder, go)."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(tasks):
        (folder / f"t{i}.toml").write_text(f'prompt = "{i}"\n')
    go = tmp_path / "go"
    recorder = Recorder()
    live = LiveConfig(FleetTunables(agents=agents, lease_s=lease_s))
    fleet = Fleet(
        FolderQueue(folder, retry_backoff_s=0),
        resolve_profile(f"while [ ! -e {go} ]; do sleep 0.02; done", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        tunables=lambda: live.current,
        on_event=recorder,
    )
    return fleet, live, recorder, go


def run_in_thread(fleet: Fleet) -> threading.Thread:
    thread = threading.Thread(target=fleet.run, kwargs={"until_empty": True})
    thread.start()
    return thread


def test_raising_agents_starts_more_agent_loops(tmp_path):
    """Setting agents from 1 to 3 while the fleet runs makes three tasks run at once."""
    fleet, live, recorder, go = gated_fleet(tmp_path, 3, agents=1)
    runner = run_in_thread(fleet)
    recorder.wait_for(lambda events: any(e.kind == EventKind.STARTED for e in events))
    assert len(recorder.running()) == 1
    live.set(agents=3)
    recorder.wait_for(lambda events: len(recorder.running()) == 3)
    go.touch()
    runner.join(WAIT_S)
    assert not runner.is_alive()
    assert fleet.queue.counts()[TaskState.DONE] == 3


def test_lowering_agents_lets_running_tasks_finish_then_stops_the_extra_loops(tmp_path):
    """From 3 agents to 1: the three running attempts succeed; later tasks run on one loop."""
    fleet, live, recorder, go = gated_fleet(tmp_path, 6, agents=3)
    runner = run_in_thread(fleet)
    recorder.wait_for(lambda events: len(recorder.running()) == 3)
    live.set(agents=1)
    changed_at = len(recorder.events)
    go.touch()
    runner.join(WAIT_S)
    assert not runner.is_alive()
    queue = fleet.queue
    assert queue.counts()[TaskState.DONE] == 6
    assert all(a.outcome == "succeeded" for r in queue.records() for a in r.history)
    later = [e for e in recorder.events[changed_at:] if e.kind == EventKind.STARTED]
    assert len(later) == 3
    assert {e.agent for e in later} == {later[0].agent}  # one loop did all the rest
    stopped = [e.agent for e in recorder.events if e.kind == EventKind.AGENT_STOPPED]
    assert len(stopped) == 3  # two retired after their task, one when the queue emptied


def wait_until_lease_at_most(queue: FolderQueue, task_id: str, lease_s: float) -> None:
    """Wait (bounded) until the task's lease runs out within `lease_s` from now."""
    deadline = time.monotonic() + WAIT_S
    while True:
        lease = queue.get(task_id).lease
        assert lease is not None
        if lease.expires_at - time.time() <= lease_s:
            return
        assert time.monotonic() < deadline, f"{task_id}'s lease never got down to {lease_s}s"
        time.sleep(0.02)


def test_a_new_lease_length_applies_to_the_next_heartbeat_and_claim(tmp_path):
    """After lease_s goes from 60 to 2, the running lease is renewed for 2 s, and the next
    claim is made for 2 s."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.toml").write_text(f'prompt = "{name}"\npriority = '
                                             f'"{"high" if name == "a" else "low"}"\n')
    recorder = Recorder()
    live = LiveConfig(FleetTunables(lease_s=60.0))
    fleet = Fleet(
        FolderQueue(folder, retry_backoff_s=0),
        resolve_profile(f"while [ ! -e {tmp_path}/go-$COORDINATOR_TASK_ID ]; do sleep 0.02; "
                        "done", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        tunables=lambda: live.current,
        on_event=recorder,
    )
    runner = run_in_thread(fleet)
    recorder.wait_for(lambda events: "a" in {e.task_id for e in events})
    lease = fleet.queue.get("a").lease
    assert lease is not None and lease.expires_at - time.time() > 30
    live.set(lease_s=2.0)
    wait_until_lease_at_most(fleet.queue, "a", 2.0)  # the next heartbeat, within 2/3 s
    (tmp_path / "go-a").touch()
    recorder.wait_for(lambda events: "b" in {e.task_id for e in events})
    wait_until_lease_at_most(fleet.queue, "b", 2.0)  # claimed and renewed for 2 s, not 60
    (tmp_path / "go-b").touch()
    runner.join(WAIT_S)
    assert fleet.queue.counts()[TaskState.DONE] == 2


def test_a_lease_shorter_than_the_attempt_never_lapses(tmp_path):
    """Lease 1 s, an agent working 2.5 s, another claimer reclaiming meanwhile: heartbeats
    (every third of the lease) keep the claim, and the task runs exactly once."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "long.toml").write_text('prompt = "x"\n')
    ran = tmp_path / "ran"
    recorder = Recorder()
    fleet = Fleet(
        FolderQueue(folder, retry_backoff_s=0),
        resolve_profile(f"echo once >> {ran}; sleep 2.5", {}),
        settings=FleetSettings(poll_s=0.05, workdir=tmp_path),
        tunables=lambda: FleetTunables(lease_s=1.0),
        on_event=recorder,
    )
    other = FolderQueue(folder, retry_backoff_s=0)
    stolen: list[str] = []
    done = threading.Event()

    def rival() -> None:
        recorder.wait_for(lambda events: any(e.kind == EventKind.STARTED for e in events))
        while not done.is_set():
            other.reclaim_expired()
            claim = other.claim("rival", lease_s=60)
            if claim is not None:
                stolen.append(claim.task.id)
            time.sleep(0.05)

    thief = threading.Thread(target=rival)
    thief.start()
    try:
        fleet.run(until_empty=True)
    finally:
        done.set()
        thief.join()
    assert stolen == []
    record = fleet.queue.get("long")
    assert record.state == TaskState.DONE
    assert [a.outcome for a in record.history] == ["succeeded"]
    assert ran.read_text() == "once\n"
