"""`Checkpointer`: a learner's state saved while it runs, not only when it stops.

    checkpointer = Checkpointer(router.save, lambda: router.updates_total,
                                interval_s=60.0, every_updates=1000)
    task = asyncio.create_task(checkpointer.run())   # saves off the event loop when due
    ...
    checkpointer.save()                                # the final save, at close

A save is due when something was learned since the last one and either `interval_s` has
passed since it, or `every_updates` updates arrived since it (whichever comes first), so a
killed process loses at most that much. Nothing learned: nothing written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable

__all__ = ["Checkpointer"]

log = logging.getLogger(__name__)

# How often `run` looks whether a save is due, at most (shorter when `interval_s` is).
_MAX_POLL_S = 1.0


class Checkpointer:
    """Decides when `save` runs, from `updates` (a count that grows as the learner learns)
    and `clock` (seconds). Saves are serialized: a periodic save still running finishes
    before the next one (the final save at close) reads the state.

    Raises `ValueError` naming a bad `interval_s` (a finite number > 0) or `every_updates`
    (an int >= 1).
    """

    def __init__(
        self,
        save: Callable[[], None],
        updates: Callable[[], int],
        *,
        interval_s: float = 60.0,
        every_updates: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (
            isinstance(interval_s, bool)
            or not isinstance(interval_s, int | float)
            or not math.isfinite(interval_s)
            or interval_s <= 0
        ):
            raise ValueError(f"interval_s must be a finite number > 0, got {interval_s!r}")
        if (
            isinstance(every_updates, bool)
            or not isinstance(every_updates, int)
            or every_updates < 1
        ):
            raise ValueError(f"every_updates must be an int >= 1, got {every_updates!r}")
        self.interval_s = float(interval_s)
        self.every_updates = every_updates
        self._save = save
        self._updates = updates
        self._clock = clock
        self._lock = threading.Lock()
        self._saved_updates = updates()  # what was restored counts as saved
        self._saved_at = clock()
        self._retry_at = -math.inf
        self.saves_total = 0
        """Saves that completed (periodic and final)."""
        self.failures_total = 0
        """Saves that raised (logged; retried after `interval_s`)."""

    @property
    def poll_s(self) -> float:
        """How often `run` checks whether a save is due."""
        return min(_MAX_POLL_S, self.interval_s)

    def due(self) -> bool:
        """Whether a save should run now."""
        now = self._clock()
        if now < self._retry_at:
            return False
        updates = self._updates()
        if updates == self._saved_updates:
            return False
        return (
            now - self._saved_at >= self.interval_s
            or updates < self._saved_updates  # reset: what is stored is stale
            or updates - self._saved_updates >= self.every_updates
        )

    def save(self) -> None:
        """Save now (whether due or not). Raises what `save` raised."""
        with self._lock:
            updates = self._updates()  # read before the state: at worst the next save repeats
            try:
                self._save()
            except Exception:
                self.failures_total += 1
                self._retry_at = self._clock() + self.interval_s
                raise
            self._saved_updates = updates
            self._saved_at = self._clock()
            self.saves_total += 1

    def save_if_due(self) -> bool:
        """Save if due; True if it saved. A failed save is logged, not raised."""
        if not self.due():
            return False
        try:
            self.save()
        except Exception:
            log.exception("saving the learned state failed; retrying in %.0f s", self.interval_s)
            return False
        return True

    async def run(self, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Until cancelled: every `poll_s`, save in a worker thread if due (a database write
        never blocks the event loop)."""
        while True:
            await sleep(self.poll_s)
            if self.due():
                await asyncio.to_thread(self.save_if_due)
