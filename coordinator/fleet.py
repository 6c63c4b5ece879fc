"""The fleet: agent loops that claim tasks and run agent processes for them.

Each loop is a thread that claims a task, starts the agent command under the supervisor
(`coordinator.supervisor`: its own process group, output straight into the attempt's log
file, so a chatty agent never blocks), renews the lease while the agent runs, ends it on
timeout or lost lease, runs the task's acceptance commands, and reports the outcome to the
queue and to agent memory. Whatever the outcome, nothing an agent started outlives its
attempt.

How many loops run and how long a lease lasts are `FleetTunables`, read live from a
`LiveConfig`: raising `agents` starts loops at once; lowering it lets the loops above the
new number finish their current task and stop (work in progress is never killed); a new
`lease_s` applies to the next claim and the next heartbeat, whose interval is derived from
the lease each time it is used.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from coordinator.agents import (
    BUILTIN_PROFILES,
    AgentProfile,
    agent_environment,
    check_env_names,
)
from coordinator.errors import LeaseLost
from coordinator.heartbeat_memory import HeartbeatMemory
from coordinator.lease import Owner
from coordinator.metrics import EventKind, FleetEvent, FleetEvents, FleetMetrics, FleetSnapshot
from coordinator.queue import Claim, FolderQueue
from coordinator.supervisor import Supervised
from coordinator.task import TaskState, workdir_escape
from memory_db.outcome import AttemptOutcome
from orchestrator.config import check_bounds, tunable

if TYPE_CHECKING:
    from typing import BinaryIO

    from coordinator.gating import GateConclusion, GatedAttempts
    from self_tune.gate import Worktree

__all__ = [
    "AttemptMemory",
    "Fleet",
    "FleetResult",
    "FleetSettings",
    "FleetTunables",
]

log = logging.getLogger(__name__)


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

    def record_heartbeat(self, attempt_id: int, *, lease_expires_at: float,
                         count: int = 1) -> None: ...


HEARTBEATS_PER_LEASE = 3
"""A lease is renewed this many times per lease length, so two lost heartbeats in a row
still leave it alive."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetTunables:
    """The fleet's live values, with their defaults (the one place they live).

    `agents` is how many agent loops run; `lease_s` how long a claim lasts unless renewed.
    """

    agents: int = tunable(1, low=1, high=256, unit="agents", integer=True)
    lease_s: float = tunable(60.0, low=0.5, high=86_400.0, unit="s")

    def __post_init__(self) -> None:
        check_bounds(self)

    @property
    def heartbeat_s(self) -> float:
        """How often a running attempt renews its lease: derived from `lease_s`."""
        return self.lease_s / HEARTBEATS_PER_LEASE


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSettings:
    """How the fleet runs, fixed for a run; defaults live here (the live values are in
    `FleetTunables`)."""

    grace_s: float = 10.0  # how long running agents may finish after a stop request
    poll_s: float = 0.5  # how often an idle loop looks for work
    workdir: Path = field(default_factory=Path.cwd)
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for every agent
    pass_env: tuple[str, ...] = ()  # names of our environment agents see beyond ALLOWED_ENV
    # More environment for one agent, given its id and the environment so far (None: none);
    # with an orchestrator, the header that names the agent (`traffic.agent_headers`).
    agent_env: Callable[[str, Mapping[str, str]], Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        check_env_names(self.pass_env)
        if self.grace_s < 0:
            raise ValueError(f"grace_s must be >= 0, got {self.grace_s}")
        if self.poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {self.poll_s}")


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


@dataclass(frozen=True, slots=True)
class _Started:
    wall_s: float  # recorded in the queue's history
    monotonic_s: float  # for the attempt's duration


@dataclass(slots=True)
class _Outcome:
    exit_code: int | None
    kind: str  # exited | not_started | timed_out | lease_lost | stopped
    error: str | None = None  # why it did not start, or what the shell said when it gave up


class Fleet:
    """Runs agent loops over `queue` with the `default` profile.

    `tunables` reads the live `FleetTunables` (how many loops, how long a lease) at each use:
    pass `lambda: live.current` for a `LiveConfig[FleetTunables]` and change it with
    `live.set(agents=…)` from any thread while the fleet runs (default: the defaults).
    A task's own `agent` field picks a profile from `profiles` (or the built-ins).
    `memory`, if given, records every task and attempt. `events` fans out every step
    (subscribe before `run`); `on_event` is a shorthand for one subscriber. `gating` runs
    tasks with `gate = true` in their own worktree, behind the validation gate. `clock` is
    monotonic seconds, for timeouts, heartbeats and the metrics.
    """

    def __init__(
        self,
        queue: FolderQueue,
        default: AgentProfile,
        *,
        settings: FleetSettings | None = None,
        tunables: Callable[[], FleetTunables] | None = None,
        profiles: Mapping[str, AgentProfile] | None = None,
        memory: AttemptMemory | None = None,
        events: FleetEvents | None = None,
        on_event: Callable[[FleetEvent], None] | None = None,
        gating: GatedAttempts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.gating = gating
        self.default = default
        self.settings = settings or FleetSettings()
        defaults = FleetTunables()
        self._tunables = tunables or (lambda: defaults)
        self.profiles = {**BUILTIN_PROFILES, **(profiles or {})}
        self.memory = memory
        self._heartbeats: HeartbeatMemory | None = None  # while `run` runs, with a memory
        self.events = events or FleetEvents()
        if on_event is not None:
            self.events.subscribe(on_event)
        self._clock = clock
        self.metrics = FleetMetrics(clock=clock)
        self.events.subscribe(self.metrics)
        self._owner = Owner.current()
        self._stop = threading.Event()  # stop claiming
        self._kill = threading.Event()  # grace is over: kill and release
        self._drained = threading.Event()  # --until-empty found nothing left
        self._wake = threading.Event()  # the tunables changed: look at the loops again
        self._lock = threading.Lock()  # guards the two maps below
        self._loops: dict[int, threading.Thread] = {}  # loop number -> its thread
        self._busy: dict[str, str] = {}  # agent -> the task it runs now
        self._stopped_by_signal = False
        # Stop signals received (by the handler) and acted on (by `run`'s loop); see
        # `signals_handled` for why the handler does nothing else.
        self._signals_received = 0
        self._signals_acted_on = 0
        self._announce: Callable[[str], None] | None = None

    # ------------------------------------------------------------------ control

    def request_stop(self) -> None:
        """Stop claiming; running agents get `grace_s`, then are killed and released."""
        if self._stop.is_set():
            self._kill.set()  # a second request: no more grace
            return
        self._stop.set()
        self._stopped_by_signal = True
        self._wake.set()
        timer = threading.Timer(self.settings.grace_s, self._kill.set)
        timer.daemon = True
        timer.start()

    @property
    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._stop.is_set()

    def running_tasks(self) -> dict[str, str]:
        """The tasks running now, by agent."""
        with self._lock:
            return dict(self._busy)

    def stop_notice(self) -> str:
        """What a stop request now does, in words for the person who asked."""
        running = len(self.running_tasks())
        if self._stop.is_set():
            return (f"stopping now: killing {running} running agent(s); their tasks go back "
                    "to pending")
        if not running:
            return "stopping: no agent is running"
        return (f"stopping: no new claims; waiting up to {self.settings.grace_s:g}s for "
                f"{running} running agent(s) to finish, then they are killed and their tasks "
                "go back to pending (press Ctrl-C again to do that now)")

    @contextlib.contextmanager
    def signals_handled(self, announce: Callable[[str], None] | None = None) -> Iterator[Fleet]:
        """Route SIGINT and SIGTERM to `request_stop` while `run` runs (main thread only);
        `announce` is told what each stop request does (`stop_notice`).

        The handler only counts the signal, and `run`'s loop acts on it within 0.2 s: a handler
        runs in the main thread between any two bytecodes, also while that thread holds
        `_lock` (it does around its look at the loops) or is inside `announce`, so a handler
        that took a lock there would wait for itself forever. One that did hung a Ctrl-C'd
        coordinator under load, its main thread and an agent loop both waiting on `_lock`.
        """

        def handle(*_: object) -> None:
            self._signals_received += 1

        self._announce = announce
        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._announce = None

    def _act_on_signals(self) -> None:
        """Each stop signal received since the last look: request the stop, then say what it
        does (once the notice is out, the next Ctrl-C already means "now")."""
        while self._signals_acted_on < self._signals_received:
            self._signals_acted_on += 1
            notice = self.stop_notice()
            self.request_stop()
            if self._announce is not None:
                self._announce(notice)

    def snapshot(self) -> FleetSnapshot:
        """The fleet now: the queue's counts, recent rates and latencies, agents busy/idle, and
        the running tasks with their agents and leases."""
        with self._lock:
            alive = sum(1 for thread in self._loops.values() if thread.is_alive())
            busy = len(self._busy)
        return self.metrics.snapshot(
            tasks=self.queue.counts(), agents_target=self._tunables().agents,
            agents_busy=busy, agents_idle=max(0, alive - busy),
            running=self.queue.records(TaskState.CLAIMED),
        )

    def run(self, *, until_empty: bool = False) -> FleetResult:
        """Run the loops until stopped (or, with `until_empty`, until no work is left).

        Follows `tunables.current.agents` while it runs: loops are started when it grows;
        when it shrinks, the loops numbered above it stop after their current task.
        """
        self._heartbeats = HeartbeatMemory(self.memory) if self.memory is not None else None
        try:
            while True:
                self._act_on_signals()
                self._wake.clear()
                if not self._stop.is_set() and not self._drained.is_set():
                    self._start_missing_loops(until_empty)
                with self._lock:
                    alive = [t for t in self._loops.values() if t.is_alive()]
                if not alive and (self._stop.is_set() or self._drained.is_set()):
                    break
                # Looking again every 0.2 s follows the tunables, and keeps the main thread
                # responsive to signals; a loop that ends wakes it at once.
                self._wake.wait(0.2)
        finally:
            self._act_on_signals()  # one that came as the loop ended still counts
            if self._heartbeats is not None:
                self._heartbeats.close()
        return FleetResult(
            counts=self.queue.counts(), stopped_by_signal=self._stopped_by_signal
        )

    def _start_missing_loops(self, until_empty: bool) -> None:
        """Start a loop for every number up to `agents` that has none."""
        target = self._tunables().agents
        with self._lock:
            for number in range(1, target + 1):
                thread = self._loops.get(number)
                if thread is not None and thread.is_alive():
                    continue
                thread = threading.Thread(
                    target=self._loop, args=(number, until_empty), name=f"agent-{number}",
                    daemon=True,
                )
                self._loops[number] = thread
                thread.start()

    # ------------------------------------------------------------------ the loop

    def _retired(self, number: int) -> bool:
        return number > self._tunables().agents

    def _loop(self, number: int, until_empty: bool) -> None:
        agent = f"agent-{number}@{os.getpid()}"
        self._emit(FleetEvent(kind=EventKind.AGENT_STARTED, agent=agent, at_s=self._clock()))
        try:
            self._claim_and_work(agent, number, until_empty)
        finally:
            self._emit(FleetEvent(kind=EventKind.AGENT_STOPPED, agent=agent,
                                  at_s=self._clock()))
            self._wake.set()

    def _claim_and_work(self, agent: str, number: int, until_empty: bool) -> None:
        while not self._stop.is_set() and not self._drained.is_set():
            if self._retired(number):
                return  # the fleet shrank: this loop's number is above the target
            asked_at = self._clock()
            try:
                claim = self.queue.claim(agent, lease_s=self._tunables().lease_s,
                                         owner=self._owner)
            except Exception:
                log.exception("%s: claiming failed; trying again", agent)
                claim = None
            if claim is None:
                if until_empty and self._nothing_left():
                    self._drained.set()
                    self._wake.set()
                    return
                self._stop.wait(self.settings.poll_s)
                continue
            with self._lock:
                self._busy[agent] = claim.task.id
            try:
                self._attempt(agent, claim, claim_latency_s=self._clock() - asked_at)
            except Exception:
                log.exception("%s: attempt at %s crashed; its lease will expire", agent,
                              claim.task.id)
            finally:
                with self._lock:
                    self._busy.pop(agent, None)

    def _nothing_left(self) -> bool:
        with self._lock:
            if self._busy:
                return False
        if self.queue.count(TaskState.CLAIMED):  # one folder, not every state's
            return False
        return self.queue.next_ready_at() is None

    def _attempt(self, agent: str, claim: Claim, *, claim_latency_s: float) -> None:
        task = claim.task
        log_path = self.queue.log_path(task.id, claim.attempt).resolve()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        started = _Started(wall_s=time.time(), monotonic_s=self._clock())
        self._emit(FleetEvent(kind=EventKind.STARTED, agent=agent, task_id=task.id,
                              attempt=claim.attempt, at_s=started.monotonic_s,
                              claim_latency_s=claim_latency_s))
        memory_id = self._remember_start(claim, agent, log_path)

        profile = self.profiles.get(task.agent) if task.agent else self.default
        cwd = (self.settings.workdir / task.workdir) if task.workdir else self.settings.workdir
        problem = None
        escape = workdir_escape(task.workdir) if task.workdir else None
        if profile is None:
            problem = f"unknown agent profile {task.agent!r}"
        elif escape is not None:  # a task accepted before workdirs were checked at ingest
            problem = f"workdir {escape}"
        elif not cwd.is_dir():
            problem = f"working directory {str(cwd)!r} does not exist"
        worktree = None
        if problem is None and task.gate:
            if self.gating is None:
                problem = ("the task has gate = true, but this coordinator runs no validation "
                           "gate (run it with --self-improve)")
            else:
                try:
                    worktree = self.gating.begin(task, claim.attempt)
                except Exception as exc:  # e.g. the repository is gone: fail, say why
                    problem = f"could not prepare the gate's worktree: {exc}"
                else:
                    cwd = worktree.path / task.workdir if task.workdir else worktree.path
        if problem is not None or profile is None:
            log_path.write_text(problem + "\n")
            self._finish(claim, agent, memory_id, log_path, started,
                         _Outcome(None, "exited"), reason=problem, permanent=True)
            return

        prompt_path = log_path.with_suffix(".prompt")
        prompt_path.write_text(task.prompt)
        env = {
            **agent_environment(os.environ, pass_env=self.settings.pass_env),
            **profile.env,
            **self.settings.env,
            "COORDINATOR_TASK_ID": task.id,
            "COORDINATOR_TASK_FILE": str(claim.source.resolve()),  # how orphans are found
            "COORDINATOR_AGENT_ID": agent,
            "COORDINATOR_ATTEMPT": str(claim.attempt),
            "COORDINATOR_PROMPT_FILE": str(prompt_path),
        }
        if self.settings.agent_env is not None:
            env.update(self.settings.agent_env(agent, env))
        if _fits_in_environment("COORDINATOR_PROMPT", task.prompt):
            env["COORDINATOR_PROMPT"] = task.prompt  # else the kernel would refuse (E2BIG)
        deadline = self._clock() + task.timeout_s
        with open(log_path, "ab") as log_file:
            command = profile.render(prompt=task.prompt, task_id=task.id)
            outcome = self._run(command, claim, memory_id, cwd, env, log_file, prompt_path,
                                deadline)
            reason = _describe(outcome, "agent", task.timeout_s)
            if outcome.kind == "exited" and outcome.exit_code == 0:
                for check in task.acceptance:
                    log_file.write(f"\n$ {check}  # acceptance\n".encode())
                    log_file.flush()
                    outcome = self._run(check, claim, memory_id, cwd, env, log_file, None,
                                        deadline)
                    if outcome.kind != "exited" or outcome.exit_code != 0:
                        reason = _describe(outcome, f"acceptance command {check!r}",
                                           task.timeout_s)
                        if outcome.kind == "exited":
                            outcome = _Outcome(outcome.exit_code or 1, "acceptance")
                        break
            if worktree is not None:
                outcome, reason = self._through_gate(claim, memory_id, worktree, outcome, reason,
                                                    log_file)
        self._finish(claim, agent, memory_id, log_path, started, outcome, reason=reason)

    def _through_gate(
        self, claim: Claim, memory_id: int | None, worktree: Worktree, outcome: _Outcome,
        reason: str | None, log_file: BinaryIO,
    ) -> tuple[_Outcome, str | None]:
        """Run the validation gate on a gated attempt's worktree, renewing the lease meanwhile.

        A stopped or lost attempt is not judged (it runs again from a fresh worktree); any
        other is, and the task is done only if the gate passed.
        """
        assert self.gating is not None
        gating, task = self.gating, claim.task
        if outcome.kind in ("stopped", "lease_lost"):
            gating.gate.release(worktree)
            return outcome, reason
        agent_passed = outcome.kind == "exited" and outcome.exit_code == 0
        log_file.write(b"\n$ validation gate\n")
        log_file.flush()
        result: list[GateConclusion] = []
        judge = threading.Thread(
            target=lambda: result.append(gating.conclude(
                task, worktree, agent_passed=agent_passed, agent_reason=reason or "")),
            name=f"gate-{task.id}", daemon=True)
        judge.start()
        try:
            while judge.is_alive():
                judge.join(timeout=self._tunables().heartbeat_s)
                if judge.is_alive():
                    self._renew(claim, memory_id)
        except LeaseLost as exc:
            judge.join()
            return _Outcome(None, "lease_lost"), str(exc)
        if not result:
            return _Outcome(1, "gate"), "the validation gate crashed (see the coordinator log)"
        conclusion = result[0]
        log_file.write(f"{conclusion.outcome}: {conclusion.reason}\n".encode())
        if agent_passed and not conclusion.passed:
            return _Outcome(1, "gate"), f"validation gate: {conclusion.reason}"
        return outcome, reason

    def _run(
        self,
        command: str,
        claim: Claim,
        memory_id: int | None,
        cwd: Path,
        env: dict[str, str],
        log_file: BinaryIO,
        stdin_path: Path | None,
        deadline: float,
    ) -> _Outcome:
        """Run one command under the supervisor, renewing the lease while it runs; whatever
        the outcome, nothing it started survives the return."""
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = Supervised(command, cwd=cwd, env=env, stdin=stdin, stdout=log_file)
        except OSError as exc:  # never started: fail the attempt now, with the real error
            error = _start_error(exc)
            log_file.write(f"could not start: {error}\n".encode())
            return _Outcome(None, "not_started", error)
        finally:
            if stdin_path:
                stdin.close()  # type: ignore[union-attr]
        try:
            self._renew(claim, memory_id, agent_pgid=proc.pid)
            last_beat = self._clock()
            while True:
                if self._kill.is_set():
                    return _Outcome(None, "stopped")
                # Wake often enough to notice a stop, the deadline and the next heartbeat.
                if proc.wait(min(0.25, max(0.0, deadline - self._clock()))):
                    code = proc.close()
                    return _Outcome(code, "exited", _shell_complaint(code, log_file))
                now = self._clock()
                if now >= deadline:
                    return _Outcome(None, "timed_out")
                if now - last_beat >= self._tunables().heartbeat_s:  # read live
                    self._renew(claim, memory_id)
                    self.metrics.heartbeat(self._clock() - last_beat)
                    last_beat = now
        except LeaseLost as exc:
            log.warning("%s", exc)
            return _Outcome(None, "lease_lost")
        finally:
            proc.close()

    def _renew(self, claim: Claim, memory_id: int | None, *,
               agent_pgid: int | None = None) -> None:
        """Renew the claim's lease for the live lease length (raises `LeaseLost`), and
        report the renewal to agent memory without waiting for it."""
        expires = self.queue.heartbeat(claim.task.id, claim.token,
                                       lease_s=self._tunables().lease_s, agent_pgid=agent_pgid)
        if self._heartbeats is not None and memory_id is not None:
            self._heartbeats.renewed(memory_id, expires)

    def _finish(
        self,
        claim: Claim,
        agent: str,
        memory_id: int | None,
        log_path: Path,
        started: _Started,
        outcome: _Outcome,
        *,
        reason: str | None,
        permanent: bool = False,
    ) -> None:
        task_id, token = claim.task.id, claim.token
        args = {"log_path": str(log_path), "started_at": started.wall_s}
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
        now = self._clock()
        self._emit(FleetEvent(kind=kind, agent=agent, task_id=task_id, attempt=claim.attempt,
                              detail=reason or "", task_state=state, at_s=now,
                              duration_s=now - started.monotonic_s))
        self._remember_finish(claim, memory_id, memory_outcome, outcome.exit_code, reason, state)

    # ------------------------------------------------------------------ reporting

    def _emit(self, event: FleetEvent) -> None:
        self.events.emit(event)

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
    if outcome.kind == "not_started":
        return f"could not start the {what}: {outcome.error}"
    if outcome.kind == "timed_out":
        return f"{what} timed out after {timeout_s:g}s"
    if outcome.kind == "lease_lost":
        return "lease lost (taken over or cancelled)"
    if outcome.kind == "stopped":
        return "coordinator stopped"
    if outcome.exit_code:
        if outcome.exit_code < 0:
            return f"{what} killed by signal {-outcome.exit_code}"
        said = f": {outcome.error}" if outcome.error else ""
        return f"{what} exited with code {outcome.exit_code}{said}"
    return None


# The kernel's limit on one argument or environment string (MAX_ARG_STRLEN, 32 pages).
_MAX_ARG_STRLEN = 32 * 4096


def _fits_in_environment(name: str, value: str) -> bool:
    """True if `name=value` is short enough to pass to a new process."""
    return len(name.encode()) + 1 + len(value.encode()) + 1 <= _MAX_ARG_STRLEN


def _start_error(exc: OSError) -> str:
    """`exc` as a person reads it, with what to do about an argument list too long."""
    text = f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)
    if exc.errno == errno.E2BIG:
        text += ("; the command (with {prompt} substituted) or the environment is over the "
                 "kernel's limit of 128 KiB per string: read a long prompt from stdin or "
                 "$COORDINATOR_PROMPT_FILE instead")
    return text


def _shell_complaint(code: int, log_file: BinaryIO) -> str | None:
    """For the shell's "not found" (127) and "not executable" (126), its last log line."""
    if code not in (126, 127):
        return None
    with contextlib.suppress(OSError), open(log_file.name, "rb") as log:
        log.seek(max(0, os.fstat(log.fileno()).st_size - 4096))
        lines = log.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else None
    return None

