"""The `coordinator` command: a thin layer over the queue, the fleet and agent memory.

Imports of anything heavy happen inside the commands, so `coordinator --help` stays fast.
Exit codes: 0 success; 1 the work did not all succeed (or nothing to claim); 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.errors import ConfigError, CoordinatorError
from coordinator.task import Priority, TaskState
from memory_db.errors import MemoryDBError

if TYPE_CHECKING:
    from coordinator.queue import FolderQueue, IngestResult, TaskRecord
    from coordinator.redis_queue import RedisQueue
    from coordinator.remember import MemoryOfAttempts
    from coordinator.settings import Settings
    from orchestrator.config import LiveConfig


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--self-improve" in argv and not _COMMANDS & set(argv):
        argv.insert(0, "run")  # `coordinator --self-improve` is `coordinator run --self-improve`
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except CoordinatorError as exc:
        print(f"coordinator: {exc}", file=sys.stderr)
        return 2
    except MemoryDBError as exc:  # agent memory's errors carry their own clear messages
        print(f"coordinator: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


# ---------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="Run a fleet of coding agents over a folder of TOML task files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _config_flag(parser, default=None)
    parser.add_argument(
        "--self-improve", action="store_true", help="the same as `coordinator run --self-improve`"
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    run = _command(sub, "run", _run, "claim and run tasks with a fleet of agents")
    run.add_argument("--agents", type=int, help="agent loops to run (default 1)")
    run.add_argument(
        "--agent",
        help="agent profile (echo, claude, a configured one) or a "
        "shell command; {prompt} and {task_id} are substituted, shell-quoted",
    )
    run.add_argument(
        "--until-empty",
        action="store_true",
        help="exit when nothing is claimable or running (exit 1 if any task did not end done)",
    )
    run.add_argument("--lease-s", type=float, help="lease length in seconds (default 60)")
    run.add_argument(
        "--grace-s",
        type=float,
        help="on SIGINT/SIGTERM, seconds running agents may finish (default 10)",
    )
    run.add_argument(
        "--workdir", type=Path, help="directory agents run in (a task's workdir is relative to it)"
    )
    run.add_argument(
        "--pass-env",
        action="append",
        metavar="NAME",
        help="let agents see this variable of our environment (repeatable); "
        "they get only PATH, HOME, USER, LOGNAME, SHELL, TMPDIR, TZ, TERM, LANG, "
        "LANGUAGE, LC_* and the COORDINATOR_* contract otherwise",
    )
    run.add_argument("--no-memory", action="store_true", help="do not record in agent memory")
    run.add_argument(
        "--orchestrator",
        metavar="start|URL",
        help="route the agents' LLM traffic through an orchestrator: 'start' runs "
        "one in this process (configured by PROVIDER, ANTHROPIC_API_KEY, PORT, … "
        "or orchestrator.env), a URL uses a running one",
    )
    _db_flag(run)
    loop = run.add_argument_group(
        "self-improvement",
        "run the loop beside the fleet: telemetry, tuning, meta-tasks for "
        "what degrades, and the validation gate for gated tasks ([self_improve] and [gate] in "
        "coordinator.toml)",
    )
    loop.add_argument(
        "--self-improve",
        action="store_true",
        help="run the self-improvement loop (starts an orchestrator unless "
        "--orchestrator URL names one)",
    )
    loop.add_argument(
        "--repo",
        type=Path,
        help="the git repository the fleet improves (default: the one "
        "containing the working directory)",
    )
    loop.add_argument(
        "--target-branch",
        help="branch gated changes merge into (default: the repository's current branch)",
    )
    loop.add_argument(
        "--merge",
        choices=["auto", "review"],
        help="merge a change that passed the gate at once, or keep its branch "
        "for `coordinator gate merge` (default review)",
    )
    loop.add_argument(
        "--telemetry-interval-s", type=float, help="seconds between telemetry samples (default 5)"
    )
    loop.add_argument(
        "--telemetry-nats",
        metavar="URL",
        help="publish every telemetry snapshot to this NATS server too (e.g. "
        "nats://127.0.0.1:4222), so other processes can watch them",
    )
    loop.add_argument(
        "--telemetry-nats-subject",
        metavar="SUBJECT",
        help="the NATS subject of --telemetry-nats (default orchestrator.telemetry)",
    )
    loop.add_argument(
        "--dry-run",
        action="store_true",
        help="detect and tune on paper only: write no task, change nothing",
    )

    status = _command(sub, "status", _status, "task counts, running tasks and rejected files")
    _json_flag(status)

    tasks = sub.add_parser("tasks", help="list, add, show, retry and cancel tasks")
    tasks_sub = tasks.add_subparsers(metavar="ACTION")
    lst = _command(tasks_sub, "list", _tasks_list, "list tasks")
    lst.add_argument("--state", choices=[s.value for s in TaskState], help="only this state")
    _json_flag(lst)
    add = _command(tasks_sub, "add", _tasks_add, "add a task (written atomically to the folder)")
    add.add_argument("prompt", help="what the agent is asked to do")
    add.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default="normal",
        help="claimed earlier when higher (default normal)",
    )
    add.add_argument("--id", dest="task_id", help="task id (default: generated)")
    add.add_argument(
        "--depends-on", nargs="+", default=[], metavar="ID", help="tasks that must be done first"
    )
    add.add_argument("--title", default="", help="a short name for listings")
    add.add_argument(
        "--acceptance",
        action="append",
        default=[],
        metavar="COMMAND",
        help="a shell command that must exit 0 after the agent (repeatable)",
    )
    add.add_argument("--max-attempts", type=int, help="failed attempts allowed (default 3)")
    add.add_argument("--timeout-s", type=float, help="seconds an attempt may run (default 600)")
    add.add_argument("--agent", help="the agent profile to run it with")
    add.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="TAG",
        help="a free label (repeatable)",
    )
    _memory_flags(add)
    show = _command(tasks_sub, "show", _tasks_show, "everything about one task")
    show.add_argument("task_id", metavar="ID", help="the task's id")
    _json_flag(show)
    retry = _command(tasks_sub, "retry", _tasks_retry, "send a failed/cancelled task back")
    retry.add_argument("task_id", metavar="ID", help="the task's id")
    _memory_flags(retry)
    cancel = _command(tasks_sub, "cancel", _tasks_cancel, "cancel a pending or running task")
    cancel.add_argument("task_id", metavar="ID", help="the task's id")
    _memory_flags(cancel)
    clear = _command(
        tasks_sub,
        "clear",
        _tasks_clear,
        "remove done, cancelled or rejected entries from the listings (kept "
        "under archive/, never deleted)",
    )
    clear.add_argument(
        "--state",
        required=True,
        choices=["done", "cancelled", "rejected"],
        help="which entries to remove",
    )
    clear.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    logs = _command(sub, "logs", _logs, "show (or follow) the output of a task's attempt")
    logs.add_argument("task_id", metavar="ID", help="the task's id")
    logs.add_argument("--attempt", type=int, help="which attempt (default the latest)")
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing output as the attempt writes it, until it ends",
    )

    claim = _command(sub, "claim", _claim, "claim the next task for an agent outside the fleet")
    claim.add_argument("--agent", required=True, help="the claiming agent's name")
    claim.add_argument("--lease-s", type=float, help="lease length in seconds (default 60)")
    _json_flag(claim)
    _memory_flags(claim)
    heartbeat = _command(sub, "heartbeat", _heartbeat, "renew a claim's lease")
    heartbeat.add_argument("task_id", metavar="ID", help="the claimed task's id")
    heartbeat.add_argument("--token", type=int, required=True, help="the claim's token")
    heartbeat.add_argument(
        "--lease-s",
        type=float,
        help="renew for this long (default: the length it was claimed with)",
    )
    _memory_flags(heartbeat)
    complete = _command(sub, "complete", _complete, "mark a claimed task done")
    complete.add_argument("task_id", metavar="ID", help="the claimed task's id")
    complete.add_argument("--token", type=int, required=True, help="the claim's token")
    _memory_flags(complete)
    fail = _command(sub, "fail", _fail, "report a failed attempt (retried up to max_attempts)")
    fail.add_argument("task_id", metavar="ID", help="the claimed task's id")
    fail.add_argument("--token", type=int, required=True, help="the claim's token")
    fail.add_argument("--reason", required=True, help="why it failed (shown in listings)")
    _memory_flags(fail)

    gate = sub.add_parser(
        "gate", help="changes that passed the validation gate and wait for review (--merge review)"
    )
    gate_sub = gate.add_subparsers(metavar="ACTION")
    gate_list = _command(gate_sub, "list", _gate_list, "branches waiting for review")
    _db_flag(gate_list)
    _json_flag(gate_list)
    for action, handler, text in (
        ("merge", _gate_merge, "merge a waiting branch"),
        ("discard", _gate_discard, "delete a waiting branch"),
    ):
        cmd = _command(gate_sub, action, handler, text)
        cmd.add_argument("task_id", metavar="ID", help="the task whose branch it is")
        cmd.add_argument(
            "--repo",
            type=Path,
            help="the repository (default: [self_improve] "
            "repo, or the one containing the working directory)",
        )
        _db_flag(cmd)

    memory = sub.add_parser("memory", help="read agent memory (read-only)")
    memory_sub = memory.add_subparsers(metavar="ACTION")
    query = memory_sub.add_parser("query", help="a named query; `memory query --list` lists them")
    query.set_defaults(handler=_memory_query)
    query.add_argument("name", nargs="?", help="query name")
    query.add_argument("--list", action="store_true", help="list the named queries")
    for flag, text in (
        ("--task", "only this task"),
        ("--agent", "only this agent"),
        ("--state", "only tasks in this state"),
        ("--module", "only this module"),
        ("--outcome", "only this outcome"),
        ("--limit", "at most this many rows"),
    ):
        query.add_argument(flag, help=text)
    _db_flag(query)
    _json_flag(query)
    sql = memory_sub.add_parser("sql", help="run one read-only SQL statement")
    sql.set_defaults(handler=_memory_sql)
    sql.add_argument("statement", metavar="SQL", help="one SELECT (writes are refused)")
    sql.add_argument(
        "--timeout-s",
        type=_positive_s,
        default=10.0,
        help="stop the query after this many seconds (default 10)",
    )
    _db_flag(sql)
    _json_flag(sql)
    return parser


_COMMANDS = {"run", "status", "tasks", "claim", "heartbeat", "complete", "fail", "gate", "memory"}


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Any, text: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text, description=text)
    parser.set_defaults(handler=handler)
    parser.add_argument("--tasks", type=Path, help="the task folder (default ./tasks)")
    parser.add_argument(
        "--queue",
        metavar="URL",
        help="keep the tasks in Redis (redis://host:6379/0#name), shared by fleets on several "
        "machines; --tasks is then this machine's inbox for task files (or COORDINATOR_QUEUE)",
    )
    _config_flag(parser, default=argparse.SUPPRESS)
    return parser


def _config_flag(parser: argparse.ArgumentParser, *, default: Any) -> None:
    # Accepted before and after the subcommand; SUPPRESS keeps a subcommand from resetting
    # a value given before it.
    parser.add_argument(
        "--config", type=Path, default=default, help="settings file (default ./coordinator.toml)"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prompt-orchestrator")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _positive_s(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {value!r}")
    return seconds


def _memory_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-memory", action="store_true", help="do not record the change in agent memory"
    )
    _db_flag(parser)


def _remember(
    args: argparse.Namespace, settings: Settings, task_id: str, queue: FolderQueue
) -> None:
    """Record what this command changed in agent memory, as the fleet records its own."""
    if not args.no_memory:
        _remember_in_db(settings, queue, (task_id,))


def _remember_in_db(settings: Settings, queue: FolderQueue, task_ids: Sequence[str]) -> None:
    """Mirror these tasks into the memory at `--db`."""
    from memory_db import AgentMemory

    with _warn_if_memory_fails(), AgentMemory(settings.db) as memory:
        _remember_tasks(memory, queue, task_ids)


def _remember_tasks(memory: MemoryOfAttempts, queue: FolderQueue, task_ids: Sequence[str]) -> None:
    from coordinator.remember import remember

    for task_id in task_ids:
        remember(memory, queue.get(task_id))


@contextlib.contextmanager
def _warn_if_memory_fails() -> Iterator[None]:
    """A memory that cannot be written is a warning, never a stop: the queue has the change
    either way."""
    try:
        yield
    except Exception as exc:
        print(
            f"coordinator: warning: agent memory not updated ({exc}); the queue has the change",
            file=sys.stderr,
        )


def _memory_exists(url: str | None) -> bool:
    """Whether agent memory at `url` exists already (a server database always may)."""
    from memory_db.engine import resolve_url

    try:
        parsed = resolve_url(url)
    except ValueError:
        return False
    database = parsed.database
    return (
        parsed.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or Path(database).is_file()
    )


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        help="agent memory SQLAlchemy URL "
        "(default sqlite:///.coordinator/memory.db, or COORDINATOR_DB_URL)",
    )


# ---------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace) -> Settings:
    from coordinator.settings import load_settings

    flags = {
        name: getattr(args, name, None)
        for name in (
            "tasks",
            "agents",
            "agent",
            "lease_s",
            "grace_s",
            "db",
            "workdir",
            "orchestrator",
            "pass_env",
            "queue",
        )
    }
    return load_settings(flags, config_path=args.config)


def _redis_queue(settings: Settings, *, create: bool, **options: Any) -> RedisQueue:
    """The `RedisQueue` `settings.queue` names (`#name` after the URL picks the queue; default
    `tasks`), with `settings.tasks` as this machine's inbox and its `logs/` for attempt logs.
    Only `run` and `tasks add` create a missing inbox folder."""
    from urllib.parse import urlsplit

    from coordinator.redis_queue import RedisQueue
    from coordinator.task import is_valid_id

    url, _, name = (settings.queue or "").partition("#")
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
        raise ConfigError(  # the URL itself may hold a password: not shown
            f"queue: expected a Redis URL such as redis://host:6379/0#name, got one with the "
            f"scheme {parts.scheme!r}"
        )
    if name and not is_valid_id(name):
        raise ConfigError(f"queue: the name after # must be letters, digits, . _ -; got {name!r}")
    if create and not settings.tasks.is_dir():
        settings.tasks.mkdir(parents=True)
        print(f"coordinator: created an inbox for task files in {settings.tasks}/", file=sys.stderr)
    try:
        return RedisQueue(
            url,
            prefix=f"coordinator:{name or 'tasks'}:",
            inbox=settings.tasks,
            logs_dir=settings.tasks / "logs",
            **options,
        )
    except ImportError as exc:  # the optional redis package is missing: say how to add it
        raise ConfigError(str(exc)) from None


def _queue(
    settings: Settings,
    *,
    create: bool = False,
    args: argparse.Namespace | None = None,
    memory: MemoryOfAttempts | None = None,
) -> FolderQueue | RedisQueue:
    """The queue in `--tasks`, or with `--queue` the one in Redis (`--tasks` its inbox here).
    Only `run` and `tasks add` create a missing folder (and say so); every other command
    refuses it, creating nothing (`QueueNotFound`). A folder that exists — made by hand and
    filled with task files — is set up as a queue by any command.

    Every task this command's ingest accepts (a file dropped into the folder) is recorded in
    agent memory at once: in `memory` if given (the fleet's), else in the memory at `--db` if
    one exists there — reading never creates one — unless `--no-memory` was given."""
    from coordinator.errors import QueueNotFound
    from coordinator.queue import FolderQueue

    queue: FolderQueue | RedisQueue | None = None

    def remember_accepted(result: IngestResult) -> None:
        assert queue is not None
        if memory is not None:
            with _warn_if_memory_fails():
                _remember_tasks(memory, queue, result.accepted)
        elif not getattr(args, "no_memory", False) and _memory_exists(settings.db):
            _remember_in_db(settings, queue, result.accepted)

    options: dict[str, Any] = {
        "retry_backoff_s": settings.retry_backoff_s,
        "agents": _profile_names(settings),
        "on_ingest": remember_accepted,
    }
    if settings.queue is not None:
        queue = _redis_queue(settings, create=create, **options)
        return queue
    try:
        queue = FolderQueue.open(settings.tasks, **options)
        return queue
    except QueueNotFound:
        missing = not settings.tasks.is_dir()
        if missing and not create:
            raise
    if missing:
        print(f"coordinator: created a new task queue in {settings.tasks}/", file=sys.stderr)
    queue = FolderQueue.open(settings.tasks, create=True, **options)
    return queue


def _profile_names(settings: Settings) -> set[str]:
    """The agent profiles a task may name: the built-in ones and coordinator.toml's."""
    from coordinator.agents import BUILTIN_PROFILES

    return {*BUILTIN_PROFILES, *settings.profiles}


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _record_summary(record: TaskRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": record.task.id,
        "state": record.state.value,
        "priority": record.task.priority.value,
        "title": record.task.title,
        "attempts": _attempts_made(record),
        "max_attempts": record.task.max_attempts,
        "depends_on": list(record.task.depends_on),
        "source": record.source,
        "reason": record.reason,
        "created_by": record.task.created_by,
        "gate": record.task.gate,
    }
    if record.lease is not None:
        summary["agent"] = record.lease.agent
        summary["lease_expires_at"] = record.lease.expires_at
    return summary


def _attempts_made(record: TaskRecord) -> int:
    from memory_db.outcome import AttemptOutcome

    return sum(1 for a in record.history if a.outcome is not AttemptOutcome.RELEASED)


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    from coordinator.agents import resolve_profile
    from coordinator.fleet import Fleet, FleetSettings, FleetTunables
    from coordinator.metrics import FleetEvents, FleetStatusFile
    from coordinator.progress import Progress
    from orchestrator.config import LiveConfig

    settings = _settings(args)
    loop_settings = _loop_settings(args, settings) if args.self_improve else None
    where = settings.orchestrator or ("start" if loop_settings is not None else None)
    as_json = _configure_logging() == "json"
    memory = None
    if not args.no_memory:
        from memory_db import AgentMemory

        memory = AgentMemory(settings.db)
    queue = _queue(settings, create=True, args=args, memory=memory)
    progress = Progress(queue, as_log_records=as_json)
    for rejected in queue.ingest().rejected:
        progress.note(f"rejected {rejected.name}: {rejected.reason}")
    profile = resolve_profile(settings.agent, settings.profiles)
    tunables = LiveConfig(FleetTunables(agents=settings.agents, lease_s=settings.lease_s))
    events = FleetEvents()
    fleet: Fleet | None = None
    improvement: Any = None
    with contextlib.ExitStack() as stack:
        agent_env, embedded = stack.enter_context(
            _traffic(
                where,
                lambda: fleet.snapshot().to_json() if fleet else {},
                tunables,
                lambda: improvement.status() if improvement and improvement.runs_loop else None,
                say=progress.note,
            )
        )
        if embedded is not None:  # each finished attempt teaches the embedded pipeline
            events.subscribe(embedded.on_fleet_event)
        elif where:  # ... or the one at the URL, over HTTP
            from coordinator.traffic import TaskOutcomePoster

            poster = stack.enter_context(TaskOutcomePoster(where, os.environ.get("API_KEY")))
            events.subscribe(poster.on_fleet_event)
        if loop_settings is not None:
            improvement = _self_improvement(
                stack,
                loop_settings,
                settings,
                queue=queue,
                memory=memory,
                where=where,
                embedded=embedded,
                tunables=tunables,
                fleet=lambda: fleet,
            )
        fleet_settings = FleetSettings(
            grace_s=settings.grace_s,
            poll_s=settings.poll_s,
            workdir=settings.workdir,
            env=agent_env,
            pass_env=settings.pass_env,
            agent_env=_agent_headers if agent_env else None,
        )
        with progress:
            events.subscribe(progress.on_event)
            fleet = Fleet(
                queue,
                profile,
                settings=fleet_settings,
                tunables=lambda: tunables.current,
                profiles=settings.profiles,
                memory=memory,
                events=events,
                gating=improvement.gating if improvement is not None else None,
            )
            if improvement is not None:
                improvement.start()
                stack.callback(improvement.stop)
            published = FleetStatusFile(settings.tasks, fleet.snapshot)
            published.start()
            stack.callback(published.stop)
            with fleet.signals_handled(announce=progress.note):
                result = fleet.run(until_empty=args.until_empty)
    if memory is not None:
        memory.close()
    counts = ", ".join(f"{state.value} {n}" for state, n in result.counts.items() if n)
    progress.note(counts or "no tasks")
    if args.until_empty and not result.stopped_by_signal:
        for line in _unmet_dependencies(queue):
            progress.note(line)
    if result.stopped_by_signal:
        return 130
    return 0 if result.all_done else 1


def _configure_logging() -> str:
    """Under `LOG_FORMAT=json`, log as `orchestrator serve` does (JSON lines on stderr, keys
    masked, `LOG_LEVEL`), so a fleet's lines and its embedded server's share one format;
    returns the format (a bad value is an error naming it)."""
    from orchestrator.logging_setup import configure_logging

    fmt = os.environ.get("LOG_FORMAT", "text")
    if fmt.strip().lower() in ("", "text"):
        return "text"
    try:
        configure_logging(fmt=fmt)  # refuses a bad LOG_FORMAT or LOG_LEVEL, naming it
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return "json"


def _loop_settings(args: argparse.Namespace, settings: Settings) -> Any:
    from coordinator.self_improve import with_flags

    return with_flags(
        settings.self_improve_settings(),
        repo=args.repo,
        target_branch=args.target_branch,
        merge=args.merge,
        telemetry_interval_s=args.telemetry_interval_s,
        telemetry_nats=args.telemetry_nats,
        telemetry_nats_subject=args.telemetry_nats_subject,
        dry_run=args.dry_run,
    )


def _self_improvement(
    stack: contextlib.ExitStack,
    loop_settings: Any,
    settings: Settings,
    *,
    queue: FolderQueue | RedisQueue,
    memory: Any,
    where: str | None,
    embedded: Any,
    tunables: Any,
    fleet: Callable[[], Any],
) -> Any:
    """The loop for this folder (or Redis queue) with its gate; only the gate (and why,
    printed) when another process runs the loop."""
    from coordinator.agents import agent_environment
    from coordinator.self_improve import (
        LeaderLease,
        LoopLock,
        LoopLockHeld,
        LoopTakeover,
        SelfImprovement,
    )
    from self_tune.errors import GateError
    from self_tune.live import CombinedConfig, HttpConfig, LocalConfig
    from self_tune.sources import FleetSource, PipelineSource, StatusSource

    # One loop per folder (a flock), and per Redis queue whatever machines share it (a
    # lease); every process gates the gated tasks its own agents take.
    lock: LoopLock | LeaderLease = LoopLock(settings.tasks)
    if settings.queue is not None:
        lock = LeaderLease(
            queue.client, queue.prefix + "self-improve", lease_s=loop_settings.lease_s
        )
    runs_loop = True
    try:
        lock.acquire()
    except LoopLockHeld as held:
        print(f"coordinator: {held}; this process runs no loop, and gates the gated tasks its "
              "agents take", file=sys.stderr)
        runs_loop = False
    else:
        stack.callback(lock.release)
    fleet_source = FleetSource(lambda: fleet().snapshot().to_json() if fleet() else {})
    if embedded is not None:
        sources = (PipelineSource(embedded.pipeline.snapshot), fleet_source)
        config: Any = LocalConfig(embedded.pipeline.live, tunables)
    else:
        assert where is not None
        token = os.environ.get("API_KEY")
        sources = (StatusSource(where, token=token), fleet_source)
        # our own fleet's knobs first: a remote coordinator's /v1/config serves its fleet's
        config = CombinedConfig(
            LocalConfig(tunables),
            HttpConfig(where, admin_token=os.environ.get("ADMIN_API_KEY") or token),
        )
    open_states = (TaskState.PENDING, TaskState.CLAIMED)
    try:
        improvement = SelfImprovement(
            loop_settings,
            tasks_dir=settings.tasks,
            memory=memory,
            sources=sources,
            config=config,
            # gate commands see what agents see (the allow-list), never provider keys
            gate_env=agent_environment(os.environ, pass_env=settings.pass_env),
            open_task_ids=lambda: [r.task.id for s in open_states for r in queue.records(s)],
            runs_loop=runs_loop,
        )
    except GateError as exc:
        raise ConfigError(f"--self-improve: {exc}") from exc

    takeovers: list[LoopTakeover] = []

    def stop_takeovers() -> None:
        for takeover in takeovers:
            takeover.stop()

    stack.callback(stop_takeovers)

    def take_over_when_free() -> None:
        takeover = LoopTakeover(lock, every_s=loop_settings.takeover_every_s, on_acquired=lead)
        takeovers.append(takeover)
        takeover.start()

    def lost(why: str) -> None:
        if improvement.step_down():  # and lead again once the lease is free
            print(f"coordinator: the self-improvement loop's lease on the queue is lost "
                  f"({why}); the loop stops here, the fleet and its gate go on, and this "
                  "process takes the loop back when the lease is free",
                  file=sys.stderr, flush=True)
            take_over_when_free()

    def lead() -> None:
        if isinstance(lock, LeaderLease):
            lock.keep_renewing(lost)
        if improvement.lead():
            print("coordinator: the self-improvement loop's holder let go; this process runs "
                  "the loop now", file=sys.stderr, flush=True)

    if runs_loop and isinstance(lock, LeaderLease):
        lock.keep_renewing(lost)
    elif not runs_loop:  # take the loop over when its holder ends or dies
        take_over_when_free()
    gate = improvement.gating.gate
    watching = (f"watching every {loop_settings.telemetry_interval_s:g}s; "
                if improvement.runs_loop else "")
    print(
        f"self-improve: {watching}gated changes go to {gate.root} branch {gate.target_branch} "
        f"(merge {loop_settings.merge.value}{', dry run' if loop_settings.dry_run else ''})",
        file=sys.stderr,
        flush=True,
    )
    return improvement


def _unmet_dependencies(queue: FolderQueue) -> list[str]:
    """Why each task left pending cannot run: the dependencies it still waits for."""
    lines = []
    for record in queue.records(TaskState.PENDING):
        if not record.waiting_for:
            continue
        unknown = set(record.unknown_dependencies)
        waits = ", ".join(
            f"{dep} (no task has this id)" if dep in unknown else dep for dep in record.waiting_for
        )
        lines.append(f"{record.task.id} did not run: it waits for {waits}")
    return lines


def _agent_headers(agent: str, env: Mapping[str, str]) -> Mapping[str, str]:
    from coordinator.traffic import agent_headers

    return agent_headers(agent, env)


@contextlib.contextmanager
def _traffic(
    where: str | None,
    fleet_status: Callable[[], Mapping[str, Any]],
    tunables: LiveConfig[Any],
    self_tune_status: Callable[[], Mapping[str, Any] | None],
    *,
    say: Callable[..., None],
) -> Iterator[tuple[dict[str, str], Any]]:
    """The agents' environment for routing their LLM traffic (empty: not routed), and the
    orchestrator this process runs for them (None: none, or a running one at `where`). An
    embedded orchestrator serves the fleet's `tunables` on its `/v1/config`; `say` tells
    where (`Progress.note`)."""
    if not where:
        yield {}, None
        return
    from coordinator.traffic import EmbeddedOrchestrator, agent_env

    if where != "start":
        if not where.startswith(("http://", "https://")):
            raise ConfigError(f"--orchestrator must be 'start' or an http(s) URL, got {where!r}")
        _check_answers(where)
        yield agent_env(where, os.environ.get("API_KEY")), None
        return
    from orchestrator.errors import OrchestratorError

    embedded = EmbeddedOrchestrator(
        fleet_status, fleet_config=tunables, self_tune_status=self_tune_status
    )
    with contextlib.ExitStack() as stack:
        try:
            env = stack.enter_context(embedded)
        except (OrchestratorError, RuntimeError) as exc:
            raise ConfigError(f"could not start the orchestrator: {exc}") from exc
        say(
            f"serving on {embedded.url} (dashboard {embedded.url}/dashboard)", source="orchestrator"
        )
        yield env, embedded


def _check_answers(url: str, *, timeout_s: float = 5.0) -> None:
    """Raise `ConfigError` unless an HTTP server answers at `url` (any status will do):
    better one clear error now than every attempt burned on connection errors."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 or a degraded 503): it is there
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"--orchestrator {url}: nothing answers there ({reason}); start one "
            "with `orchestrator serve`, or use --orchestrator start"
        ) from None


def _status(args: argparse.Namespace) -> int:
    from coordinator.metrics import FleetStatusFile

    settings = _settings(args)
    queue = _queue(settings, args=args)
    queue.ingest()
    counts = queue.counts()
    running = queue.records(TaskState.CLAIMED)
    rejected = queue.rejected()
    loop = _loop_status(settings)
    fleet = FleetStatusFile.read(settings.tasks)  # what a fleet running here publishes
    if args.json:
        _print_json(
            {
                "counts": {state.value: n for state, n in counts.items()},
                "running": [_record_summary(r) for r in running],
                "rejected": [{"file": r.name, "reason": r.reason} for r in rejected],
                "fleet": fleet,
                "self_improve": loop,
            }
        )
        return 0
    if fleet is not None:
        agents, rates = fleet["agents"], fleet["per_min"]
        print(
            f"fleet (pid {fleet['pid']}): {agents['busy']} busy, {agents['idle']} idle of "
            f"{agents['target']} agents; per minute {rates['claimed']:.0f} claimed, "
            f"{rates['done']:.0f} done, {rates['failed']:.0f} failed\n"
        )
    print(_table([[state.value, str(n)] for state, n in counts.items()], ["state", "tasks"]))
    if running:
        now = time.time()
        print("\nrunning:")
        print(
            _table(
                [
                    [
                        r.task.id,
                        r.lease.agent if r.lease else "?",
                        str(r.attempts + 1),
                        f"{(r.lease.expires_at - now):.0f}s" if r.lease else "?",
                    ]
                    for r in running
                ],
                ["task", "agent", "attempt", "lease left"],
            )
        )
    if rejected:
        print("\nrejected:")
        for r in rejected:
            print(f"  {r.reason}")
    if loop is not None:
        _print_loop(
            loop,
            open_meta=[
                r.task.id
                for s in (TaskState.PENDING, TaskState.CLAIMED)
                for r in queue.records(s)
                if r.task.created_by == "self-improve"
            ],
        )
    return 0


def _loop_status(settings: Settings) -> dict[str, Any] | None:
    """What the folder's self-improvement loop last published, with recent gate results from
    agent memory; None when no loop ever ran on this folder."""
    from coordinator.self_improve import read_status

    loop = read_status(settings.tasks)
    if loop is None:
        return None
    from memory_db import AgentMemory

    with AgentMemory(settings.db) as memory:
        loop["gate_results"] = [
            {
                "task": m.task_id,
                "outcome": str(m.outcome),
                "branch": m.branch,
                "commit": m.commit,
                "verdicts": [dict(v) for v in m.verdicts],
                "metric_deltas": dict(m.metric_deltas),
            }
            for m in [m for m in memory.modifications(limit=200) if m.branch][:5]
        ]
    return loop


def _print_loop(loop: Mapping[str, Any], *, open_meta: list[str]) -> None:
    age = time.time() - float(loop.get("updated_at", 0))
    print(
        f"\nself-improvement loop ({loop.get('holder')}, updated {age:.0f}s ago; merge "
        f"{loop.get('merge')}, tuning {loop.get('tuning')}"
        + (", dry run" if loop.get("dry_run") else "")
        + "):"
    )
    anomalies = loop.get("anomalies") or []
    print("  anomalies:" + ("" if anomalies else " none"))
    for a in anomalies[-5:]:
        against = "limit" if a["detector"] == "slo" else "baseline"
        print(
            f"    {a['severity']} {a['metric']} = {a['value']:.4g} ({against} "
            f"{a['baseline']:.4g}, {a['detector']}): {a['action']}"
        )
    changed = [p for p in loop.get("parameters") or [] if p.get("last_change")]
    print("  parameters:" + ("" if changed else " all at their defaults"))
    for p in changed:
        last = p["last_change"]
        print(
            f"    {p['name']} = {p['value']} {p['unit']} (default {p['default']}); last "
            f"change {last['old']} → {last['new']}: {last['reason']}"
        )
    from self_tune.experiment import status_lines

    for line in status_lines(loop.get("experiments")):
        print("  " + line)
    nats = (loop.get("telemetry_bus") or {}).get("nats")
    if nats:
        print(
            f"  telemetry on NATS {nats['url']} subject {nats['subject']}: "
            f"{nats['published']} published, {nats['dropped']} dropped"
            + ("" if nats.get("connected") else " (not connected)")
        )
    print(f"  open meta-tasks: {', '.join(open_meta) or 'none'}")
    results = loop.get("gate_results") or []
    print("  gate results:" + ("" if results else " none yet"))
    for r in results:
        verdicts = ", ".join(
            f"{v['name']} {'ok' if v['passed'] else 'FAILED'}" for v in r["verdicts"]
        )
        print(
            f"    {r['task']}: {r['outcome']} on {r['branch']}"
            + (f" ({verdicts})" if verdicts else "")
        )


def _tasks_list(args: argparse.Namespace) -> int:
    queue = _queue(_settings(args), args=args)
    queue.ingest()
    state = TaskState(args.state) if args.state else None
    rows = [_record_summary(r) for r in queue.records(state)] if state != TaskState.REJECTED else []
    if state in (None, TaskState.REJECTED):
        rows += [
            {
                "id": r.name,
                "state": "rejected",
                "priority": "",
                "title": "",
                "attempts": 0,
                "reason": r.reason,
                "file": str(r.path),
            }
            for r in queue.rejected()
        ]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tasks")
        return 0
    print(
        _table(
            [
                [
                    r["id"],
                    r["state"],
                    r["priority"],
                    f"{r['attempts']}",
                    "; ".join((r.get("reason") or r["title"]).splitlines()),
                ]
                for r in rows
            ],
            ["id", "state", "priority", "attempts", "title / reason"],
        )
    )
    return 0


def _tasks_add(args: argparse.Namespace) -> int:
    given = {"max_attempts": args.max_attempts, "timeout_s": args.timeout_s, "agent": args.agent}
    fields = {name: value for name, value in given.items() if value is not None}
    settings = _settings(args)
    queue = _queue(settings, create=True, args=args)
    task = queue.add(
        args.prompt,
        task_id=args.task_id,
        priority=Priority(args.priority),
        depends_on=tuple(args.depends_on),
        title=args.title,
        acceptance=tuple(args.acceptance),
        tags=tuple(args.tags),
        **fields,
    )
    _remember(args, settings, task.id, queue)
    print(task.id)
    return 0


def _tasks_show(args: argparse.Namespace) -> int:
    queue = _queue(_settings(args), args=args)
    record = queue.get(args.task_id)
    if args.json:
        _print_json(record.to_json() | {"state": record.state.value})
        return 0
    task = record.task
    print(f"{task.id}: {record.state.value}" + (f" — {record.reason}" if record.reason else ""))
    print(f"  title:      {task.title}")
    print(f"  priority:   {task.priority.value}")
    made = _attempts_made(record)
    print(f"  attempts:   {made} made; {record.attempts} of {task.max_attempts} used by failures")
    print(f"  depends on: {', '.join(task.depends_on) or '-'}")
    source = Path(record.source) if queue.root is None else queue.root / record.source
    print(f"  source:     {source}" + ("" if source.exists() else " (not on this machine)"))
    if record.lease:
        print(
            f"  lease:      {record.lease.agent}, token {record.lease.token}, "
            f"{record.lease.expires_at - time.time():.0f}s left"
        )
    print(f"  prompt:     {task.prompt}")
    for attempt in record.history:
        print(
            f"  attempt {attempt.attempt}: {attempt.outcome} by {attempt.agent}"
            + (f", exit {attempt.exit_code}" if attempt.exit_code is not None else "")
            + (f" — {attempt.reason}" if attempt.reason else "")
            + (f" (log {attempt.log_path})" if attempt.log_path else "")
        )
    return 0


def _tasks_retry(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings, args=args)
    record = queue.retry(args.task_id)
    _remember(args, settings, record.task.id, queue)
    print(f"{record.task.id}: {record.state.value}")
    return 0


def _tasks_cancel(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings, args=args)
    record = queue.cancel(args.task_id)
    _remember(args, settings, record.task.id, queue)
    print(f"{record.task.id}: {record.state.value}")
    return 0


def _tasks_clear(args: argparse.Namespace) -> int:
    from coordinator.queue import FolderQueue

    queue = _queue(_settings(args), args=args)
    state = TaskState(args.state)
    kept = (
        f"kept under {queue.root / 'archive' / state.value}"
        if isinstance(queue, FolderQueue)
        else "their records stay in the queue: tasks show finds them"
    )
    count = queue.count(state)
    if not count:
        print(f"no {state.value} entries")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                f"tasks clear: would remove {count} {state.value} entries; confirm with --yes"
            )
        answer = input(f"remove {count} {state.value} entries from the listings ({kept})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    cleared = queue.clear(state)
    print(f"cleared {len(cleared)} {state.value}: {', '.join(cleared)} ({kept})")
    return 0


def _logs(args: argparse.Namespace) -> int:
    queue = _queue(_settings(args), args=args)
    record = queue.get(args.task_id)  # UnknownTask names the id
    folder = queue.log_path(record.task.id, 1).parent
    made = sorted(int(p.stem.removeprefix("attempt-")) for p in folder.glob("attempt-*.log"))
    if not made:
        raise ConfigError(f"{record.task.id}: no attempt has run yet ({record.state.value})")
    attempt = args.attempt or made[-1]
    if attempt not in made:
        raise ConfigError(
            f"{record.task.id}: no attempt {attempt} (attempts with logs: "
            f"{', '.join(map(str, made))})"
        )
    path = queue.log_path(record.task.id, attempt)
    out = sys.stdout.buffer
    with open(path, "rb") as log:
        while True:
            chunk = log.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not args.follow or not _still_running(queue, record.task.id, attempt):
                return 0
            time.sleep(0.2)  # following a file: wait for the agent to write more


def _still_running(queue: FolderQueue, task_id: str, attempt: int) -> bool:
    """True while the task runs and `attempt` is its latest."""
    return (
        queue.get(task_id).state == TaskState.CLAIMED
        and not queue.log_path(task_id, attempt + 1).exists()
    )


def _claim(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings, args=args)
    claim = queue.claim(args.agent, lease_s=settings.lease_s)
    if claim is None:
        print("coordinator: no task is ready to claim", file=sys.stderr)
        return 1
    _remember(args, settings, claim.task.id, queue)
    if args.json:
        _print_json(
            {
                "id": claim.task.id,
                "token": claim.token,
                "attempt": claim.attempt,
                "prompt": claim.task.prompt,
                "task_file": str(claim.source),
                "expires_at": claim.expires_at,
                "lease_s": settings.lease_s,
            }
        )
    else:
        print(f"{claim.task.id} {claim.token}")
    return 0


def _heartbeat(args: argparse.Namespace) -> int:
    # Renew for the length it was claimed with, unless --lease-s says otherwise.
    settings = _settings(args)
    queue = _queue(settings, args=args)
    expires = queue.heartbeat(args.task_id, args.token, lease_s=args.lease_s)
    if not args.no_memory:
        from coordinator.remember import remember_heartbeat
        from memory_db import AgentMemory

        with _warn_if_memory_fails(), AgentMemory(settings.db) as memory:
            remember_heartbeat(memory, queue.get(args.task_id))
    print(f"{args.task_id}: lease renewed for {expires - time.time():.0f}s")
    return 0


def _complete(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings, args=args)
    queue.complete(args.task_id, args.token)
    _remember(args, settings, args.task_id, queue)
    print(f"{args.task_id}: done")
    return 0


def _fail(args: argparse.Namespace) -> int:
    settings = _settings(args)
    queue = _queue(settings, args=args)
    state = queue.fail(args.task_id, args.token, reason=args.reason)
    _remember(args, settings, args.task_id, queue)
    print(f"{args.task_id}: {state.value}")
    return 0


def _gated(args: argparse.Namespace) -> Any:
    """`GatedAttempts` over the loop's repository and the agent memory, for `coordinator gate`."""
    from coordinator.gating import GatedAttempts
    from coordinator.self_improve import worktree_scope
    from memory_db import AgentMemory
    from self_tune.errors import GateError
    from self_tune.gate import ValidationGate

    settings = _settings(args)
    loop = settings.self_improve_settings()
    repo = getattr(args, "repo", None) or loop.repo or Path.cwd()
    try:
        gate = ValidationGate(
            repo,
            target_branch=loop.target_branch,
            settings=loop.gate,
            scope=worktree_scope(settings.tasks),
        )
    except GateError as exc:
        raise ConfigError(str(exc)) from exc
    return GatedAttempts(gate, memory=AgentMemory(settings.db))


def _gate_list(args: argparse.Namespace) -> int:
    from memory_db import AgentMemory, ModificationOutcome

    with AgentMemory(_settings(args).db) as memory:
        waiting = [m for m in memory.modifications(ModificationOutcome.IN_PROGRESS) if m.branch]
    rows = [
        {
            "task": m.task_id,
            "branch": m.branch,
            "commit": m.commit,
            "files": list(m.files_changed),
            "description": m.description,
        }
        for m in waiting
    ]
    if args.json:
        _print_json(rows)
    elif rows:
        print(
            _table(
                [
                    [
                        r["task"] or "",
                        r["branch"] or "",
                        (r["commit"] or "")[:10],
                        str(len(r["files"])),
                        r["description"][:60],
                    ]
                    for r in rows
                ],
                ["task", "branch", "commit", "files", "description"],
            )
        )
    else:
        print("no branch waits for review")
    return 0


def _gate_merge(args: argparse.Namespace) -> int:
    return _gate_act(args, "merge")


def _gate_discard(args: argparse.Namespace) -> int:
    return _gate_act(args, "discard")


def _gate_act(args: argparse.Namespace, action: str) -> int:
    from memory_db import ModificationOutcome

    gated = _gated(args)
    try:
        conclusion = getattr(gated, action)(args.task_id)
    except LookupError as exc:
        raise ConfigError(str(exc.args[0])) from exc
    print(f"{args.task_id}: {conclusion.outcome} — {conclusion.reason} ({conclusion.branch})")
    done = ModificationOutcome.DEPLOYED if action == "merge" else ModificationOutcome.REJECTED
    return 0 if conclusion.outcome is done else 1


def _memory_query(args: argparse.Namespace) -> int:
    from memory_db import NAMED_QUERIES, open_engine, run_named_query

    if args.list or not args.name:
        for name, query in NAMED_QUERIES.items():
            print(f"{name:16} {query.description}")
        return 0
    given = {
        "task_id": args.task,
        "agent": args.agent,
        "state": args.state,
        "module": args.module,
        "outcome": args.outcome,
        "limit": args.limit,
    }
    filters = {name: value for name, value in given.items() if value is not None}
    engine = _existing_memory(_settings(args).db, open_engine)
    columns, rows = run_named_query(engine, args.name, **filters)
    _print_rows(columns, rows, as_json=args.json)
    return 0


def _memory_sql(args: argparse.Namespace) -> int:
    from memory_db import open_engine, run_readonly_sql

    engine = _existing_memory(_settings(args).db, open_engine)
    columns, rows = run_readonly_sql(engine, args.statement, timeout_s=args.timeout_s)
    _print_rows(columns, rows, as_json=args.json)
    return 0


def _existing_memory(url: str | None, open_engine: Callable[[str | None], Any]) -> Any:
    """An engine on agent memory that must already exist: reading never creates a database."""
    from memory_db.engine import resolve_url

    try:
        database = resolve_url(url).database
    except ValueError as exc:
        raise ConfigError(f"--db: {exc}") from None
    if not _memory_exists(url):
        raise ConfigError(
            f"no agent memory at {database} (nothing has been recorded there; "
            "`coordinator run` creates it, or give --db / COORDINATOR_DB_URL)"
        )
    return open_engine(url)


def _cell(column: str, value: Any) -> str:
    """A value as a person reads it in a table: a timestamp (`*_at`) as local ISO time, money
    (`*usd*`, `*cost*`) to four decimals, other fractions to two; JSON keeps exact numbers."""
    if value is None:
        return ""
    if isinstance(value, float):
        if column.endswith("_at"):
            from datetime import datetime

            return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds")
        if "usd" in column or "cost" in column:
            return f"{value:.4f}"
        return f"{value:.2f}"
    return str(value)


def _print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, as_json: bool) -> None:
    if as_json:
        _print_json([dict(zip(columns, row, strict=True)) for row in rows])
    elif rows:
        print(
            _table(
                [[_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in rows],
                list(columns),
            )
        )
    else:
        print("(no rows)")


if __name__ == "__main__":
    sys.exit(main())
