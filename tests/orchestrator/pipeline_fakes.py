"""Test doubles for the pipeline tests: a fake clock and scripted workers."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock that only moves when told; `sleep` advances it instead of waiting."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        self.slept_s: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s

    async def sleep(self, dt_s: float) -> None:
        self.slept_s.append(dt_s)
        self.now_s += max(0.0, dt_s)
