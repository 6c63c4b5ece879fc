"""A bounded queue with four priority levels, ageing, and shedding of the lowest priority."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from orchestrator.errors import Overloaded
from orchestrator.request import Priority

__all__ = ["PriorityQueue", "Queued"]


class Queued(Protocol):
    """What the queue needs from an item: its priority, and a slot for its arrival time."""

    priority: Priority
    enqueued_at: float


T = TypeVar("T", bound=Queued)

_LEVELS = len(Priority)
_LOW_RANK = Priority.LOW.rank


class PriorityQueue(Generic[T]):
    """Serves the highest effective priority first, FIFO within a level; never blocks a producer.

    Ageing: an item's effective rank improves by one level per `ageing_s` seconds waited, so
    `low` work is served eventually even under a steady stream of `high` work.
    Shedding, on `put`: `low` arrivals are refused once depth reaches
    `shed_threshold() * capacity()`; any arrival finding the queue full displaces the newest item
    of a strictly lower priority (returned to the caller to fail) or is refused. Refusal raises
    `Overloaded`. `capacity` and `shed_threshold` are callables so live changes apply at once.
    """

    __slots__ = (
        "_capacity",
        "_clock",
        "_getters",
        "_levels",
        "_shed_threshold",
        "_size",
        "ageing_s",
        "name",
        "shed_total",
    )

    def __init__(
        self,
        name: str,
        *,
        capacity: Callable[[], int],
        shed_threshold: Callable[[], float] = lambda: 1.0,
        ageing_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ageing_s <= 0:
            raise ValueError(f"ageing_s must be > 0, got {ageing_s!r}")
        self.name = name
        self._capacity = capacity
        self._shed_threshold = shed_threshold
        self.ageing_s = ageing_s
        self._clock = clock
        self._levels: tuple[deque[T], ...] = tuple(deque() for _ in range(_LEVELS))
        self._size = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self.shed_total = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return self._capacity()

    def put(self, item: T) -> T | None:
        """Enqueue `item`; return a displaced lower-priority item, if one made room, else None.

        Raises `Overloaded` (and counts the shed) when `item` itself is refused.
        """
        capacity = self._capacity()
        size = self._size
        rank = item.priority.rank
        displaced: T | None = None
        if size >= capacity or (rank == _LOW_RANK and size >= self._shed_threshold() * capacity):
            displaced = self._displace_below(rank) if size >= capacity else None
            if displaced is None:
                self.shed_total += 1
                raise Overloaded(self.name, str(item.priority), size, capacity)
        item.enqueued_at = self._clock()
        self._levels[rank].append(item)
        self._size += 1
        getters = self._getters
        while getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                break
        return displaced

    def get_nowait(self) -> T | None:
        """The next item by effective priority, or None when empty."""
        if not self._size:
            return None
        levels = self._levels
        best = -1
        best_score = 0.0
        now = 0.0
        for rank in range(_LEVELS):
            level = levels[rank]
            if not level:
                continue
            if best < 0:
                best = rank
                if self._size == len(level):  # one level holds everything: no ageing to weigh
                    break
                now = self._clock()
                best_score = rank - (now - level[0].enqueued_at) / self.ageing_s
                continue
            score = rank - (now - level[0].enqueued_at) / self.ageing_s
            if score < best_score:
                best, best_score = rank, score
        self._size -= 1
        return levels[best].popleft()

    async def wait(self) -> None:
        """Return once the queue holds an item (without taking it)."""
        while not self._size:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if self._size and not getter.cancelled():
                    self._wake_next()
                raise

    async def get(self) -> T:
        """Wait for and return the next item."""
        if not self._size:
            await self.wait()
        item = self.get_nowait()
        assert item is not None
        return item

    def drain(self) -> list[T]:
        """Remove and return everything queued (used at shutdown)."""
        items = [item for level in self._levels for item in level]
        for level in self._levels:
            level.clear()
        self._size = 0
        return items

    def depth_by_priority(self) -> dict[Priority, int]:
        return {p: len(self._levels[p.rank]) for p in Priority}

    def _displace_below(self, rank: int) -> T | None:
        for lower in range(_LEVELS - 1, rank, -1):
            level = self._levels[lower]
            if level:
                self._size -= 1
                self.shed_total += 1
                return level.pop()
        return None

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return
