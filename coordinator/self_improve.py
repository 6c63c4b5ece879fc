"""`coordinator --self-improve`: the self-improvement loop running beside the fleet.

    pipeline + fleet snapshots ──Sampler──▶ bus ──▶ TuningController  (live parameters)
                                                └─▶ SelfImprovementLoop (anomalies, objectives)
                                                        └─▶ MetaTaskGenerator ──▶ task folder
    fleet ──gate = true──▶ GatedAttempts (worktree, ValidationGate, merge) ──▶ agent memory
                                   └─ outcome ──▶ MetaTaskGenerator.record_outcome (dead ends)

`SelfImprovement` composes these parts for one task folder; `coordinator.cli` builds it. One
process runs the loop per task folder (`LoopLock`), and per Redis queue however many machines
share it (`LeaderLease`); the loop's state goes to `.queue/self-improve.json` after every
tick, which `coordinator status` shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.errors import ConfigError, QueueWriteError
from coordinator.gating import GatedAttempts, MergeMode
from coordinator.layout import atomic_write
from coordinator.task import Task
from memory_db import AgentMemory, ModificationOutcome
from self_tune.gate import GateSettings, ValidationGate
from self_tune.journal import MemoryJournal
from self_tune.live import ConfigPort
from self_tune.metatasks import CREATED_BY, MetaTaskGenerator, Proposal
from self_tune.service import SelfTuning
from self_tune.telemetry import SnapshotSource

__all__ = [
    "LeaderLease",
    "LoopLock",
    "LoopLockHeld",
    "LoopTakeover",
    "SelfImproveSettings",
    "SelfImprovement",
    "parse_settings",
    "read_status",
    "status_path",
    "with_flags",
    "worktree_scope",
]

log = logging.getLogger(__name__)

STATUS_FILE = "self-improve.json"
STATIC_EVERY_S = 3600.0  # how often ruff and vulture look at the repository
TELEMETRY_EVERY_S = 60.0  # how often a snapshot is kept in the agent memory
TELEMETRY_KEEP = 10_000  # snapshots kept (about a week at one a minute)
LOCK_FILE = "self-improve.lock"


@dataclass(frozen=True, slots=True, kw_only=True)
class SelfImproveSettings:
    """`[self_improve]` and `[gate]` in coordinator.toml, and the matching flags.

    `repo` None means the git repository containing the working directory; `target_branch`
    None its current branch.
    """

    repo: Path | None = None
    target_branch: str | None = None
    merge: MergeMode = MergeMode.REVIEW
    telemetry_interval_s: float = 5.0
    telemetry_nats: str | None = None  # a NATS URL the telemetry is mirrored to
    telemetry_nats_subject: str | None = None  # its subject (None: orchestrator.telemetry)
    dry_run: bool = False
    static_findings: bool = True  # ruff and vulture over the repository, hourly, as tasks
    takeover_every_s: float = 10.0  # a process without the loop tries to take it this often
    lease_s: float = 30.0  # a Redis queue's loop lease: a dead leader's loop moves within it
    gate: GateSettings = field(default_factory=GateSettings)

    def __post_init__(self) -> None:
        for name in ("telemetry_interval_s", "takeover_every_s", "lease_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 < value < float("inf")
            ):
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.telemetry_nats_subject is not None:
            from self_tune.nats_bus import subject_problem

            problem = subject_problem(self.telemetry_nats_subject)
            if problem is not None:
                raise ConfigError(f"telemetry_nats_subject: {problem}")


def worktree_scope(tasks_dir: Path) -> str:
    """The gate scope of the loop for `tasks_dir`: the folder's name and a hash of its full
    path, so two folders' loops on one repository keep apart worktrees (`recover()` at one's
    start-up must not remove the other's)."""
    resolved = Path(tasks_dir).resolve()
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", resolved.name).strip("-") or "tasks"
    return f"{name[:40]}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"


def status_path(tasks_dir: Path) -> Path:
    return Path(tasks_dir) / ".queue" / STATUS_FILE


