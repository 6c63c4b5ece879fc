"""Killing an agent's processes left behind by a coordinator that died.

The fleet gives every agent `COORDINATOR_TASK_ID` in its environment and runs it as the
leader of its own process group, whose id the lease records (`agent_pgid`). A coordinator
that finds a dead owner's lease kills that group before it gives the task to someone else,
so the same work never runs twice. The environment check guards against a recycled pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

__all__ = ["kill_orphan"]


def kill_orphan(pgid: int, task_id: str) -> bool:
    """Kill process group `pgid` if its leader is still the agent of `task_id`; return
    whether it was killed."""
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes()
    except OSError:
        return False
    if f"COORDINATOR_TASK_ID={task_id}".encode() not in environ.split(b"\0"):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
        return True
    return False
