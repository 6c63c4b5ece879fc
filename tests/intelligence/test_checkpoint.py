"""The learned router's state is saved while it runs (`Checkpointer`, `IntelligenceBridge`
with a store): on a cadence of seconds or updates, only when something was learned, off the
event loop, and once more at close. Clocked: no sleeps."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from fakeclock import FakeClock

from intelligence.bridge import IntelligenceBridge
from intelligence.checkpoint import Checkpointer
from memory_db import AgentMemory


class Learner:
    """A count of updates and a record of each save (and the thread it ran on)."""

    def __init__(self) -> None:
        self.updates = 0
        self.saved: list[int] = []
        self.threads: list[str] = []
        self.fail = False

    def save(self) -> None:
        if self.fail:
            raise OSError("database is locked")
        self.saved.append(self.updates)
        self.threads.append(threading.current_thread().name)


def test_nothing_learned_nothing_saved() -> None:
    """However long it runs, a learner that learned nothing since the last save is not saved."""
    clock, learner = FakeClock(), Learner()
    saver = Checkpointer(learner.save, lambda: learner.updates, interval_s=60, clock=clock)
    clock.advance(3600)
    assert not saver.due() and not saver.save_if_due()
    assert learner.saved == []


def test_a_save_is_due_once_the_interval_passed_with_something_learned() -> None:
    """One update, then `interval_s`: a save; right after it, none is due."""
    clock, learner = FakeClock(), Learner()
    saver = Checkpointer(learner.save, lambda: learner.updates, interval_s=60,
                         every_updates=1000, clock=clock)
    learner.updates = 3
    clock.advance(59.9)
    assert not saver.due()
    clock.advance(0.1)
    assert saver.save_if_due()
    assert learner.saved == [3] and saver.saves_total == 1
    clock.advance(120)
    assert not saver.due()  # nothing new since


def test_enough_updates_make_a_save_due_before_the_interval() -> None:
    """`every_updates` new updates are saved without waiting for `interval_s`."""
    clock, learner = FakeClock(), Learner()
    saver = Checkpointer(learner.save, lambda: learner.updates, interval_s=60,
                         every_updates=10, clock=clock)
    learner.updates = 9
    assert not saver.due()
    learner.updates = 10
    assert saver.save_if_due() and learner.saved == [10]


def test_a_failed_save_is_logged_and_retried_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A save that raises is logged, not raised, and not retried before `interval_s`."""
    clock, learner = FakeClock(), Learner()
    saver = Checkpointer(learner.save, lambda: learner.updates, interval_s=60,
                         every_updates=1, clock=clock)
    learner.updates, learner.fail = 5, True
    with caplog.at_level(logging.ERROR):
        assert not saver.save_if_due()
    assert "saving the learned state failed" in caplog.text and saver.failures_total == 1
    learner.fail = False
    clock.advance(59)
    assert not saver.due()
    clock.advance(1)
    assert saver.save_if_due() and learner.saved == [5]


@pytest.mark.parametrize(
    ("kwargs", "name"), [({"interval_s": 0}, "interval_s"), ({"every_updates": 0}, "every_updates")]
)
def test_bad_cadence_is_refused_naming_it(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Checkpointer(lambda: None, lambda: 0, **kwargs)


def test_run_saves_in_a_worker_thread_when_due() -> None:
    """`run` checks every `poll_s` and saves, when due, off the event loop's thread."""
    clock, learner = FakeClock(), Learner()
    saver = Checkpointer(learner.save, lambda: learner.updates, interval_s=5, clock=clock)
    polls = 0

    async def sleep(s: float) -> None:
        nonlocal polls
        polls += 1
        if polls > 12:
            raise asyncio.CancelledError
        learner.updates += 1
        await clock.sleep(s)

    async def drive() -> str:
        with pytest.raises(asyncio.CancelledError):
            await saver.run(sleep=sleep)
        return threading.current_thread().name

    loop_thread = asyncio.run(drive())
    assert clock.slept_s == [1.0] * 12
    assert learner.saved == [5, 10]  # every 5 s that learned something
    assert loop_thread not in learner.threads


def test_the_bridge_saves_the_routers_state_while_it_runs(tmp_path) -> None:
    """With a store, the bridge's checkpointer writes what the router learned to the agent
    memory before any close: a new bridge on the same memory restores it."""
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with AgentMemory(url) as memory:
        bridge = IntelligenceBridge(["good", "bad"], semantic_dedup=False, seed=1, store=memory,
                                    save_interval_s=30, save_every=1000, clock=clock)
        assert bridge.router is not None and bridge.checkpointer is not None
        for _ in range(20):
            bridge.router.update("good", 0.9)
            bridge.router.update("bad", 0.1)
        assert not bridge.checkpointer.save_if_due()
        clock.advance(30)
        assert bridge.checkpointer.save_if_due()
        learned = bridge.router.estimates()
    with AgentMemory(url) as memory:  # the first bridge never closed nor saved at close
        restored = IntelligenceBridge(["good", "bad"], semantic_dedup=False, seed=2, store=memory)
        assert restored.router is not None
        assert restored.router.estimates() == learned
        assert restored.router.updates_total == 40


def test_without_a_store_autosave_returns_at_once() -> None:
    bridge = IntelligenceBridge(["good", "bad"], semantic_dedup=False, seed=1)
    assert bridge.checkpointer is None
    asyncio.run(asyncio.wait_for(bridge.autosave(), 5))
