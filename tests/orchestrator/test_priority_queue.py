"""Priority queue: four levels, ageing, and shedding of the lowest priority first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from fakeclock import FakeClock

from orchestrator.errors import Overloaded
from orchestrator.request import Priority
from orchestrator.resilience.priority import PriorityQueue


@dataclass
class Item:
    name: str
    priority: Priority = Priority.NORMAL
    enqueued_at: float = 0.0


def _queue(
    clock: FakeClock, capacity: int = 10, shed_threshold: float = 1.0
) -> PriorityQueue[Item]:
    return PriorityQueue(
        "stage",
        capacity=lambda: capacity,
        shed_threshold=lambda: shed_threshold,
        ageing_s=5.0,
        clock=clock,
    )


def _drain(queue: PriorityQueue[Item]) -> list[str]:
    names = []
    while (item := queue.get_nowait()) is not None:
        names.append(item.name)
    return names


def test_higher_priority_is_served_first_fifo_within_a_level(clock: FakeClock) -> None:
    """critical before high before normal before low; arrival order within a level."""
    queue = _queue(clock)
    for name, priority in [
        ("low1", Priority.LOW),
        ("n1", Priority.NORMAL),
        ("crit", Priority.CRITICAL),
        ("n2", Priority.NORMAL),
        ("high", Priority.HIGH),
    ]:
        queue.put(Item(name, priority))
    assert _drain(queue) == ["crit", "high", "n1", "n2", "low1"]


def test_ageing_lets_low_priority_through_a_steady_high_stream(clock: FakeClock) -> None:
    """A low item that has waited two ageing periods beats a fresh high one."""
    queue = _queue(clock)
    queue.put(Item("old-low", Priority.LOW))
    clock.advance(10.1)
    queue.put(Item("fresh-high", Priority.HIGH))
    assert _drain(queue) == ["old-low", "fresh-high"]


def test_full_queue_sheds_the_arrival_with_overloaded(clock: FakeClock) -> None:
    """When full of equal priority work the newcomer is refused and counted."""
    queue = _queue(clock, capacity=2)
    queue.put(Item("a"))
    queue.put(Item("b"))
    with pytest.raises(Overloaded) as info:
        queue.put(Item("c"))
    assert (info.value.stage, info.value.depth, info.value.capacity) == ("stage", 2, 2)
    assert queue.shed_total == 1
    assert _drain(queue) == ["a", "b"]


def test_higher_priority_arrival_displaces_the_newest_lowest_item(clock: FakeClock) -> None:
    """A full queue makes room for high work by handing back its newest low item."""
    queue = _queue(clock, capacity=3)
    for name, priority in [("n", Priority.NORMAL), ("l1", Priority.LOW), ("l2", Priority.LOW)]:
        queue.put(Item(name, priority))
    displaced = queue.put(Item("h", Priority.HIGH))
    assert displaced is not None and displaced.name == "l2"
    assert queue.shed_total == 1
    assert _drain(queue) == ["h", "n", "l1"]


def test_low_priority_is_shed_above_the_shed_threshold(clock: FakeClock) -> None:
    """Past the threshold, low arrivals are refused while normal ones still fit."""
    queue = _queue(clock, capacity=4, shed_threshold=0.5)
    queue.put(Item("a"))
    queue.put(Item("b"))
    with pytest.raises(Overloaded):
        queue.put(Item("low", Priority.LOW))
    queue.put(Item("c"))
    assert len(queue) == 3


def test_capacity_is_read_live(clock: FakeClock) -> None:
    """Raising the capacity callable's value admits more at once."""
    capacity = [1]
    queue: PriorityQueue[Item] = PriorityQueue("s", capacity=lambda: capacity[0], clock=clock)
    queue.put(Item("a"))
    with pytest.raises(Overloaded):
        queue.put(Item("b"))
    capacity[0] = 2
    queue.put(Item("b"))
    assert len(queue) == 2


async def test_get_waits_for_an_item(clock: FakeClock) -> None:
    """A consumer parked on an empty queue wakes when an item arrives."""
    queue = _queue(clock)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    queue.put(Item("x"))
    assert (await getter).name == "x"


def test_ageing_must_be_positive() -> None:
    """ageing_s is validated."""
    with pytest.raises(ValueError, match="ageing_s"):
        PriorityQueue("s", capacity=lambda: 1, ageing_s=0)
