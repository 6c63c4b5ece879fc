"""The fleet: N agent loops that claim tasks and run agent processes for them.

Each loop is a thread that claims a task, starts the agent command in its own process
group (output straight into the attempt's log file, so a chatty agent never blocks), renews
the lease while the agent runs, kills the whole group on timeout or lost lease, runs the
task's acceptance commands, and reports the outcome to the queue and to agent memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from coordinator.agents import BUILTIN_PROFILES, AgentProfile
from coordinator.errors import LeaseLost
from coordinator.lease import Owner
from coordinator.queue import Claim, FolderQueue
from coordinator.task import TaskState
from memory_db.outcome import AttemptOutcome

log = logging.getLogger(__name__)

# Each command runs under the supervisor, which takes its process group down if we die.
_SUPERVISOR = str(Path(__file__).with_name("supervisor.py"))


class AttemptMemory(Protocol):
    """What the fleet records in agent memory (memory_db.AgentMemory satisfies it)."""

    def record_task(
        self, task_id: str, *, title: str, prompt: str, priority: str, state: str,
        created_by: str | None,
    ) -> None: ...

    def set_task_state(self, task_id: str, state: str) -> None: ...

    def start_attempt(
        self, task_id: str, *, attempt: int, agent: str, log_path: str | None
    ) -> int: ...

    def finish_attempt(
        self, attempt_id: int, *, outcome: AttemptOutcome, exit_code: int | None,
        reason: str | None = None,
    ) -> None: ...


class EventKind(StrEnum):
    """What happened in the fleet."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the attempt failed; the task may be retried
    LEASE_LOST = "lease_lost"
    RELEASED = "released"


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetEvent:
    """One step of one attempt, for progress displays and logs."""

    kind: EventKind
    task_id: str
    agent: str
    attempt: int
    detail: str = ""
    task_state: TaskState | None = None  # where the task went, for finished attempts


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSettings:
    """How the fleet runs; defaults live here."""

    agents: int = 1
    lease_s: float = 60.0
    heartbeat_s: float | None = None  # default: a third of the lease
    grace_s: float = 10.0  # how long running agents may finish after a stop request
    poll_s: float = 0.5  # how often an idle loop looks for work
    workdir: Path = field(default_factory=Path.cwd)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for every agent

    def __post_init__(self) -> None:
        if self.agents < 1:
            raise ValueError(f"agents must be >= 1, got {self.agents}")
        if self.lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {self.lease_s}")
        if self.heartbeat_s is not None and not 0 < self.heartbeat_s < self.lease_s:
            raise ValueError(
                f"heartbeat_s must be between 0 and lease_s ({self.lease_s}), "
                f"got {self.heartbeat_s}"
            )
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")

    @property
    def heartbeat_every_s(self) -> float:
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 3


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetResult:
    """How a run ended: counts of tasks by state when the fleet stopped."""

    counts: Mapping[TaskState, int]
    stopped_by_signal: bool

    @property
    def all_done(self) -> bool:
        return all(
            n == 0 for state, n in self.counts.items() if state != TaskState.DONE
        )


@dataclass(slots=True)
class _Outcome:
    exit_code: int | None
    kind: str  # exited | timed_out | lease_lost | stopped


