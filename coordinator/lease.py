"""Leases: who holds a claimed task, until when, and with which fencing token.

A lease names its agent and expires unless renewed. Its `token` grows by one with every
claim of the task, so a holder whose lease was taken over presents a stale token and is
refused. A fleet process also records itself as `owner` (host, pid and the pid's start
time), which lets a restarted coordinator tell that a lease's owner is dead without waiting
for the lease to run out.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The process that holds a lease on behalf of its agents."""

    host: str
    pid: int
    started: int  # the pid's start time in clock ticks since boot; guards against pid reuse

    @classmethod
    def current(cls) -> Owner:
        return cls(host=_hostname(), pid=os.getpid(), started=process_start_ticks(os.getpid()))

    def is_dead(self) -> bool:
        """True only when this owner is on this host and its process is certainly gone."""
        if self.host != _hostname():
            return False
        return process_start_ticks(self.pid) != self.started


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A claim on one task."""

    agent: str
    token: int
    claimed_at: float
    expires_at: float
    owner: Owner | None = None
    agent_pgid: int | None = None  # the agent's process group, once it is running

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        owner = self.owner
        return {
            "agent": self.agent, "token": self.token, "claimed_at": self.claimed_at,
            "expires_at": self.expires_at, "agent_pgid": self.agent_pgid,
            "owner": None if owner is None else
            {"host": owner.host, "pid": owner.pid, "started": owner.started},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        owner = data.get("owner")
        return cls(**{**data, "owner": Owner(**owner) if owner else None})


@cache
def _hostname() -> str:
    return socket.gethostname()


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
