"""Killing an agent's processes left behind by a coordinator that died.

The fleet gives every agent process the `COORDINATOR_*` contract in its environment, and
everything the agent starts inherits it: a background job, a grandchild that called `setsid`
and left the process group and session, a process reparented to init once the supervisor
(its subreaper) was killed too. So a coordinator that finds a dead owner's lease on this
machine (same boot, same PID namespace) scans `/proc` for every process whose environment
names that task, that attempt and that queue's task file, and kills them before it gives
the task to someone else, so the same work never runs twice. Matching all three guards
against a recycled pid and against another queue on the same host with the same task id.
A process that rewrote its own environment (`env -i`) is not found this way; the killed
supervisor's process group is signalled too, for those that stayed in it. While the
coordinator that ran it lives, such a process is caught all the same: that coordinator is
the child subreaper its orphans come to (`coordinator.reaper`); this scan is for what a
coordinator that died left behind (and for one that could not be a subreaper).
"""

from __future__ import annotations

import contextlib
import os
import signal

__all__ = ["kill_orphan"]

_MAX_ROUNDS = 100  # a process forking as fast as we kill is caught in the next round


def kill_orphan(task_id: str, *, attempt: int, task_file: str, pgid: int | None = None) -> int:
    """SIGKILL every process of attempt `attempt` of `task_id` (whose `COORDINATOR_TASK_FILE`
    is `task_file`, an absolute path) still running in this PID namespace, and the process
    group `pgid` if its leader is one of them. Returns how many processes were killed."""
    marks = {f"COORDINATOR_TASK_ID={task_id}".encode(),
             f"COORDINATOR_ATTEMPT={attempt}".encode(),
             f"COORDINATOR_TASK_FILE={task_file}".encode()}
    if pgid and _is_marked(pgid, marks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    killed: set[int] = set()
    for _ in range(_MAX_ROUNDS):  # until a whole scan finds no one left alive
        found = [pid for pid in _pids() if pid not in killed and _is_marked(pid, marks)]
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
    return len(killed)


def _pids() -> list[int]:
    me = os.getpid()
    try:
        names = os.listdir("/proc")
    except OSError:  # no procfs (not Linux): the supervisor's own kill is all there is
        return []
    return [int(name) for name in names if name.isdigit() and int(name) != me]


def _is_marked(pid: int, marks: set[bytes]) -> bool:
    """Whether the process runs (not a zombie) with every one of `marks` in its environment."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read()
        if fields[fields.rindex(b")") + 2:][:1] in (b"Z", b"X"):  # dead, awaiting its reaper
            return False
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return marks <= set(environ.read().split(b"\0"))
    except (OSError, ValueError):  # gone meanwhile, or not ours to read
        return False
