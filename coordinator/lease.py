"""Leases: who holds a claimed task, until when, and with which fencing token.

A lease names its agent and expires unless renewed. Its `token` grows by one with every
claim of the task, so a holder whose lease was taken over presents a stale token and is
refused.

Expiry is judged on the best clock the judge shares with the holder. A lease records the
machine it was taken on (`/proc/sys/kernel/random/boot_id`) and its expiry on that machine's
`CLOCK_BOOTTIME`, which counts from boot, never steps, and keeps counting through suspend:
on the same machine, a wall-clock step (NTP, a user's `date -s`) can neither expire a live
lease nor keep a dead one. Only a judge on another machine falls back to wall time.

A fleet process also records itself as `owner`: its machine (boot id), PID namespace (the
inode of `/proc/self/ns/pid`), pid and the pid's start time. A restarted coordinator may
declare an owner dead, and take its leases back at once, only when the owner is on this
machine *and* in this PID namespace — a pid means nothing across namespaces (containers with
host networking share a hostname but not pids) — and that pid no longer runs the process
that started then. Anywhere else it waits for the lease to run out.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

__all__ = ["Lease", "Machine", "Owner", "boot_clock", "process_start_ticks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    """Where a judgement about a lease is made: this boot of this machine, this PID namespace,
    and the clock that counts since boot (injectable for tests)."""

    boot_id: str
    pid_ns: int
    host: str

    @classmethod
    @cache
    def current(cls) -> Machine:
        return cls(boot_id=_boot_id(), pid_ns=_pid_namespace(), host=socket.gethostname())


def boot_clock() -> float:
    """Seconds since this machine booted (`CLOCK_BOOTTIME`; monotonic where it is missing)."""
    return time.clock_gettime(_BOOTTIME)


_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The process that holds a lease on behalf of its agents."""

    host: str
    pid: int
    started: int  # the pid's start time in clock ticks since boot; guards against pid reuse
    boot_id: str = ""  # empty: recorded before boot ids were (never judged dead)
    pid_ns: int = 0

    @classmethod
    def current(cls) -> Owner:
        here = Machine.current()
        return cls(host=here.host, pid=os.getpid(), started=process_start_ticks(os.getpid()),
                   boot_id=here.boot_id, pid_ns=here.pid_ns)

    def is_dead(self, here: Machine | None = None) -> bool:
        """True only when this owner ran on this boot of this machine, in this PID namespace,
        and its process is certainly gone."""
        here = here or Machine.current()
        if not self.boot_id or self.boot_id != here.boot_id or self.pid_ns != here.pid_ns:
            return False
        return process_start_ticks(self.pid) != self.started

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started,
                "boot_id": self.boot_id, "pid_ns": self.pid_ns}


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A claim on one task. `expires_at` is wall time; `expires_boot` the same instant on
    the `CLOCK_BOOTTIME` of machine `boot_id`."""

    agent: str
    token: int
    claimed_at: float
    expires_at: float
    lease_s: float = 0.0  # the length it was claimed with: a heartbeat renews for as long
    boot_id: str = ""
    expires_boot: float = 0.0
    owner: Owner | None = None
    agent_pgid: int | None = None  # the agent's process group, once it is running

    def expired(self, now: float, *, boot_now: float | None = None,
                here: Machine | None = None) -> bool:
        """Whether the lease has run out: on this machine's boot clock when it was taken
        here (`boot_now`), otherwise on the wall clock (`now`)."""
        same_boot = self.boot_id and self.boot_id == (here or Machine.current()).boot_id
        if boot_now is not None and same_boot:
            return boot_now >= self.expires_boot
        return now >= self.expires_at

    def renewed(self, *, now: float, boot_now: float, lease_s: float,
                agent_pgid: int | None) -> Lease:
        return replace(self, expires_at=now + lease_s, expires_boot=boot_now + lease_s,
                       agent_pgid=agent_pgid or self.agent_pgid)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "token": self.token, "claimed_at": self.claimed_at,
            "expires_at": self.expires_at, "lease_s": self.lease_s, "boot_id": self.boot_id,
            "expires_boot": self.expires_boot, "agent_pgid": self.agent_pgid,
            "owner": None if self.owner is None else self.owner.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        owner = data.get("owner")
        return cls(**{**data, "owner": Owner(**owner) if owner else None})


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""  # not Linux: owners are never judged dead, leases run on wall time


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def process_start_ticks(pid: int) -> int:
    """The start time of `pid` (clock ticks since boot), or -1 if there is no such process
    or it has exited (a zombie, not yet reaped by its parent, is dead for our purposes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return -1
    # The command name in field 2 may hold spaces, so split after its ')'. Then field 3 is
    # the state and field 22 the start time.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return -1
    return int(fields[19])
