"""`RedisQueue`: a `TaskQueue` in Redis, shared by processes on any number of machines.

The rules are `MemoryQueue`'s (records, typed events, fencing, backoffs, dependencies), run
on a local copy of the records, under one queue-wide lock held in Redis:

    lock    SET <prefix>lock <random> NX PX <lock_lease_s>   (waits, then `LockTimeout`)
    sync    what changed since this process last looked: <prefix>version, then the ids in
            <prefix>changes scored above it, and each one's log (LRANGE <prefix>log:<id>)
    rules   the `MemoryQueue` method, on the synced records
    commit  one Lua script, only while the lock is still ours: RPUSH each new event (the
            JSON of a `FolderQueue` log line) to its task's log, INCR the version, ZADD the
            changed ids at it
    unlock  DEL <prefix>lock, only while it is still ours

So exactly one claimer gets each task (claims are serialised by the lock), a crashed holder
of the lock blocks nobody for longer than `lock_lease_s`, and one whose lease ran out
mid-operation commits nothing (the script refuses: the operation raises `LockTimeout` and
its effect never happened). A crashed agent's task comes back when its lease expires;
`reclaim_expired` also takes it back at once when the agent's owner process is on this
machine and dead (`Owner.is_dead`). Nothing is lost: a task's log is appended, never
rewritten, and lives in Redis until the keys are deleted (Redis persistence — RDB or AOF —
decides what survives a restart of Redis itself).

Tasks arrive through `add`, and, with an `inbox` folder, as task files dropped into it (the
same files, checked the same way, as a `FolderQueue`'s): `ingest()` (which every claim runs
first) creates a file's tasks in Redis, then moves it to `inbox/sources/`; a file that fails
a check moves to `inbox/rejected/` beside `<file>.error` naming the file, line and field.
Each machine can have its own inbox: what lands in any of them joins the one queue. Attempt
logs are files under `logs_dir` on the machine whose agent wrote them. Leases are wall-clock
times: the machines' clocks must agree to well within a lease. Every operation costs a few
round trips to Redis and they are serialised: thousands of operations per second on a local
Redis, plenty for agents whose tasks take minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from coordinator.errors import LockTimeout, QueueUnreachable, TaskFileError
from coordinator.eventlog import encode
from coordinator.events import Created, QueueEvent, event_from_json
from coordinator.ingest import check_new_tasks, defined_ids, free_name
from coordinator.layout import atomic_write
from coordinator.lease import Owner
from coordinator.memory_queue import MemoryQueue
from coordinator.record import Claim, IngestResult, RejectedFile, TaskRecord
from coordinator.task import Priority, Task, TaskState, parse_task_file
from memory_db.outcome import AttemptOutcome

__all__ = ["RedisQueue"]

_QUEUE = "(the queue)"  # what LockTimeout names: the lock is the whole queue's

# KEYS: lock, version, changes, seq, cleared, rejected. ARGV: lock token, prefix, new seq,
# the number of events, the number of ids cleared, then (task id, event JSON) pairs, then the
# ids cleared, then the ids only rejected files defined.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local version = redis.call('INCR', KEYS[2])
local events = tonumber(ARGV[4])
local cleared = tonumber(ARGV[5])
for i = 0, events - 1 do
  local id = ARGV[6 + 2 * i]
  redis.call('RPUSH', ARGV[2] .. 'log:' .. id, ARGV[7 + 2 * i])
  redis.call('ZADD', KEYS[3], version, id)
end
redis.call('SET', KEYS[4], ARGV[3])
local first = 6 + 2 * events
for i = first, first + cleared - 1 do redis.call('SADD', KEYS[5], ARGV[i]) end
for i = first + cleared, #ARGV do redis.call('SADD', KEYS[6], ARGV[i]) end
return version
"""

