"""Recording the fleet's lease renewals in agent memory without ever delaying one.

A heartbeat renews the lease in the queue first; what agent memory learns of it is a
report, not the renewal. A slow or unreachable memory (a PostgreSQL failover, a locked
SQLite file) must not hold an agent's next renewal back, so renewals are handed to one
writer thread. While it is busy, renewals of the same attempt coalesce into one write that
carries their count and the latest expiry, so what waits is bounded by the attempts running,
never by the memory's outage.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

__all__ = ["HeartbeatMemory", "RecordsHeartbeats"]

log = logging.getLogger(__name__)


class RecordsHeartbeats(Protocol):
    """What this needs of agent memory (memory_db.AgentMemory satisfies it)."""

    def record_heartbeat(self, attempt_id: int, *, lease_expires_at: float,
                         count: int = 1) -> None: ...


class HeartbeatMemory:
    """Hands lease renewals to `memory` from one background writer; `close` writes what is
    still waiting and stops it."""

    def __init__(self, memory: RecordsHeartbeats) -> None:
        self._memory = memory
        self._waiting: dict[int, tuple[int, float]] = {}  # attempt id -> (count, expiry)
        self._changed = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_forever, name="heartbeat-memory",
                                        daemon=True)
        self._writer.start()

    def renewed(self, attempt_id: int, lease_expires_at: float) -> None:
        """Note one renewal of attempt `attempt_id`'s lease; returns at once."""
        with self._changed:
            count, _ = self._waiting.get(attempt_id, (0, 0.0))
            self._waiting[attempt_id] = (count + 1, lease_expires_at)
            self._changed.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is waiting (for at most `timeout_s`) and stop the writer."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._writer.join(timeout_s)

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if not self._waiting:
                    return
                batch, self._waiting = self._waiting, {}
            for attempt_id, (count, expires) in batch.items():
                try:
                    self._memory.record_heartbeat(attempt_id, lease_expires_at=expires,
                                                  count=count)
                except Exception:
                    # The queue holds the lease; the memory only misses this report.
                    log.exception("agent memory: could not record heartbeats of attempt %d",
                                  attempt_id)
