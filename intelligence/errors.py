"""The intelligence layer's error tree.

    IntelligenceError
    ├── EmbedderUnavailable   (also RuntimeError) no embedder could be loaded
    ├── IndexFileError        (also ValueError) a persisted index file cannot be read
    ├── UnknownArm            (also KeyError) an arm the router was not built with
    └── LearnerStateError     (also ValueError) a saved learner state that cannot be restored
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


class UnknownArm(IntelligenceError, KeyError):
    """`arm` is not one of the router's arms."""

    def __init__(self, arm: object, arms: tuple[str, ...]) -> None:
        self.arm = arm
        self.arms = arms
        super().__init__(f"unknown arm {arm!r}; the router's arms are {list(arms)!r}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class LearnerStateError(IntelligenceError, ValueError):
    """A saved learner state (named `name`) is malformed or of another format version."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"learner state {name!r} cannot be restored: {reason}")
