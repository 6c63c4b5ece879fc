"""An embedder for concurrency tests: every call blocks until the test opens its gate.

`tests/support` is on pytest's `pythonpath`, so any suite can
`from gatedembedder import GatedEmbedder`.

It records each call's texts and the most calls that ran at once, sets `entered` when a call
starts (a test waits on it instead of sleeping), and, with a `clock`, advances it by `cost_s`
per text as the call ends, so a timed batch took exactly that long. Every text embeds to the
same unit vector: each lookup of a scope holding any entry is a hit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from fakeclock import FakeClock

from intelligence.embed import EmbedderKind


class GatedEmbedder:
    """See the module docstring."""

    dim = 8
    kind = EmbedderKind.TRANSFORMER

    def __init__(self, clock: FakeClock | None = None, *, cost_s: float = 0.0) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []
        self.most_at_once = 0
        self._clock = clock
        self._cost_s = cost_s
        self._running = 0
        self._lock = threading.Lock()

    @staticmethod
    def vector() -> np.ndarray:
        """The vector every text embeds to."""
        row = np.zeros(GatedEmbedder.dim, dtype=np.float32)
        row[0] = 1.0
        return row

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
            self.calls.append(list(texts))
        self.entered.set()
        try:
            if not self.gate.wait(60):
                raise AssertionError("the test never opened the gate")
            if self._clock is not None:
                self._clock.advance(self._cost_s * len(texts))
        finally:
            with self._lock:
                self._running -= 1
        return np.tile(self.vector(), (len(texts), 1))
