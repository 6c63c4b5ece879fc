"""The one fake clock every test suite uses: it moves only when a test advances it.

`tests/support` is on pytest's `pythonpath`, so any suite can `from fakeclock import FakeClock`.

Stands in for `time.time`, `time.monotonic` or a boot clock (call it), and for
`asyncio.sleep` (`await clock.sleep(s)` records the wait and advances instead of waiting).
"""

from __future__ import annotations


class FakeClock:
    """Seconds that move only when told; `sleep` advances instead of waiting."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept_s: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s

    async def sleep(self, s: float) -> None:
        self.slept_s.append(s)
        self.now += max(0.0, s)
