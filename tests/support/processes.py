"""Waiting for a process that is not our child to end, without polling on a timer."""

from __future__ import annotations

import os
import select


def ends_within(pid: int, timeout_s: float = 30.0) -> bool:
    """True once `pid` has ended (a zombie awaiting its reaper has ended), False on timeout.

    A SIGKILL is delivered asynchronously, so "killed" and "gone" are a moment apart; a pidfd
    becomes readable exactly when the process exits, which is the event these tests wait for.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable)
    finally:
        os.close(fd)
