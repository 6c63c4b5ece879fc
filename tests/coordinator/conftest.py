"""Shared fixtures for the coordinator tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeclock import FakeClock

from coordinator.queue import FolderQueue


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test advances it."""
    return FakeClock()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The tasks folder (the queue's root)."""
    path = tmp_path / "tasks"
    path.mkdir()
    return path


@pytest.fixture
def queue(root: Path, clock: FakeClock) -> FolderQueue:
    """A queue on `root` with a fake clock (wall, boot and monotonic alike) and a 10 s retry
    backoff base."""
    return FolderQueue(root, clock=clock, boot_clock=clock, monotonic=clock,
                       retry_backoff_s=10.0, max_backoff_s=300.0)
