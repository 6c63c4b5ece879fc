"""Helpers for the memory_db tests: worker functions for real processes.

The workers live here (not in a test module) so `spawn` children can import them.
"""

from __future__ import annotations

from typing import Any

from memory_db import AgentMemory, read_schema_version


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
