"""Helpers for the memory_db tests: a fake clock, and worker functions for real processes.

The workers live here (not in a test module) so `spawn` children can import them.
"""

from __future__ import annotations

from typing import Any

from memory_db import AgentMemory, read_schema_version


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_fresh_memory(url: str, barrier: Any) -> None:
    """Child process: open the memory at the same moment as its siblings; exit 0 if it worked."""
    barrier.wait(timeout=60)
    with AgentMemory(url) as memory:
        version = read_schema_version(memory.engine)
    if version is None:
        raise SystemExit("schema was not created")


def write_attempts(url: str, worker: int, count: int, barrier: Any) -> None:
    """Child process: record one shared task, then `count` attempts at it, as fast as it can."""
    with AgentMemory(url) as memory:
        barrier.wait(timeout=60)
        memory.record_task(
            "shared",
            title=f"written by worker {worker}",
            prompt="",
            priority="normal",
            state="claimed",
            created_by=f"worker-{worker}",
        )
        for number in range(1, count + 1):
            memory.start_attempt("shared", attempt=number, agent=f"worker-{worker}", log_path=None)
