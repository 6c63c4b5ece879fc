"""How an attempt at a task ended: the one vocabulary the queue, the fleet and the memory share.

Dependency-free on purpose, so the coordinator's claim path can import it without loading
SQLAlchemy (`memory_db`'s package exports are lazy for the same reason).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AttemptOutcome"]


class AttemptOutcome(StrEnum):
    """How one agent attempt at a task ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the agent or an acceptance command failed, or it could not start
    TIMED_OUT = "timed_out"  # the task's timeout_s ran out
    LEASE_LOST = "lease_lost"  # the lease expired or was taken over
    RELEASED = "released"  # given back without using up an attempt (e.g. on shutdown)

    @property
    def uses_attempt(self) -> bool:
        """Whether this outcome counts against the task's `max_attempts`."""
        return self not in (AttemptOutcome.SUCCEEDED, AttemptOutcome.RELEASED)
