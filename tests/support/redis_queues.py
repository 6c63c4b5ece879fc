"""A `RedisQueue` of its own for one test, on the local Redis (127.0.0.1:6379): skipped, saying
so, when there is none; its keys deleted afterwards."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"


def fresh_prefix() -> str:
    return f"test:queue:{uuid.uuid4().hex}:"


@contextlib.contextmanager
def redis_queue(prefix: str | None = None, **options: Any) -> Iterator[Any]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    from coordinator.redis_queue import RedisQueue

    prefix = prefix or fresh_prefix()
    queue = RedisQueue(REDIS_URL, prefix=prefix, **options)
    try:
        yield queue
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
        queue.close()
