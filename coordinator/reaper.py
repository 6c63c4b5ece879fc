"""The process that runs supervisors, as the reaper of what a killed supervisor leaves.

Each supervisor is the child subreaper of its agent (`coordinator.supervisor`), so an agent's
orphans are reparented to it and die with the attempt. A supervisor that is itself
SIGKILLed (the OOM killer, a stray `kill -9`) can kill nothing: its orphans are reparented
to the nearest subreaper above it. So the process that starts supervisors makes itself a
child subreaper too (`adopt_orphans`, Linux only), and those orphans come to it rather than
to init — whatever they did to hide: cleared their environment (`env -i`, so no
`COORDINATOR_*` mark finds them), left their process group and session (`setsid`). When a
supervisor is found dead by a signal, `reclaim` kills and reaps them.

The kernel does not say whether a child was forked or reparented, so adopted children are
told apart by two facts. A supervisor leads a session of its own, so everything descended
from it is outside this process's session. And this process starts no other child outside
its session — only supervisors, which are started through `own` (under the lock a sweep
holds, so one between its fork and its registration is never taken for an orphan) and
dropped with `disown` once reaped. (The validation gate gives its commands a process group
of their own, not a session, for that reason; `subprocess` children and git stay in ours.)
A sweep takes only children born no earlier than the dead supervisor: those that could be
its descendants. Each is reaped by its own pid (`waitpid(pid, WNOHANG)` once its pidfd says
it has exited), never by `waitpid(-1)`, which would steal the exit status of a child that
`subprocess` is waiting for, and with no SIGCHLD handler.

The subreaper flag belongs to the process, so the state here does too: whether the flag is
set, the pids of supervisors not yet reaped, and the lock. A coordinator in another process
has its own, and is unaffected.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["adopt_orphans", "birth_ticks", "disown", "own", "reclaim"]

PR_SET_CHILD_SUBREAPER = 36

_REAP_WAIT_S = 5.0  # how long one sweep waits for the SIGKILLed to exit
_MAX_ROUNDS = 100  # a process forking as fast as we kill is caught in the next round

_lock = threading.Lock()  # held while a supervisor is started and while a sweep looks
_owned: set[int] = set()  # supervisors started here and not reaped yet
_subreaper: bool | None = None  # None: not asked yet


class _Stat(NamedTuple):
    ppid: int
    session: int
    born: int  # clock ticks since boot


def adopt_orphans() -> bool:
    """Make this process a child subreaper (once); True if it is one (Linux >= 3.4)."""
    global _subreaper
    with _lock:
        if _subreaper is None:
            prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
            _subreaper = prctl is not None and prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        return _subreaper


def own(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start a supervisor with `start` and register it, so that no sweep kills it; `disown`
    it once it is reaped. Raises what `start` raises."""
    with _lock:
        child = start()
        _owned.add(child.pid)
        return child


def disown(pid: int) -> None:
    """Forget a supervisor once it is reaped (its pid may be anyone's now)."""
    with _lock:
        _owned.discard(pid)


def birth_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (None if it is gone or unreadable)."""
    stat = _stat(pid)
    return stat.born if stat is not None else None


def reclaim(*, born_since: int, timeout_s: float = _REAP_WAIT_S,
            clock: Callable[[], float] = time.monotonic) -> int:
    """SIGKILL and reap every child adopted by this process and born at `born_since` ticks
    or later, level by level (each one killed hands us its own children); wait up to
    `timeout_s` in all for them to exit. Returns how many were killed."""
    deadline = clock() + timeout_s
    killed: set[int] = set()
    for _ in range(_MAX_ROUNDS):
        with _lock:
            found = _adopted(born_since)
            for pid in found:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not found:
            break
        killed.update(found)
        for pid in found:
            _reap(pid, deadline - clock())
        if clock() >= deadline:  # e.g. stuck in the kernel: a later sweep reaps it
            break
    return len(killed)


def _adopted(born_since: int) -> list[int]:
    """Our children outside our session that we did not start, born at `born_since` or later
    (zombies included: they are ours to reap)."""
    me, session = os.getpid(), os.getsid(0)
    try:
        names = os.listdir("/proc")
    except OSError:  # no procfs (not Linux): nothing was adopted either
        return []
    found = []
    for name in names:
        if not name.isdigit() or int(name) in _owned:
            continue
        stat = _stat(int(name))
        if (stat is not None and stat.ppid == me and stat.session != session
                and stat.born >= born_since):
            found.append(int(name))
    return found


def _stat(pid: int) -> _Stat | None:
    """Parent, session and birth of `pid` from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
        fields = text[text.rindex(b")") + 2:].split()  # from the 3rd field, the state, on
        return _Stat(ppid=int(fields[1]), session=int(fields[3]), born=int(fields[19]))
    except (OSError, ValueError, IndexError):
        return None


def _reap(pid: int, timeout_s: float) -> None:
    """Reap our SIGKILLed child `pid` once it has exited, waiting up to `timeout_s`."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # gone already, or no pidfds (Linux < 5.3)
        pidfd = None
    if pidfd is not None:
        try:
            select.select([pidfd], [], [], max(0.0, timeout_s))
        finally:
            os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG if pidfd is not None else 0)