DELETE_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""KEYS[1] deleted only while it still holds ARGV[1]: a lock or lease let go by its holder."""


class RedisQueue(MemoryQueue):
    """A `TaskQueue` in the Redis at `url`, under the keys starting with `prefix` (one queue
    per prefix). `lock_lease_s` bounds how long a crashed process can hold the queue's lock;
    `lock_timeout_s` how long an operation waits for it (on `monotonic`, pausing with
    `sleep`). `clock` is wall seconds (leases and backoffs); `logs_dir` is where this
    machine's fleet writes attempt logs. `inbox` is the folder task files are dropped into
    (None: tasks come only through `add`); `agents` the profile names a task file may name;
    `on_ingest` is called with every ingest pass that accepted something. Raises ImportError
    without the `redis` package."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "coordinator:tasks:",
        clock: Callable[[], float] = time.time,
        retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        logs_dir: Path | str = "logs",
        lock_lease_s: float = 10.0,
        lock_timeout_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        inbox: Path | str | None = None,
        agents: Collection[str] | None = None,
        on_ingest: Callable[[IngestResult], None] | None = None,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # an optional dependency: say which
            raise ImportError(
                "RedisQueue needs the redis package: pip install 'prompt-orchestrator[redis]'"
            ) from exc
        if not lock_lease_s > 0 or not lock_timeout_s > 0:
            raise ValueError("lock_lease_s and lock_timeout_s must be > 0")
        super().__init__(
            clock=clock,
            retry_backoff_s=retry_backoff_s,
            max_backoff_s=max_backoff_s,
            logs_dir=logs_dir,
        )
        self._redis = redis.Redis.from_url(url)
        self._redis_error: type[Exception] = redis.RedisError
        connection = self._redis.connection_pool.connection_kwargs
        self.where = (
            f"{connection.get('host', connection.get('path', '?'))}:"
            f"{connection.get('port', '')}/{connection.get('db', 0)}"
        )
        """Where the queue is (host:port/db; never the URL's password)."""
        self.prefix = prefix
        """The queue's keys start with it (others that belong to the queue may use it too)."""
        self.client = self._redis
        """The Redis connection (the self-improvement loop keeps its lease through it)."""
        self._keys = [
            prefix + k for k in ("lock", "version", "changes", "seq", "cleared", "rejected")
        ]
        self._commit = self._redis.register_script(_COMMIT)
        self._unlock = self._redis.register_script(DELETE_IF_OURS)
        self._lock_lease_ms = max(1, round(lock_lease_s * 1000))
        self._lock_timeout_s = lock_timeout_s
        self._monotonic, self._sleep = monotonic, sleep
        self._depth = 0  # nested operations (claim reclaims first) share one lock and commit
        self._token = b""
        self._synced = 0  # the version this copy of the records is at
        self._folded: dict[str, int] = {}  # how many events of each task's log it holds
        self._events: list[tuple[str, QueueEvent]] = []
        self._newly_cleared: list[str] = []
        self._newly_rejected: list[str] = []
        self._guard = threading.RLock()  # MemoryQueue's lock is taken inside each method
        self.root = Path(inbox) if inbox is not None else None
        """The inbox folder (where `sources/` and `rejected/` are), or None."""
        self._agents = agents
        self._on_ingest = on_ingest

    def close(self) -> None:
        self._redis.close()

    # ------------------------------------------------------------------ the operation

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        with self._guard:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._acquire()
            except self._redis_error as exc:
                raise QueueUnreachable(self.where, exc) from exc
            self._depth = 1
            try:
                self._sync()
                yield
                self._commit_changes()
            except self._redis_error as exc:
                self._forget_local_changes()
                raise QueueUnreachable(self.where, exc) from exc
            except BaseException:
                self._forget_local_changes()
                raise
            finally:
                self._depth = 0
                self._release()

    def _acquire(self) -> None:
        token = secrets.token_hex(16).encode()
        lock = self._keys[0]
        deadline = self._monotonic() + self._lock_timeout_s
        pause = 0.001
        while not self._redis.set(lock, token, nx=True, px=self._lock_lease_ms):
            if self._monotonic() >= deadline:
                raise LockTimeout(_QUEUE, self._lock_timeout_s)
            self._sleep(pause)  # another process's operation: a few milliseconds
            pause = min(pause * 2, 0.05)
        self._token = token

    def _release(self) -> None:
        with contextlib.suppress(Exception):  # it expires by itself in lock_lease_s
            self._unlock(keys=[self._keys[0]], args=[self._token])

    def _sync(self) -> None:
        """Bring the local records up to what Redis holds: the ids anyone changed since the
        last sync, then the events each one's log gained since (logs are only appended to,
        so a task heartbeating for days costs its new events, not its history)."""
        _, version_key, changes, seq, cleared, rejected = self._keys
        version = int(self._redis.get(version_key) or 0)
        if version == self._synced:
            return
        ids = [i.decode() for i in self._redis.zrangebyscore(changes, f"({self._synced}", version)]
        with self._redis.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.lrange(f"{self.prefix}log:{task_id}", self._folded.get(task_id, 0), -1)
            pipe.get(seq)
            pipe.smembers(cleared)
            pipe.smembers(rejected)
            *logs, seq_value, cleared_ids, rejected_ids = pipe.execute()
        for task_id, lines in zip(ids, logs, strict=True):
            events = [event_from_json(json.loads(line)) for line in lines]
            if not events:
                continue
            record = self._records.get(task_id)
            if task_id in self._folded and record is not None:
                for event in events:
                    record = record.apply(event)
            else:
                record = TaskRecord.from_events(events)
            self._put(record)
            self._folded[task_id] = self._folded.get(task_id, 0) + len(events)
        self._seq = int(seq_value or 0)
        self._cleared = {i.decode() for i in cleared_ids}
        self._rejected_ids = {i.decode() for i in rejected_ids}
        self._synced = version

    def _commit_changes(self) -> None:
        if not self._events and not self._newly_cleared and not self._newly_rejected:
            return
        args: list[Any] = [
            self._token, self.prefix, self._seq, len(self._events), len(self._newly_cleared)
        ]
        for task_id, event in self._events:
            args += [task_id, encode(event).rstrip(b"\n")]  # a FolderQueue log's line
        args += self._newly_cleared
        args += self._newly_rejected
        version = self._commit(keys=self._keys, args=args)
        if version == -1:  # our lease on the lock ran out and someone may have changed things
            raise LockTimeout(_QUEUE, self._lock_lease_ms / 1000)
        for task_id, _ in self._events:  # applied here already, and now in the log too
            self._folded[task_id] = self._folded.get(task_id, 0) + 1
        self._rejected_ids.update(self._newly_rejected)
        self._events.clear()
        self._newly_cleared.clear()
        self._newly_rejected.clear()
        self._synced = int(version)

    def _forget_local_changes(self) -> None:
        """The operation did not commit: drop the local copy (read again next time)."""
        if self._events or self._newly_cleared:
            self._records.clear()
            self._pending.clear()
            self._folded.clear()
            self._cleared = set()
            self._synced = 0
        self._events.clear()
        self._newly_cleared.clear()
        self._newly_rejected.clear()

    # ------------------------------------------------------------------ recording changes

    def _apply(self, task_id: str, event: QueueEvent) -> TaskRecord:
        self._events.append((task_id, event))
        return super()._apply(task_id, event)

    def _create(self, created: Created) -> None:
        self._events.append((created.task.id, created))
        super()._create(created)

    # ------------------------------------------------------------------ the protocol

    def add(
        self,
        prompt: str,
        *,
        task_id: str | None = None,
        priority: Priority = Priority.NORMAL,
        depends_on: tuple[str, ...] = (),
        **fields: Any,
    ) -> Task:
        with self._operation():
            return super().add(
                prompt, task_id=task_id, priority=priority, depends_on=depends_on, **fields
            )

    def claim(self, agent: str, *, lease_s: float, owner: Owner | None = None) -> Claim | None:
        self.ingest()  # a file just dropped is claimable now
        with self._operation():
            return super().claim(agent, lease_s=lease_s, owner=owner)

    def heartbeat(
        self,
        task_id: str,
        token: int,
        *,
        lease_s: float | None = None,
        agent_pgid: int | None = None,
    ) -> float:
        with self._operation():
            return super().heartbeat(task_id, token, lease_s=lease_s, agent_pgid=agent_pgid)

    def complete(
        self,
        task_id: str,
        token: int,
        *,
        exit_code: int | None = 0,
        log_path: str | None = None,
        started_at: float | None = None,
    ) -> None:
        with self._operation():
            super().complete(
                task_id, token, exit_code=exit_code, log_path=log_path, started_at=started_at
            )

    def fail(
        self,
        task_id: str,
        token: int,
        *,
        reason: str,
        exit_code: int | None = None,
        log_path: str | None = None,
        started_at: float | None = None,
        outcome: AttemptOutcome = AttemptOutcome.FAILED,
        permanent: bool = False,
    ) -> TaskState:
        with self._operation():
            return super().fail(
                task_id,
                token,
                reason=reason,
                exit_code=exit_code,
                log_path=log_path,
                started_at=started_at,
                outcome=outcome,
                permanent=permanent,
            )

    def release(self, task_id: str, token: int, *, reason: str = "released") -> None:
        with self._operation():
            super().release(task_id, token, reason=reason)

    def reclaim_expired(self) -> list[str]:
        with self._operation():
            return super().reclaim_expired()

    def cancel(self, task_id: str) -> TaskRecord:
        with self._operation():
            return super().cancel(task_id)

    def retry(self, task_id: str) -> TaskRecord:
        with self._operation():
            return super().retry(task_id)

    def clear(self, state: TaskState) -> list[str]:
        with self._operation():
            cleared = super().clear(state)
            self._newly_cleared += cleared
            return cleared

    def get(self, task_id: str) -> TaskRecord:
        with self._operation():
            return super().get(task_id)

    def records(self, state: TaskState | None = None) -> list[TaskRecord]:
        with self._operation():
            return super().records(state)

    def counts(self) -> dict[TaskState, int]:
        with self._operation():
            return super().counts()

    def next_ready_at(self) -> float | None:
        with self._operation():
            return super().next_ready_at()

    # ------------------------------------------------------------------ the inbox

    def ingest(self) -> IngestResult:
        """Accept or reject every task file in the inbox (nothing without one). A file is
        checked whole — it parses, names known agents, none of its ids is known, it closes
        no dependency cycle — before any of its tasks is created. Files move only once the
        tasks are committed: a crash in between leaves a file to be found again, and one
        whose tasks are all there already, as it defines them, just moves on."""
        files = self._inbox_files()
        if not files:
            return IngestResult()
        accepted: list[str] = []
        moves: list[tuple[Path, Path, str | None]] = []  # file, target, rejection reason
        with self._operation():
            for path in files:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue  # another process on this machine took it
                assert self.root is not None
                target = free_name(self.root / "sources", path.name)
                try:
                    tasks = parse_task_file(path, data=data, agents=self._agents)
                    if self._all_known_as(tasks):
                        moves.append((path, target, None))
                        continue
                    self._check_new(path, data, tasks)
                except TaskFileError as exc:
                    reason = str(exc).replace(str(path), path.name, 1)
                    moves.append((path, free_name(self.root / "rejected", path.name), reason))
                    # Its ids fail the tasks waiting for them, until a good file defines them.
                    self._newly_rejected += [i for i in defined_ids(path, data)
                                             if i not in self._records]
                    continue
                for task in tasks:
                    self._seq += 1
                    self._create(
                        Created(
                            task=task,
                            seq=self._seq,
                            source=f"sources/{target.name}",
                            at=self._clock(),
                        )
                    )
                accepted += [task.id for task in tasks]
                moves.append((path, target, None))
        rejected = [r for r in (self._move(*move) for move in moves) if r is not None]
        result = IngestResult(accepted=tuple(accepted), rejected=tuple(rejected))
        if accepted and self._on_ingest is not None:
            self._on_ingest(result)
        return result

    def rejected(self) -> list[RejectedFile]:
        if self.root is None or not (self.root / "rejected").is_dir():
            return []
        out = []
        for path in sorted((self.root / "rejected").glob("*.toml")):
            error = path.with_name(path.name + ".error")
            reason = error.read_text().strip() if error.exists() else "rejected"
            out.append(RejectedFile(name=path.name, path=path, reason=reason))
        return out

    def count(self, state: TaskState) -> int:
        if state == TaskState.REJECTED:
            return len(self.rejected())
        with self._operation():
            return super().count(state)

    def _inbox_files(self) -> list[Path]:
        if self.root is None:
            return []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [
            self.root / n
            for n in names
            if n.endswith(".toml") and not n.startswith(".") and (self.root / n).is_file()
        ]

    def _all_known_as(self, tasks: list[Task]) -> bool:
        """Whether every task of a file is created already, as the file defines it (its
        ingest committed, and a crash kept the file from moving)."""
        records = [self._records.get(task.id) for task in tasks]
        return all(r is not None and r.task == t for r, t in zip(records, tasks, strict=True))

    def _check_new(self, path: Path, data: bytes, tasks: list[Task]) -> None:
        def known_state(task_id: str) -> str | None:
            record = self._records.get(task_id)
            return None if record is None else str(record.state)

        def depends_on(task_id: str) -> tuple[str, ...]:
            record = self._records.get(task_id)
            return () if record is None else record.task.depends_on

        check_new_tasks(path, data, tasks, known_state=known_state, depends_on=depends_on)

    @staticmethod
    def _move(path: Path, target: Path, reason: str | None) -> RejectedFile | None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if reason is not None:
            atomic_write(str(target) + ".error", (reason + "\n").encode())
        try:
            os.rename(path, target)  # moved, never rewritten
        except FileNotFoundError:
            return None  # another process on this machine moved it
        if reason is None:
            return None
        return RejectedFile(name=target.name, path=target, reason=reason)
