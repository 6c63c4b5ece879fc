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


@pytest.fixture
def redis_queue_url():
    """A fresh queue name on the local Redis (skipped without one); its keys go afterwards."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    import uuid

    name = f"test-cli-{uuid.uuid4().hex[:12]}"
    yield f"redis://127.0.0.1:6379/0#{name}"
    keys = list(client.scan_iter(match=f"coordinator:{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()
