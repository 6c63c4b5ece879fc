"""Many real processes writing to one memory at once lose nothing."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

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


def test_threads_sharing_one_memory_lose_nothing(memory: AgentMemory, task_id: str) -> None:
    """8 threads × 50 attempts through one AgentMemory (as the fleet's agent loops do) → 400."""
    threads_n, each = 8, 50

    def work(worker: int) -> None:
        for number in range(1, each + 1):
            memory.start_attempt(task_id, attempt=number, agent=f"thread-{worker}", log_path=None)

    with ThreadPoolExecutor(max_workers=threads_n) as pool:
        for future in [pool.submit(work, worker) for worker in range(threads_n)]:
            future.result()
    attempts = memory.attempts(task_id, limit=10 * threads_n * each)
    assert len({(a.agent, a.attempt) for a in attempts}) == len(attempts) == threads_n * each
