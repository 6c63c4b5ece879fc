"""Many real processes writing to one memory at once lose nothing."""

from __future__ import annotations

import multiprocessing

from memdb_helpers import write_attempts

from memory_db import AgentMemory

WORKERS = 8
ATTEMPTS_EACH = 100


def test_eight_processes_writing_attempts_at_once_lose_nothing(db_url: str) -> None:
    """8 processes × 100 attempts on one database → exactly 800 distinct rows."""
    with AgentMemory(db_url) as memory:
        memory.record_task(
            "shared", title="", prompt="", priority="normal", state="pending", created_by=None
        )
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(WORKERS)
        children = [
            context.Process(target=write_attempts, args=(db_url, worker, ATTEMPTS_EACH, barrier))
            for worker in range(WORKERS)
        ]
        for child in children:
            child.start()
        for child in children:
            child.join(timeout=120)
        assert [child.exitcode for child in children] == [0] * WORKERS

        attempts = memory.attempts("shared", limit=10 * WORKERS * ATTEMPTS_EACH)
        assert len(attempts) == WORKERS * ATTEMPTS_EACH
        assert len({a.attempt_id for a in attempts}) == WORKERS * ATTEMPTS_EACH
        assert {(a.agent, a.attempt) for a in attempts} == {
            (f"worker-{worker}", number)
            for worker in range(WORKERS)
            for number in range(1, ATTEMPTS_EACH + 1)
        }
        assert memory.task("shared").created_by in {f"worker-{w}" for w in range(WORKERS)}
