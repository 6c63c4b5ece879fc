"""What the fleet does, as typed events and a typed snapshot.

`FleetEvent` is one step of an agent loop or of one attempt. `FleetEvents` fans every event
out to any number of subscribers (the progress display, `FleetMetrics`, a telemetry
sampler); a subscriber that raises is logged and the others still hear the event.
`FleetMetrics` is a subscriber that keeps the recent rates and distributions, and
`FleetSnapshot` is what it reports together with the queue's counts: the one typed status
of a fleet, for `coordinator status --json`, the orchestrator's `/v1/status`, `/metrics` and
dashboards.

`FleetSnapshot.to_json()` is flat where dashboards count: one number per task state, with
`claimed` shown as `running` (the name the dashboards and the TUI use), plus `backlog`,
`agents_busy`, `agents_idle`; the counts again under `tasks`, and the rates, distributions,
clock and the running tasks (`running_tasks`: each with its agent, attempt and lease), are
nested, so a panel that shows every top-level number shows only counts. A running fleet
publishes it (`FleetStatusFile`) for `coordinator status` to show.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from coordinator.errors import QueueWriteError
from coordinator.layout import atomic_write
from coordinator.record import TaskRecord
from coordinator.task import TaskState

__all__ = [
    "Distribution",
    "EventKind",
    "FleetEvent",
    "FleetEvents",
    "FleetMetrics",
    "FleetSnapshot",
    "FleetStatusFile",
    "RunningTask",
]

log = logging.getLogger(__name__)

DISPLAY_STATE_NAMES: Mapping[TaskState, str] = {TaskState.CLAIMED: "running"}
"""The JSON key of a state where the dashboards' word differs from the queue's folder name."""


class EventKind(StrEnum):
    """What happened in the fleet."""

    AGENT_STARTED = "agent_started"  # an agent loop began (the fleet grew)
    AGENT_STOPPED = "agent_stopped"  # an agent loop ended (the fleet shrank or stopped)
    STARTED = "started"  # a claim was won and its attempt began
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the attempt failed; the task may be retried
    LEASE_LOST = "lease_lost"
    RELEASED = "released"


ATTEMPT_ENDS = frozenset(
    {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.LEASE_LOST, EventKind.RELEASED}
)
"""The kinds that end an attempt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetEvent:
    """One step of one agent loop or attempt.

    `at_s` is the fleet's monotonic clock. `claim_latency_s` (on `STARTED`) is how long the
    winning claim took; `duration_s` (on the kinds that end an attempt) how long it ran.
    `task_state` is where the task went, for finished attempts.
    """

    kind: EventKind
    agent: str
    task_id: str = ""
    attempt: int = 0
    detail: str = ""
    task_state: TaskState | None = None
    at_s: float = 0.0
    claim_latency_s: float | None = None
    duration_s: float | None = None


Subscriber = Callable[[FleetEvent], None]


