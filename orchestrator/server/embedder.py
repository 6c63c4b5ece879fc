"""`LazyEmbedder`: the embedding model `/v1/embeddings` serves, loaded on first use."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from intelligence.embed import Embedder

__all__ = ["LazyEmbedder"]


class LazyEmbedder:
    """The embedder `/v1/embeddings` serves: the one given, or `DefaultEmbedder`, imported and
    created on first use (importing the intelligence layer pulls in numpy and, on the first
    embedding, torch; `orchestrator --help` must stay fast). Thread-safe."""

    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder
        self._lock = threading.Lock()

    def get(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                from intelligence.embed import DefaultEmbedder

                self._embedder = DefaultEmbedder()
            return self._embedder