class Fleet:
    """Runs `settings.agents` agent loops over `queue` with the `default` profile.

    A task's own `agent` field picks a profile from `profiles` (or the built-ins).
    `memory`, if given, records every task and attempt. `on_event` sees every step.
    `clock` is monotonic seconds, for timeouts.
    """

    def __init__(
        self,
        queue: FolderQueue,
        default: AgentProfile,
        *,
        settings: FleetSettings | None = None,
        profiles: Mapping[str, AgentProfile] | None = None,
        memory: AttemptMemory | None = None,
        on_event: Callable[[FleetEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.default = default
        self.settings = settings or FleetSettings()
        self.profiles = {**BUILTIN_PROFILES, **(profiles or {})}
        self.memory = memory
        self._on_event = on_event or (lambda event: None)
        self._clock = clock
        self._owner = Owner.current()
        self._stop = threading.Event()  # stop claiming
        self._kill = threading.Event()  # grace is over: kill and release
        self._drained = threading.Event()  # --until-empty found nothing left
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._stopped_by_signal = False

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Stop claiming; running agents get `grace_s`, then are killed and released."""
        if self._stop.is_set():
            self._kill.set()  # a second request: no more grace
            return
        self._stop.set()
        self._stopped_by_signal = True
        timer = threading.Timer(self.settings.grace_s, self._kill.set)
        timer.daemon = True
        timer.start()

    @contextlib.contextmanager
    def signals_handled(self) -> object:
        """Route SIGINT and SIGTERM to `request_stop` while running (main thread only)."""
        previous = {
            sig: signal.signal(sig, lambda *_: self.request_stop())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self, *, until_empty: bool = False) -> FleetResult:
        """Run the loops until stopped (or, with `until_empty`, until no work is left)."""
        threads = [
            threading.Thread(
                target=self._loop, args=(f"agent-{i}@{os.getpid()}", until_empty),
                name=f"agent-{i}", daemon=True,
            )
            for i in range(1, self.settings.agents + 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # stay responsive to signals in the main thread
        return FleetResult(
            counts=self.queue.counts(), stopped_by_signal=self._stopped_by_signal
        )

    # ------------------------------------------------------------------ the loop

    def _loop(self, agent: str, until_empty: bool) -> None:
        while not self._stop.is_set() and not self._drained.is_set():
            try:
                claim = self.queue.claim(agent, lease_s=self.settings.lease_s, owner=self._owner)
            except Exception:
                log.exception("%s: claiming failed; trying again", agent)
                claim = None
            if claim is None:
                if until_empty and self._nothing_left():
                    self._drained.set()
                    return
                self._stop.wait(self.settings.poll_s)
                continue
            with self._busy_lock:
                self._busy += 1
            try:
                self._attempt(agent, claim)
            except Exception:
                log.exception("%s: attempt at %s crashed; its lease will expire", agent,
                              claim.task.id)
            finally:
                with self._busy_lock:
                    self._busy -= 1

    def _nothing_left(self) -> bool:
        with self._busy_lock:
            if self._busy:
                return False
        if self.queue.counts()[TaskState.CLAIMED]:
            return False
        return self.queue.next_ready_at() is None

    def _attempt(self, agent: str, claim: Claim) -> None:
        task = claim.task
        log_path = self.queue.log_path(task.id, claim.attempt).resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started_at = time.time()
        self._emit(EventKind.STARTED, claim, agent)
        memory_id = self._remember_start(claim, agent, log_path)

        profile = self.profiles.get(task.agent) if task.agent else self.default
        cwd = (self.settings.workdir / task.workdir) if task.workdir else self.settings.workdir
        problem = None
        if profile is None:
            problem = f"unknown agent profile {task.agent!r}"
        elif not cwd.is_dir():
            problem = f"working directory {str(cwd)!r} does not exist"
        if problem is not None or profile is None:
            log_path.write_text(problem + "\n")
            self._finish(claim, agent, memory_id, log_path, started_at,
                         _Outcome(None, "exited"), reason=problem, permanent=True)
            return

        env = {
            **os.environ,
            **profile.env,
            **self.settings.env,
            "COORDINATOR_TASK_ID": task.id,
            "COORDINATOR_TASK_FILE": str(claim.source),
            "COORDINATOR_AGENT_ID": agent,
            "COORDINATOR_ATTEMPT": str(claim.attempt),
            "COORDINATOR_PROMPT": task.prompt,
        }
        deadline = self._clock() + task.timeout_s
        prompt_path = log_path.with_suffix(".prompt")
        prompt_path.write_text(task.prompt)
        with open(log_path, "ab") as log_file:
            command = profile.render(prompt=task.prompt, task_id=task.id)
            outcome = self._run(command, claim, cwd, env, log_file, prompt_path, deadline)
            reason = _describe(outcome, "agent", task.timeout_s)
            if outcome.kind == "exited" and outcome.exit_code == 0:
                for check in task.acceptance:
                    log_file.write(f"\n$ {check}  # acceptance\n".encode())
                    log_file.flush()
                    outcome = self._run(check, claim, cwd, env, log_file, None, deadline)
                    if outcome.kind != "exited" or outcome.exit_code != 0:
                        reason = _describe(outcome, f"acceptance command {check!r}",
                                           task.timeout_s)
                        if outcome.kind == "exited":
                            outcome = _Outcome(outcome.exit_code or 1, "acceptance")
                        break
        self._finish(claim, agent, memory_id, log_path, started_at, outcome, reason=reason)

    def _run(
        self,
        command: str,
        claim: Claim,
        cwd: Path,
        env: Mapping[str, str],
        log_file: object,
        stdin_path: Path | None,
        deadline: float,
    ) -> _Outcome:
        """Run one command in its own process group (under the supervisor), renewing the lease
        while it runs."""
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", _SUPERVISOR, str(os.getpid()), command], cwd=cwd,
                env=env, stdin=stdin, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
        try:
            self.queue.heartbeat(claim.task.id, claim.token, lease_s=self.settings.lease_s,
                                 agent_pgid=proc.pid)
            last_beat = self._clock()
            while True:
                if self._kill.is_set():
                    _kill_group(proc)
                    return _Outcome(None, "stopped")
                # Wake often enough to notice a stop, the deadline and the next heartbeat.
                wait_s = min(0.25, max(0.0, deadline - self._clock()))
                try:
                    return _Outcome(proc.wait(timeout=wait_s), "exited")
                except subprocess.TimeoutExpired:
                    pass
                now = self._clock()
                if now >= deadline:
                    _kill_group(proc)
                    return _Outcome(None, "timed_out")
                if now - last_beat >= self.settings.heartbeat_every_s:
                    self.queue.heartbeat(claim.task.id, claim.token,
                                         lease_s=self.settings.lease_s)
                    last_beat = now
        except LeaseLost as exc:
            _kill_group(proc)
            log.warning("%s", exc)
            return _Outcome(None, "lease_lost")
        finally:
            if proc.poll() is None:
                _kill_group(proc)

    def _finish(
        self,
        claim: Claim,
        agent: str,
        memory_id: int | None,
        log_path: Path,
        started_at: float,
        outcome: _Outcome,
        *,
        reason: str | None,
        permanent: bool = False,
    ) -> None:
        task_id, token = claim.task.id, claim.token
        args = {"log_path": str(log_path), "started_at": started_at}
        state: TaskState | None
        memory_outcome: AttemptOutcome
        try:
            if outcome.kind == "stopped":
                self.queue.release(task_id, token, reason="coordinator stopped")
                memory_outcome, state = AttemptOutcome.RELEASED, TaskState.PENDING
                kind = EventKind.RELEASED
            elif outcome.kind == "lease_lost":
                memory_outcome, state = AttemptOutcome.LEASE_LOST, None
                kind = EventKind.LEASE_LOST
            elif outcome.kind == "exited" and outcome.exit_code == 0:
                self.queue.complete(task_id, token, exit_code=0, **args)
                memory_outcome, state = AttemptOutcome.SUCCEEDED, TaskState.DONE
                kind = EventKind.SUCCEEDED
            else:
                memory_outcome = (AttemptOutcome.TIMED_OUT if outcome.kind == "timed_out"
                                  else AttemptOutcome.FAILED)
                state = self.queue.fail(
                    task_id, token, reason=reason or "failed", exit_code=outcome.exit_code,
                    outcome=memory_outcome, permanent=permanent, **args,
                )
                kind = EventKind.FAILED
        except LeaseLost as exc:
            reason = str(exc)
            memory_outcome, state = AttemptOutcome.LEASE_LOST, None
            kind = EventKind.LEASE_LOST
        self._emit(kind, claim, agent, detail=reason or "", task_state=state)
        self._remember_finish(claim, memory_id, memory_outcome, outcome.exit_code, reason, state)

    # ------------------------------------------------------------------ reporting

    def _emit(
        self, kind: EventKind, claim: Claim, agent: str, *, detail: str = "",
        task_state: TaskState | None = None,
    ) -> None:
        event = FleetEvent(kind=kind, task_id=claim.task.id, agent=agent,
                           attempt=claim.attempt, detail=detail, task_state=task_state)
        try:
            self._on_event(event)
        except Exception:
            log.exception("progress display failed")

    def _remember_start(self, claim: Claim, agent: str, log_path: Path) -> int | None:
        if self.memory is None:
            return None
        task = claim.task
        try:
            self.memory.record_task(
                task.id, title=task.title, prompt=task.prompt, priority=task.priority.value,
                state=TaskState.CLAIMED.value, created_by=task.created_by,
            )
            return self.memory.start_attempt(
                task.id, attempt=claim.attempt, agent=agent, log_path=str(log_path)
            )
        except Exception:
            # The queue is the source of truth; a memory outage must not stop the work.
            log.exception("agent memory: could not record the start of %s", task.id)
            return None

    def _remember_finish(
        self, claim: Claim, memory_id: int | None, outcome: AttemptOutcome,
        exit_code: int | None,
        reason: str | None, state: TaskState | None,
    ) -> None:
        if self.memory is None or memory_id is None:
            return
        try:
            self.memory.finish_attempt(memory_id, outcome=outcome, exit_code=exit_code,
                                       reason=reason)
            if state is not None:
                self.memory.set_task_state(claim.task.id, state.value)
        except Exception:
            log.exception("agent memory: could not record the end of %s", claim.task.id)


def _describe(outcome: _Outcome, what: str, timeout_s: float) -> str | None:
    if outcome.kind == "timed_out":
        return f"{what} timed out after {timeout_s:g}s"
    if outcome.kind == "lease_lost":
        return "lease lost (taken over or cancelled)"
    if outcome.kind == "stopped":
        return "coordinator stopped"
    if outcome.exit_code:
        if outcome.exit_code < 0:
            return f"{what} killed by signal {-outcome.exit_code}"
        return f"{what} exited with code {outcome.exit_code}"
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything it started, then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