class FleetEvents:
    """Fans each fleet event out to every subscriber, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: tuple[Subscriber, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(event)` for every event from now on; returns an unsubscribe."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)

        return unsubscribe

    def emit(self, event: FleetEvent) -> None:
        """Deliver `event`; a subscriber that raises is logged and the rest still hear it."""
        for subscriber in self._subscribers:  # a tuple: safe against concurrent subscribes
            try:
                subscriber(event)
            except Exception:
                log.exception("fleet event subscriber %r failed", subscriber)


@dataclass(frozen=True, slots=True, kw_only=True)
class Distribution:
    """Order statistics of recent samples, in seconds (all 0 when `count` is 0)."""

    count: int = 0
    mean_s: float = 0.0
    p50_s: float = 0.0
    p95_s: float = 0.0
    p99_s: float = 0.0
    max_s: float = 0.0

    @classmethod
    def of(cls, samples: list[float]) -> Distribution:
        if not samples:
            return cls()
        ordered = sorted(samples)

        def rank(q: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

        return cls(count=len(ordered), mean_s=sum(ordered) / len(ordered), p50_s=rank(0.5),
                   p95_s=rank(0.95), p99_s=rank(0.99), max_s=ordered[-1])

    def to_json(self) -> dict[str, float | int]:
        return {"count": self.count, "mean_s": self.mean_s, "p50_s": self.p50_s,
                "p95_s": self.p95_s, "p99_s": self.p99_s, "max_s": self.max_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningTask:
    """A claimed task at one moment: who runs it, which attempt, and its lease.

    `lease_expires_at_s` is wall-clock epoch seconds; `lease_remaining_s` how long the lease
    had left when the snapshot was taken (negative once it ran out and nobody reclaimed it
    yet); `lease_s` the length it is renewed for.
    """

    task_id: str
    agent: str
    attempt: int
    lease_expires_at_s: float
    lease_remaining_s: float
    lease_s: float

    @classmethod
    def of(cls, record: TaskRecord, *, now_s: float) -> RunningTask | None:
        """The running task `record` holds at wall time `now_s`, or None without a lease."""
        lease = record.lease
        if lease is None:
            return None
        return cls(task_id=record.task.id, agent=lease.agent, attempt=record.attempts + 1,
                   lease_expires_at_s=lease.expires_at,
                   lease_remaining_s=lease.expires_at - now_s, lease_s=lease.lease_s)

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent": self.agent, "attempt": self.attempt,
                "lease_expires_at_s": self.lease_expires_at_s,
                "lease_remaining_s": self.lease_remaining_s, "lease_s": self.lease_s}


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSnapshot:
    """The fleet at one moment.

    `tasks` counts tasks per state (every state present). `backlog` is the pending tasks
    (ready, backing off, or waiting on dependencies). The `*_per_min` rates count events in
    the last `window_s` seconds, scaled to a minute: claims won, attempts that ended done,
    and attempts that failed (failed, timed out or lost their lease). `claim_latency` is how
    long winning claims took; `attempt_duration` how long finished attempts ran;
    `heartbeat_gap` the time between an attempt's successive lease renewals (how late the
    fleet's heartbeats run). `lease_lost_total` counts attempts whose (live) agent lost its
    lease since the fleet started.
    `agents_target` is the live `FleetTunables.agents`; busy and idle count running loops.
    `taken_at_s` is wall-clock epoch seconds, `taken_at_monotonic_s` the fleet's monotonic
    clock, so a sampler can put this and the pipeline's snapshot on one clock. `running` are
    the claimed tasks with their agent, attempt and lease, soonest lease end first.
    """

    tasks: Mapping[TaskState, int]
    backlog: int
    claimed_per_min: float
    done_per_min: float
    failed_per_min: float
    claim_latency: Distribution
    attempt_duration: Distribution
    heartbeat_gap: Distribution
    lease_lost_total: int
    agents_target: int
    agents_busy: int
    agents_idle: int
    window_s: float
    taken_at_s: float
    taken_at_monotonic_s: float
    running: tuple[RunningTask, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; see the module docstring for the shape."""
        counts = {DISPLAY_STATE_NAMES.get(state, state.value): n
                  for state, n in self.tasks.items()}
        return {
            **counts,
            "tasks": counts,
            "backlog": self.backlog,
            "agents_busy": self.agents_busy,
            "agents_idle": self.agents_idle,
            "agents": {"target": self.agents_target, "busy": self.agents_busy,
                       "idle": self.agents_idle},
            "per_min": {"claimed": self.claimed_per_min, "done": self.done_per_min,
                        "failed": self.failed_per_min, "window_s": self.window_s},
            "claim_latency": self.claim_latency.to_json(),
            "attempt_duration": self.attempt_duration.to_json(),
            "heartbeat_gap": self.heartbeat_gap.to_json(),
            "leases": {"lost_total": self.lease_lost_total},
            "taken_at": {"wall_s": self.taken_at_s, "monotonic_s": self.taken_at_monotonic_s},
            "running_tasks": [task.to_json() for task in self.running],
        }


