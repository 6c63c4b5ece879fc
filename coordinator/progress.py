"""Showing a running fleet: a live status line in a terminal, plain log lines otherwise, and
under `LOG_FORMAT=json` log records (logger `coordinator.fleet`) that the process's one log
handler writes as JSON lines, in the same stream and format as the embedded server's."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from coordinator.metrics import ATTEMPT_ENDS, EventKind, FleetEvent
from coordinator.queue import FolderQueue
from coordinator.task import TaskState

_log = logging.getLogger("coordinator.fleet")


class Progress:
    """Receives fleet events and prints them; in a terminal, keeps a status line fresh.

    With `as_log_records`, every step and note is a log record instead, with the event's
    fields as extras (`event`, `task_id`, `attempt`, `agent`, `detail`, `task_state`), and
    there is no status line: a JSON line never carries terminal codes."""

    def __init__(
        self, queue: FolderQueue, *, out: TextIO | None = None,
        live: bool | None = None, refresh_s: float = 0.5, as_log_records: bool = False,
    ) -> None:
        self._queue = queue
        self._as_log_records = as_log_records
        self._agents: set[str] = set()  # agent loops running now (the fleet may grow/shrink)
        out = sys.stderr if out is None else out  # looked up now: it may have been replaced
        self._out = out
        self._live = False if as_log_records else out.isatty() if live is None else live
        self._refresh_s = refresh_s
        self._running: dict[str, str] = {}  # agent -> task id
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self._live:
            self._thread = threading.Thread(target=self._refresh_loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._write_line(self.status_line())
            self._out.write("\n")
            self._out.flush()

    def on_event(self, event: FleetEvent) -> None:
        """A `FleetEvents` subscriber: print the step, keep the busy count."""
        with self._lock:
            if event.kind == EventKind.STARTED:
                self._running[event.agent] = event.task_id
            elif event.kind in ATTEMPT_ENDS:
                self._running.pop(event.agent, None)
            elif event.kind == EventKind.AGENT_STARTED:
                self._agents.add(event.agent)
            elif event.kind == EventKind.AGENT_STOPPED:
                self._agents.discard(event.agent)
        if event.kind in (EventKind.AGENT_STARTED, EventKind.AGENT_STOPPED):
            return  # the status line shows the agents; a line per loop is noise
        if self._as_log_records:
            _log.info(_describe(event), extra={
                "event": event.kind.value, "task_id": event.task_id, "attempt": event.attempt,
                "agent": event.agent, "detail": event.detail,
                "task_state": event.task_state.value if event.task_state else None})
            return
        self._print(_describe(event))

    def note(self, text: str, *, source: str = "coordinator") -> None:
        """A message from the coordinator itself (a stop requested, the final counts), or
        from `source` (the embedded orchestrator saying where it serves)."""
        if self._as_log_records:
            logging.getLogger(source).info(text)
            return
        with self._lock:
            if self._live:
                self._out.write("\r\x1b[K")
            self._out.write(f"{source}: {text}\n")
            self._out.flush()

    def status_line(self) -> str:
        counts = self._queue.counts()
        with self._lock:
            busy, agents = len(self._running), len(self._agents)
        return (
            f"pending {counts[TaskState.PENDING]} · running {counts[TaskState.CLAIMED]} · "
            f"done {counts[TaskState.DONE]} · failed {counts[TaskState.FAILED]} · "
            f"rejected {counts[TaskState.REJECTED]} · agents busy {busy}/{agents}"
        )

    def _print(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            if self._live:
                self._out.write(f"\r\x1b[K{stamp} {line}\n")
            else:
                self._out.write(f"{stamp} {line}\n")
            self._out.flush()

    def _write_line(self, text: str) -> None:
        with self._lock:
            self._out.write(f"\r\x1b[K{text}")
            self._out.flush()

    def _refresh_loop(self) -> None:
        while not self._stopped.wait(self._refresh_s):
            self._write_line(self.status_line())


def _describe(event: FleetEvent) -> str:
    where = f"{event.task_id} (attempt {event.attempt}, {event.agent})"
    if event.kind == EventKind.STARTED:
        return f"started   {where}"
    if event.kind == EventKind.SUCCEEDED:
        return f"done      {where}"
    if event.kind == EventKind.FAILED:
        then = "will retry" if event.task_state == TaskState.PENDING else "failed for good"
        return f"failed    {where}: {event.detail} — {then}"
    if event.kind == EventKind.LEASE_LOST:
        return f"lost      {where}: {event.detail}"
    return f"released  {where}: {event.detail}"
