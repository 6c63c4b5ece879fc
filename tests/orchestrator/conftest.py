"""Shared fixtures for the orchestrator tests."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test advances it."""
    return FakeClock(start=1000.0)