def read_status(tasks_dir: Path) -> dict[str, Any] | None:
    """The loop's last published state for this folder, or None if no loop ever ran here."""
    try:
        return json.loads(status_path(tasks_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _this_process() -> str:
    """How a loop names its process to others (the lock file, the status panel)."""
    return f"pid {os.getpid()} on {socket.gethostname()}"


class LoopLockHeld(Exception):
    """Another process runs the loop for this task folder (or queue); `holder` says which."""

    def __init__(self, holder: str, *, what: str = "this folder") -> None:
        self.holder = holder
        super().__init__(f"the self-improvement loop for {what} runs in {holder}")


class LoopLock:
    """One loop per task folder: an exclusive `flock` held for the process's life.

    The kernel drops the lock when its holder dies, however it dies, so a crashed loop never
    blocks the next one; the file names the holder for the message a second loop prints.
    """

    def __init__(self, tasks_dir: Path) -> None:
        self.path = Path(tasks_dir) / ".queue" / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `LoopLockHeld` naming who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LoopLockHeld(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{_this_process()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> LoopLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class LeaderLease:
    """One loop per Redis queue, whichever machines share it: a lease in Redis under `key`
    (`SET NX PX`), renewed every third of `lease_s` while the loop runs, deleted by its holder
    when the loop ends.

    A `flock` cannot span machines, and a holder that dies cannot delete anything: its lease
    simply runs out, and the next process to ask gets it. A holder that fails to renew in
    time (Redis unreachable for a whole lease, or the process stalled) has lost it: `renew()`
    says so, and the renewing thread calls `on_lost`, so two loops never act for one queue
    for longer than a renewal interval. The value names the holder for the message a second
    loop prints.
    """

    def __init__(self, client: Any, key: str, *, lease_s: float = 30.0) -> None:
        if not lease_s > 0:
            raise ValueError("lease_s must be > 0")
        self._client = client
        self.key = key
        self.lease_s = lease_s
        # unique per acquisition: a pid can repeat on another machine, and in this process
        self._value = f"{_this_process()} ({os.urandom(6).hex()})"
        self._renew = client.register_script(_RENEW)
        from coordinator.redis_queue import DELETE_IF_OURS

        self._release = client.register_script(DELETE_IF_OURS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.lease_s * 1000))

    def acquire(self) -> None:
        """Take the lease or raise `LoopLockHeld` naming who holds it."""
        if not self._client.set(self.key, self._value, nx=True, px=self._lease_ms):
            held = self._client.get(self.key)
            holder = held.decode(errors="replace") if held else "another process"
            raise LoopLockHeld(holder.rsplit(" (", 1)[0], what="this queue")

    def renew(self) -> bool:
        """Extend the lease by `lease_s`; False when it is no longer ours (it ran out and
        another process took it, or it was deleted)."""
        return bool(self._renew(keys=[self.key], args=[self._value, self._lease_ms]))

    def keep_renewing(
        self, on_lost: Callable[[str], None], *, every_s: float | None = None
    ) -> None:
        """Renew from a daemon thread every `every_s` (default a third of the lease) until
        `release`; `on_lost(why)` once if the lease is lost (a renewal refused, or failing for
        longer than the lease)."""
        interval = every_s if every_s is not None else self.lease_s / 3

        def renewing() -> None:
            lost_at = time.monotonic() + self.lease_s
            while not self._stop.wait(interval):
                try:
                    if self.renew():
                        lost_at = time.monotonic() + self.lease_s
                        continue
                    why = "another process holds it now"
                except Exception as exc:  # Redis unreachable: keep trying while it lasts
                    if time.monotonic() < lost_at:
                        log.warning("self-improve: the loop's lease was not renewed: %s", exc)
                        continue
                    why = f"it could not be renewed for {self.lease_s:g}s ({exc})"
                on_lost(why)
                return

        self._thread = threading.Thread(target=renewing, name="loop-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with contextlib.suppress(Exception):  # unreachable: it runs out by itself
            self._release(keys=[self.key], args=[self._value])

    def __enter__(self) -> LeaderLease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LoopTakeover:
    """In a process that runs only the gate: try the loop's `lock` (a `LoopLock` or a
    `LeaderLease`) every `every_s` from a daemon thread, and once its holder has let go or
    died, call `on_acquired` (which makes this process lead the loop). `stop` ends the
    attempts and releases the lock if it was taken."""

    def __init__(self, lock: LoopLock | LeaderLease, *, every_s: float,
                 on_acquired: Callable[[], None]) -> None:
        self._lock = lock
        self._every_s = every_s
        self._on_acquired = on_acquired
        self._acquired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-takeover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self._lock.acquire()
            except LoopLockHeld:
                continue
            except Exception as exc:  # e.g. Redis unreachable for now: try again later
                log.warning("self-improve: could not ask for the loop's lock: %s", exc)
                continue
            self._acquired = True
            self._on_acquired()
            return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._acquired:
            self._lock.release()


class SelfImprovement:
    """The loop for one task folder: `SelfTuning` with a `MetaTaskGenerator`, the gate the
    fleet runs gated tasks through, and the status file `coordinator status` reads.

    `sources` are what the sampler reads (the pipeline's and the fleet's snapshots); `config`
    the live parameters (None: detect and write tasks, tune nothing). With `runs_loop` False
    (another process runs the loop for this folder or queue) it is the gate alone: gated
    tasks this fleet takes are validated here, and nothing is watched, tuned or written until
    `lead()`. Call `start()` once the fleet and the pipeline exist, and `stop()` before they
    go.
    """

    def __init__(
        self,
        settings: SelfImproveSettings,
        *,
        tasks_dir: Path,
        open_task_ids: Callable[[], Iterable[str]],
        sources: Iterable[SnapshotSource],
        config: ConfigPort | None,
        memory: AgentMemory | None,
        gate_env: Mapping[str, str] | None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        runs_loop: bool = True,
    ) -> None:
        self.settings = settings
        self.runs_loop = runs_loop
        self.tasks_dir = Path(tasks_dir)
        self._clock = clock
        self.generator = MetaTaskGenerator(self.tasks_dir, memory=memory,
                                           open_task_ids=open_task_ids, clock=monotonic)
        self.tuning = SelfTuning(
            sources, config=config, generator=self.generator,
            interval_s=settings.telemetry_interval_s, dry_run=settings.dry_run,
            journal=MemoryJournal(memory) if memory is not None else None,
            on_tick=self._after_round, telemetry_nats=settings.telemetry_nats,
            telemetry_nats_subject=settings.telemetry_nats_subject, clock=clock,
            monotonic=monotonic)
        self._monotonic = monotonic
        self._next_scan_at = monotonic()  # the first round scans
        self._memory = memory
        self._next_store_at = monotonic()
        self.static_problems: dict[str, str] = {}
        self._started = self._ended = False
        self._state = threading.Lock()  # start, lead and stop may come from three threads
        gate = ValidationGate(settings.repo or Path.cwd(), target_branch=settings.target_branch,
                              settings=settings.gate, env=gate_env,
                              scope=worktree_scope(self.tasks_dir))
        self.gating = GatedAttempts(gate, merge=settings.merge, memory=memory,
                                    on_outcome=self._gated_outcome)

    def start(self) -> None:
        self.gating.gate.recover()  # worktrees a crashed run left behind
        with self._state:
            self._started = True
            if self.runs_loop and not self._ended:
                self._run_loop()

    def lead(self) -> bool:
        """Start the loop here, in a process that ran only the gate (the loop's holder went
        away); False once `stop` was called."""
        with self._state:
            if self._ended or self.runs_loop:
                return False
            self.runs_loop = True
            if self._started:
                self._run_loop()
            return True

    def step_down(self) -> bool:
        """Stop running the loop here, ready to `lead()` again (its lease was lost: another
        process leads now, or it could not be renewed); the gate goes on. False when this
        process was not leading, or once `stop` was called."""
        with self._state:  # held while the loop stops: a `lead` waits for it
            if self._ended or not self.runs_loop:
                return False
            self.runs_loop = False
            if self._started:
                self.tuning.stop(close=False)
                self._publish()
            return True

    def _run_loop(self) -> None:
        gate = self.gating.gate
        log.info("self-improve: watching, gate on %s (branch %s, merge %s)", gate.root,
                 gate.target_branch, self.settings.merge.value)
        self.tuning.start()
        self._publish()

    def stop(self) -> None:
        """End the loop (once; later calls do nothing). Gated attempts under way go on."""
        with self._state:  # a lease's thread may stop it while the fleet ends
            if self._ended:
                return
            self._ended = True
            running = self.runs_loop and self._started
        if running:
            self.tuning.stop()
            self._publish()

    def tick(self) -> None:
        """One round of the loop, then the status file (tests drive it with a fake clock)."""
        self.tuning.tick()

    def _after_round(self) -> None:
        if self.settings.static_findings and self._monotonic() >= self._next_scan_at:
            self._next_scan_at = self._monotonic() + STATIC_EVERY_S
            self.scan()
        snapshot = self.tuning.last_snapshot
        if (self._memory is not None and snapshot is not None
                and self._monotonic() >= self._next_store_at):
            self._next_store_at = self._monotonic() + TELEMETRY_EVERY_S
            self._memory.record_telemetry(snapshot.taken_at, snapshot.values,
                                          sources=snapshot.sources, keep=TELEMETRY_KEEP)
        self._publish()

    def scan(self) -> Proposal:
        """Run ruff and vulture over the repository; what they find becomes one task (batched
        and capped; the generator's cooldown, cap and dead ends apply)."""
        from self_tune.static import scan

        result = scan(self.gating.gate.root)
        self.static_problems = dict(result.problems)
        for problem in result.problems.values():
            log.warning("self-improve: static findings: %s", problem)
        findings = [f for tool in ("ruff", "vulture") for f in result.findings.get(tool, ())]
        if self.settings.dry_run and findings:
            proposal = Proposal(written=None, task_id=None, reason=(
                f"dry run: would propose a task on {len(findings)} static findings"))
        else:
            proposal = self.generator.propose_batch(findings)
        log.info("self-improve: static findings: %s", proposal.reason)
        return proposal

    def _gated_outcome(self, task: Task, outcome: ModificationOutcome) -> None:
        """A meta-task's gated attempt ended: count it against its theme (dead ends)."""
        if task.created_by != CREATED_BY:
            return
        finding = MetaTaskGenerator.finding_of(task.tags)
        if finding is not None and self.generator.record_outcome(task.id, outcome,
                                                                 finding=finding):
            log.warning("self-improve: %s is now a dead end", finding.theme)

    def status(self) -> dict[str, Any]:
        """What `coordinator status` and the dashboards show of the loop (JSON-ready)."""
        gate = self.gating.gate
        return {
            "holder": _this_process(),
            "updated_at": self._clock(),
            "merge": self.settings.merge.value,
            "repo": str(gate.root),
            "target_branch": gate.target_branch,
            "static_problems": dict(self.static_problems),
            **self.tuning.status(),
        }

    def _publish(self) -> None:
        path = status_path(self.tasks_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(str(path), json.dumps(self.status(), default=str).encode())
        except (OSError, QueueWriteError) as exc:
            log.warning("self-improve: the loop's status was not published: %s", exc)


def with_flags(settings: SelfImproveSettings, **flags: Any) -> SelfImproveSettings:
    """`settings` with the flags the user gave (None: not given) on top."""
    given = {k: v for k, v in flags.items() if v is not None and v is not False}
    if "merge" in given:
        given["merge"] = MergeMode(given["merge"])
    if "repo" in given:
        given["repo"] = Path(given["repo"])
    return dataclasses.replace(settings, **given)


_LOOP_KEYS = {"repo": str, "target_branch": str, "merge": str, "telemetry_interval_s": float,
              "telemetry_nats": str, "telemetry_nats_subject": str, "dry_run": bool,
              "static_findings": bool, "takeover_every_s": float, "lease_s": float}


def parse_settings(loop: Any, gate: Any, path: Path) -> SelfImproveSettings:
    """`[self_improve]` and `[gate]` of `path`; raises ConfigError naming the key at fault.

        [self_improve]
        repo = "."                 # the repository the fleet improves
        target_branch = "main"
        merge = "review"           # or "auto"
        telemetry_interval_s = 5
        telemetry_nats = "nats://127.0.0.1:4222"  # mirror the telemetry there (default: off)
        telemetry_nats_subject = "orchestrator.telemetry"
        dry_run = false
        static_findings = true     # ruff and vulture findings become tasks (hourly)
        takeover_every_s = 10      # without the loop (another process has it): retry this often
        lease_s = 30               # --queue: the loop's lease in Redis (renewed every third)

        [gate]
        commands = [{ name = "pytest", command = "pytest -q", timeout_s = 1800 },
                    { name = "ruff", command = "ruff check .", timeout_s = 300 }]
        bench = { command = "python bench.py", timeout_s = 600 }
        bench_margin = 0.05
        bench_lower_is_better = ["p95_ms"]
        bench_higher_is_better = ["rps"]
    """
    from self_tune.gate import GateCommand

    values: dict[str, Any] = {}
    for table, where in ((loop, "[self_improve]"), (gate, "[gate]")):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table")
    for key, value in loop.items():
        kind = _LOOP_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: [self_improve]: unknown key {key!r}; known: "
                              f"{', '.join(_LOOP_KEYS)}")
        ok = isinstance(value, bool) if kind is bool else (
            isinstance(value, int | float) and not isinstance(value, bool) if kind is float
            else isinstance(value, str))
        if not ok:
            raise ConfigError(f"{path}: [self_improve] {key}: expected {kind.__name__}, "
                              f"got {value!r}")
        values[key] = value
    if "merge" in values and values["merge"] not in tuple(MergeMode):
        raise ConfigError(f"{path}: [self_improve] merge: expected 'auto' or 'review', got "
                          f"{values['merge']!r}")

    def command(spec: Any, where: str, default_name: str) -> GateCommand:
        if not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
            raise ConfigError(f"{path}: [gate] {where}: needs command = \"...\"")
        extra = set(spec) - {"name", "command", "timeout_s"}
        if extra:
            raise ConfigError(f"{path}: [gate] {where}: unknown key(s) {', '.join(sorted(extra))}")
        try:
            return GateCommand(name=str(spec.get("name", default_name)), command=spec["command"],
                               timeout_s=float(spec.get("timeout_s", 900.0)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: [gate] {where}: {exc}") from None

    gate_values: dict[str, Any] = {}
    for key, value in gate.items():
        if key == "commands":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: [gate] commands: expected a non-empty list of tables")
            gate_values["commands"] = tuple(command(c, f"commands[{i}]", f"check{i + 1}")
                                            for i, c in enumerate(value))
        elif key == "bench":
            gate_values["bench"] = command(value, "bench", "bench")
        elif key == "bench_margin":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{path}: [gate] bench_margin: expected a number, got {value!r}")
            gate_values["bench_margin"] = float(value)
        elif key in ("bench_lower_is_better", "bench_higher_is_better"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: [gate] {key}: expected a list of metric names")
            gate_values[key] = tuple(value)
        else:
            raise ConfigError(f"{path}: [gate]: unknown key {key!r}; known: commands, bench, "
                              "bench_margin, bench_lower_is_better, bench_higher_is_better")
    try:
        gate_settings = GateSettings(**gate_values)
    except ValueError as exc:
        raise ConfigError(f"{path}: [gate]: {exc}") from None
    if "repo" in values:
        values["repo"] = (path.parent / values["repo"]).resolve()
    if "merge" in values:
        values["merge"] = MergeMode(values["merge"])
    return SelfImproveSettings(**values, gate=gate_settings)