class FleetMetrics:
    """A `FleetEvents` subscriber that keeps recent rates and latency samples.

    `window_s` is the span the rates cover; `samples` bounds the samples kept per
    distribution (the most recent ones). `clock` must be the fleet's monotonic clock (event
    times are on it); `wall_clock` gives epoch seconds for the snapshot's timestamp.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        samples: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self._window_s = window_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._times: dict[str, deque[float]] = {"claimed": deque(), "done": deque(),
                                                "failed": deque()}
        self._claim_latency: deque[float] = deque(maxlen=samples)
        self._attempt_duration: deque[float] = deque(maxlen=samples)
        self._heartbeat_gap: deque[float] = deque(maxlen=samples)
        self._lease_lost = 0

    def __call__(self, event: FleetEvent) -> None:
        with self._lock:
            if event.kind == EventKind.STARTED:
                self._times["claimed"].append(event.at_s)
                if event.claim_latency_s is not None:
                    self._claim_latency.append(event.claim_latency_s)
            elif event.kind in ATTEMPT_ENDS:
                if event.kind == EventKind.SUCCEEDED:
                    self._times["done"].append(event.at_s)
                elif event.kind in (EventKind.FAILED, EventKind.LEASE_LOST):
                    self._times["failed"].append(event.at_s)
                if event.kind == EventKind.LEASE_LOST:
                    self._lease_lost += 1
                if event.duration_s is not None and event.kind != EventKind.RELEASED:
                    self._attempt_duration.append(event.duration_s)

    def heartbeat(self, gap_s: float) -> None:
        """An attempt renewed its lease `gap_s` after its previous renewal."""
        with self._lock:
            self._heartbeat_gap.append(gap_s)

    def snapshot(
        self, *, tasks: Mapping[TaskState, int], agents_target: int, agents_busy: int,
        agents_idle: int, running: Iterable[TaskRecord] = (),
    ) -> FleetSnapshot:
        """The snapshot now, with the queue's `tasks` counts, the fleet's agents, and the
        `running` (claimed) tasks' records, their leases timed on the wall clock."""
        now = self._clock()
        wall_now = self._wall_clock()
        leased = (RunningTask.of(record, now_s=wall_now) for record in running)
        running_tasks = tuple(sorted((task for task in leased if task is not None),
                                     key=lambda task: (task.lease_expires_at_s, task.task_id)))
        with self._lock:
            cutoff = now - self._window_s
            rates = {}
            for name, times in self._times.items():
                while times and times[0] <= cutoff:
                    times.popleft()
                # Events arrive from several threads, so `times` is only nearly in order.
                recent = sum(1 for t in times if t > cutoff)
                rates[name] = recent * 60.0 / self._window_s
            claim = Distribution.of(list(self._claim_latency))
            duration = Distribution.of(list(self._attempt_duration))
            gaps = Distribution.of(list(self._heartbeat_gap))
            lease_lost = self._lease_lost
        counts = {state: int(tasks.get(state, 0)) for state in TaskState}
        return FleetSnapshot(
            tasks=counts, backlog=counts[TaskState.PENDING],
            claimed_per_min=rates["claimed"], done_per_min=rates["done"],
            failed_per_min=rates["failed"], claim_latency=claim, attempt_duration=duration,
            heartbeat_gap=gaps, lease_lost_total=lease_lost,
            agents_target=agents_target, agents_busy=agents_busy, agents_idle=agents_idle,
            window_s=self._window_s, taken_at_s=wall_now, taken_at_monotonic_s=now,
            running=running_tasks,
        )


FLEET_STATUS_FILE = "fleet.json"  # in the folder's `.queue/`


class FleetStatusFile:
    """A running fleet's `FleetSnapshot.to_json()` in `.queue/fleet.json`, so `coordinator
    status` in another process shows the very numbers `/v1/status` and the dashboards show.

    `publish()` writes one snapshot (atomically, with the writer's pid); `start()` publishes
    every `every_s` seconds on a daemon thread until `stop()`, which removes the file: a
    fleet that is not running has no status to show. `read` ignores a file whose writer is
    gone (a fleet killed with SIGKILL leaves one behind).
    """

    def __init__(
        self, tasks_dir: str | os.PathLike[str], snapshot: Callable[[], FleetSnapshot], *,
        every_s: float = 2.0,
    ) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.path = Path(tasks_dir) / ".queue" / FLEET_STATUS_FILE
        self._snapshot = snapshot
        self._every_s = every_s
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        data = self._snapshot().to_json() | {"pid": os.getpid()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(str(self.path), json.dumps(data).encode())
        except (OSError, QueueWriteError) as exc:  # a full disk must not stop the fleet
            log.warning("fleet status not published to %s: %s", self.path, exc)

    def start(self) -> None:
        def run() -> None:
            while not self._stopped.wait(self._every_s):
                self.publish()

        self.publish()
        self._thread = threading.Thread(target=run, name="fleet-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @staticmethod
    def read(tasks_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The running fleet's last published snapshot for this folder, or None."""
        path = Path(tasks_dir) / ".queue" / FLEET_STATUS_FILE
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        try:
            os.kill(int(data["pid"]), 0)
        except (KeyError, ValueError, TypeError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # alive, another user's
        return data
