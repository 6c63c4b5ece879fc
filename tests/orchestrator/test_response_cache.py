"""Response cache conformance: the same behaviour from the in-memory LRU and from Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from fakeclock import FakeClock
from pipeline_fakes import ScriptedWorker

from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
from orchestrator.request import Usage
from orchestrator.resilience.cache import CachedAnswer, MemoryCache, RedisCache, ResponseCache

REDIS_URL = "redis://127.0.0.1:6379/0"
ANSWER = CachedAnswer(
    text="hello",
    usage=Usage(
        input_tokens=3, output_tokens=1, cache_read_input_tokens=40, cache_creation_input_tokens=7
    ),
    provider="echo",
    model="echo",
)


def _redis_available() -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[ResponseCache]:
    if request.param == "memory":
        yield MemoryCache(max_entries=100)
        return
    if not _redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    backend = RedisCache(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        yield backend
    finally:
        await backend.clear()
        await backend.aclose()


async def test_miss_then_hit(cache: ResponseCache) -> None:
    """A key not put is a miss; after `put` it returns the same answer."""
    assert await cache.get("k") is None
    await cache.put("k", ANSWER, ttl_s=60)
    assert await cache.get("k") == ANSWER


async def test_put_replaces(cache: ResponseCache) -> None:
    """A second put for a key replaces the first."""
    await cache.put("k", ANSWER, ttl_s=60)
    newer = CachedAnswer(text="bye", usage=Usage(), provider="p", model="m", finish_reason=None)
    await cache.put("k", newer, ttl_s=60)
    assert await cache.get("k") == newer


async def test_redis_entries_carry_their_ttl() -> None:
    """Redis stores each entry with the TTL given (Redis itself expires it)."""
    if not _redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    cache = RedisCache(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        await cache.put("k", ANSWER, ttl_s=30)
        ttl_ms = await cache._client.pttl(cache.prefix + "k")
    finally:
        await cache.clear()
        await cache.aclose()
    assert 29_000 < ttl_ms <= 30_000


async def test_clear_empties(cache: ResponseCache) -> None:
    """`clear` removes every entry."""
    await cache.put("a", ANSWER, ttl_s=60)
    await cache.put("b", ANSWER, ttl_s=60)
    await cache.clear()
    assert await cache.get("a") is None and await cache.get("b") is None


async def test_rejects_non_positive_ttl(cache: ResponseCache) -> None:
    """ttl_s must be positive."""
    with pytest.raises(ValueError, match="ttl_s"):
        await cache.put("k", ANSWER, ttl_s=0)


async def test_memory_cache_evicts_the_least_recently_used(clock: FakeClock) -> None:
    """Beyond max_entries the entry untouched longest goes first."""
    cache = MemoryCache(max_entries=2, clock=clock)
    await cache.put("a", ANSWER, ttl_s=60)
    await cache.put("b", ANSWER, ttl_s=60)
    await cache.get("a")
    await cache.put("c", ANSWER, ttl_s=60)
    assert await cache.get("b") is None
    assert await cache.get("a") == ANSWER


async def test_memory_cache_ttl_follows_its_clock(clock: FakeClock) -> None:
    """Expiry is judged by the injected clock."""
    cache = MemoryCache(clock=clock)
    await cache.put("k", ANSWER, ttl_s=10)
    clock.advance(9.9)
    assert await cache.get("k") == ANSWER
    clock.advance(0.1)
    assert await cache.get("k") is None


def _answer(text: str) -> CachedAnswer:
    return CachedAnswer(text=text, usage=ANSWER.usage, provider="p", model="m")


async def test_memory_cache_holds_at_most_its_byte_budget(clock: FakeClock) -> None:
    """Twenty 1 MB answers in a 3 MB budget: the newest fit, the oldest went, the count of
    bytes held stays under the budget; an answer bigger than the budget is not kept at all."""
    cache = MemoryCache(max_bytes=3_000_000, clock=clock)
    for i in range(20):
        await cache.put(f"k{i}", _answer("x" * 1_000_000), ttl_s=60)
        assert cache.bytes <= 3_000_000
    assert len(cache) == 2 and await cache.get("k19") is not None
    assert await cache.get("k0") is None
    await cache.put("huge", _answer("x" * 3_000_001), ttl_s=60)
    assert await cache.get("huge") is None and await cache.get("k19") is not None


async def test_memory_cache_sweeps_expired_entries_nobody_asks_for(clock: FakeClock) -> None:
    """Entries past their TTL give their memory back at the next sweep, although their keys
    are never asked for again; one put after `sweep_every_s` triggers it."""
    cache = MemoryCache(sweep_every_s=60, clock=clock)
    for i in range(5):
        await cache.put(f"old{i}", _answer("a" * 1000), ttl_s=10)
    held = cache.bytes
    clock.advance(30)
    await cache.put("fresh", _answer("b"), ttl_s=600)
    assert len(cache) == 6  # not yet: the sweep is due at 60 s
    clock.advance(30)
    await cache.put("fresh2", _answer("c"), ttl_s=600)
    assert len(cache) == 2 and cache.bytes < held / 100
    assert cache.sweep() == 0


def test_redis_cache_refuses_a_non_redis_url() -> None:
    """A URL of the wrong scheme is rejected naming `url`."""
    with pytest.raises(ValueError, match="url"):
        RedisCache("http://localhost:6379")


async def test_two_pipelines_share_answers_through_redis() -> None:
    """A second pipeline (another process, in real life) is served the first one's answer."""
    if not _redis_available():
        pytest.skip("no Redis on 127.0.0.1:6379")
    shared = RedisCache(REDIS_URL, prefix=f"test:{uuid.uuid4().hex}:")
    first, second = ScriptedWorker(), ScriptedWorker()
    try:
        async with Pipeline(PipelineConfig(), first, cache=shared) as pipeline:
            await pipeline.infer(InferenceRequest("shared question"))
        async with Pipeline(PipelineConfig(), second, cache=shared) as pipeline:
            response = await pipeline.infer(InferenceRequest("shared question"))
    finally:
        await shared.clear()
        await shared.aclose()
    assert response.cached and response.text == "shared question"
    assert (first.calls, second.calls) == (1, 0)


async def test_a_redis_url_in_the_config_selects_the_redis_backend() -> None:
    """PipelineConfig(redis_url=...) builds a RedisCache; without it the cache is in memory."""
    assert isinstance(Pipeline(PipelineConfig(), EchoWorker()).cache, MemoryCache)
    pipeline = Pipeline(PipelineConfig(redis_url=REDIS_URL), EchoWorker())
    assert isinstance(pipeline.cache, RedisCache)
    await pipeline.cache.aclose()


class BrokenCache:
    """A cache backend that is down: every call raises."""

    async def get(self, key: str) -> CachedAnswer | None:
        raise ConnectionError("cache down")

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: float) -> None:
        raise ConnectionError("cache down")

    async def clear(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_a_failing_cache_never_fails_a_request() -> None:
    """With the cache backend down, requests are answered upstream and the errors counted."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker, cache=BrokenCache()) as pipeline:
        response = await pipeline.infer(InferenceRequest("q"))
        snapshot = pipeline.snapshot()
    assert response.text == "q" and not response.cached
    assert snapshot.cache_errors == 2 and snapshot.errors_total == 0
