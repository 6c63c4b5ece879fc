"""SemanticDedup's async lookups: dynamic batches on one embedding thread, and a wait budget
beyond which a lookup is a miss at once instead of queueing behind the embedder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from fakeclock import FakeClock
from gatedembedder import GatedEmbedder

from intelligence import SemanticDedup


def stocked(embedder: GatedEmbedder, **kwargs: object) -> SemanticDedup[str]:
    """A dedup whose scope "s" holds one answer every lookup there is served (same vector)."""
    dedup: SemanticDedup[str] = SemanticDedup(
        embedder, verify=False, clock=FakeClock(0.0), **kwargs  # type: ignore[arg-type]
    )
    dedup.insert("stored", "answer", scope="s", vector=GatedEmbedder.vector())
    return dedup


async def entered(embedder: GatedEmbedder) -> None:
    """Until the embedder has a call running (waits on its event, off the loop)."""
    assert await asyncio.to_thread(embedder.entered.wait, 60)
    embedder.entered.clear()


async def test_lookups_arriving_while_a_batch_runs_become_one_next_batch() -> None:
    """Ten lookups that arrive one loop turn apart while one is embedded wait, and are embedded
    in ONE next call, after it."""
    embedder = GatedEmbedder()
    dedup = stocked(embedder)
    first = asyncio.create_task(dedup.alookup("first", scope="s"))
    await entered(embedder)
    rest = []
    for i in range(10):
        rest.append(asyncio.create_task(dedup.alookup(f"q{i}", scope="s")))
        await asyncio.sleep(0)  # one loop turn: the task queues its lookup
    assert embedder.calls == [["first"]]
    embedder.gate.set()
    hits = await asyncio.gather(first, *rest)
    assert embedder.calls == [["first"], [f"q{i}" for i in range(10)]]
    assert embedder.most_at_once == 1
    assert all(hit is not None and hit.value == "answer" for hit in hits)


async def test_a_backlog_is_embedded_max_batch_at_a_time_never_two_calls_at_once() -> None:
    """Beyond `max_batch`, the waiting lookups run as consecutive batches, one call at a time."""
    embedder = GatedEmbedder()
    dedup = stocked(embedder, max_batch=4)
    first = asyncio.create_task(dedup.alookup("first", scope="s"))
    await entered(embedder)
    rest = [asyncio.create_task(dedup.alookup(f"q{i}", scope="s")) for i in range(10)]
    await asyncio.sleep(0)
    embedder.gate.set()
    hits = await asyncio.gather(first, *rest)
    assert [len(call) for call in embedder.calls] == [1, 4, 4, 2]
    assert embedder.most_at_once == 1
    assert all(hit is not None for hit in hits)


async def test_a_lookup_beyond_the_wait_budget_is_a_miss_at_once_and_counted() -> None:
    """With a 10 ms-a-prompt embedder and a 25 ms budget, a lookup behind a running prompt and
    two queued ones (30 ms) is answered None without waiting, and counted in `skipped_busy`;
    once the backlog clears, lookups are served again."""
    clock = FakeClock(0.0)
    embedder = GatedEmbedder(clock, cost_s=0.010)
    dedup = stocked(embedder, max_wait_s=0.025, timer=clock)
    embedder.gate.set()
    assert await dedup.alookup("timed", scope="s") is not None  # measures 10 ms a prompt
    embedder.gate.clear()
    embedder.entered.clear()

    running = asyncio.create_task(dedup.alookup("running", scope="s"))
    await entered(embedder)
    assert dedup.expected_wait_s() == pytest.approx(0.010)
    queued = [asyncio.create_task(dedup.alookup(t, scope="s")) for t in ("a", "b")]
    await asyncio.sleep(0)
    assert dedup.expected_wait_s() == pytest.approx(0.030)
    late = asyncio.create_task(dedup.alookup("late", scope="s"))
    await asyncio.sleep(0)  # one loop turn, the embedder still held
    assert late.done() and late.result() is None
    assert dedup.stats().skipped_busy == 1

    embedder.gate.set()
    assert all(hit is not None for hit in await asyncio.gather(running, *queued))
    assert dedup.expected_wait_s() == 0.0
    assert await dedup.alookup("late", scope="s") is not None
    assert dedup.stats().skipped_busy == 1
    assert ["late"] in embedder.calls and ["a", "b"] in embedder.calls


async def test_the_estimate_counts_down_as_the_running_batch_proceeds() -> None:
    """The running batch's remaining time is its measured cost minus the time it has run."""
    clock = FakeClock(0.0)
    embedder = GatedEmbedder(clock, cost_s=0.010)
    dedup = stocked(embedder, max_wait_s=1.0, timer=clock)
    embedder.gate.set()
    await dedup.alookup("timed", scope="s")
    embedder.gate.clear()
    embedder.entered.clear()
    running = asyncio.create_task(dedup.alookup("running", scope="s"))
    await entered(embedder)
    clock.advance(0.004)
    assert dedup.expected_wait_s() == pytest.approx(0.006)
    clock.advance(0.010)  # overran its estimate: nothing is known to remain
    assert dedup.expected_wait_s() == 0.0
    embedder.gate.set()
    await running


async def test_before_any_batch_was_timed_every_lookup_waits_its_turn() -> None:
    """With no measured cost the estimate is 0: even a zero budget admits the lookups."""
    embedder = GatedEmbedder()
    dedup = stocked(embedder, max_wait_s=0.0)
    first = asyncio.create_task(dedup.alookup("first", scope="s"))
    await entered(embedder)
    second = asyncio.create_task(dedup.alookup("second", scope="s"))
    await asyncio.sleep(0)
    embedder.gate.set()
    assert all(hit is not None for hit in await asyncio.gather(first, second))
    assert dedup.stats().skipped_busy == 0


async def test_a_lookup_whose_caller_stopped_waiting_is_not_embedded() -> None:
    """A queued lookup cancelled before its batch starts never reaches the embedder."""
    embedder = GatedEmbedder()
    dedup = stocked(embedder)
    first = asyncio.create_task(dedup.alookup("first", scope="s"))
    await entered(embedder)
    gone = asyncio.create_task(dedup.alookup("gone", scope="s"))
    kept = asyncio.create_task(dedup.alookup("kept", scope="s"))
    await asyncio.sleep(0)
    gone.cancel()
    embedder.gate.set()
    await asyncio.gather(first, kept)
    assert embedder.calls == [["first"], ["kept"]]


async def test_a_failing_embedder_fails_its_batch_and_the_next_batch_still_runs() -> None:
    """An embedding error reaches that batch's callers; later lookups are embedded again."""

    class FailsFirst(GatedEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            rows = super().embed(texts)
            if len(self.calls) == 1:
                raise RuntimeError("boom")
            return rows

    embedder = FailsFirst()
    dedup = stocked(embedder)
    embedder.gate.set()
    with pytest.raises(RuntimeError, match="boom"):
        await dedup.alookup("x", scope="s")
    assert await dedup.alookup("y", scope="s") is not None


@pytest.mark.parametrize(("kwargs", "name"), [({"max_batch": 0}, "max_batch"),
                                              ({"max_wait_s": -0.001}, "max_wait_s")])
def test_bad_batching_parameters_are_value_errors_naming_them(
    kwargs: dict[str, float], name: str
) -> None:
    """`max_batch` below 1 and a negative `max_wait_s` are rejected by name."""
    with pytest.raises(ValueError, match=name):
        SemanticDedup(GatedEmbedder(), **kwargs)  # type: ignore[arg-type]
