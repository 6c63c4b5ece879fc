"""The intelligence layer's error tree.

    IntelligenceError
    ├── EmbedderUnavailable   (also RuntimeError) no embedder could be loaded
    └── IndexFileError        (also ValueError) a persisted index file cannot be read
"""

from __future__ import annotations

from pathlib import Path


class IntelligenceError(Exception):
    """Root of every error the intelligence layer raises on purpose."""


class EmbedderUnavailable(IntelligenceError, RuntimeError):
    """Neither sentence-transformers nor the lexical fallback could be loaded."""


class IndexFileError(IntelligenceError, ValueError):
    """A persisted semantic-dedup index file is unreadable or of another format version."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")
