"""Response cache: one interface, an in-process LRU and a Redis backend.

Keys are opaque strings built by the pipeline (scope prefix + request fingerprint); values are
`CachedAnswer`s. TTLs are passed on every `put`, so a live change applies to new entries.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from orchestrator.codec import dumps, loads
from orchestrator.request import Usage

__all__ = ["CachedAnswer", "MemoryCache", "RedisCache", "ResponseCache"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedAnswer:
    """What is kept of an answer to serve it again."""

    text: str
    usage: Usage
    provider: str
    model: str
    finish_reason: str | None = "stop"
    native: Mapping[str, Any] | None = None  # the provider's own answer, for native requests

    def to_json(self) -> str:
        return json.dumps(
            {
                "text": self.text,
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "cache_read_input_tokens": self.usage.cache_read_input_tokens,
                "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
                "provider": self.provider,
                "model": self.model,
                "finish_reason": self.finish_reason,
                "native": self.native,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedAnswer:
        data: dict[str, Any] = json.loads(raw)
        return cls(
            text=data["text"],
            usage=Usage(
                input_tokens=data["input_tokens"],
                output_tokens=data["output_tokens"],
                # absent in entries written before prompt-cache tokens were kept
                cache_read_input_tokens=data.get("cache_read_input_tokens", 0),
                cache_creation_input_tokens=data.get("cache_creation_input_tokens", 0),
            ),
            provider=data["provider"],
            model=data["model"],
            finish_reason=data["finish_reason"],
            native=data.get("native"),  # absent in entries written before native answers
        )


@runtime_checkable
class ResponseCache(Protocol):
    """A key → `CachedAnswer` store with per-entry TTL."""

    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: float) -> None: ...

    async def clear(self) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """In-process LRU with TTL, bounded twice: at most `max_entries` answers and at most
    `max_bytes` of them (key, text and native answer, as UTF-8/JSON bytes), evicting the
    least recently used; an answer bigger than `max_bytes` alone is not kept. Expired entries
    go when they are next asked for, and every `sweep_every_s` a put or get sweeps them all,
    so memory is given back even for keys nobody asks for again.

    Each entry is kept as one flat tuple of strings, numbers and bytes (`_flat`; `get` builds
    the `CachedAnswer` again), which Python's cyclic GC stops tracking: held as objects, a
    full cache is tens of thousands of objects that every full collection walks while the
    event loop waits (at 1,000 req/s, 31k objects of the cache and the feedback log made
    one collection take 19 ms).
    """

    __slots__ = (
        "_bytes",
        "_clock",
        "_entries",
        "_next_sweep",
        "max_bytes",
        "max_entries",
        "sweep_every_s",
    )

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 256 * 2**20,
        sweep_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes!r}")
        if not sweep_every_s > 0:
            raise ValueError(f"sweep_every_s must be > 0, got {sweep_every_s!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.sweep_every_s = sweep_every_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._next_sweep = clock() + sweep_every_s

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The bytes the entries held now count for."""
        return self._bytes

    def sweep(self) -> int:
        """Drop every expired entry now; returns how many went."""
        now = self._clock()
        self._next_sweep = now + self.sweep_every_s
        expired = [key for key, entry in self._entries.items() if entry[0] <= now]
        for key in expired:
            self._drop(key)
        return len(expired)

    def _drop(self, key: str) -> None:
        self._bytes -= self._entries.pop(key)[1]

    def _maybe_sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self.sweep()

    async def get(self, key: str) -> CachedAnswer | None:
        return self.get_nowait(key)

    def get_nowait(self, key: str) -> CachedAnswer | None:
        now = self._clock()
        self._maybe_sweep(now)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return _answer(entry)

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        now = self._clock()
        self._maybe_sweep(now)
        if key in self._entries:
            self._drop(key)
        native = None if answer.native is None else dumps(answer.native)
        size = len(key.encode()) + len(answer.text.encode()) + len(native or b"")
        if size > self.max_bytes:
            return  # alone it would push out everything else
        entries = self._entries
        entries[key] = _flat(now + ttl_s, size, answer, native)
        self._bytes += size
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(entries)))

    async def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def aclose(self) -> None:
        await self.clear()


# expires, size (key, text and native answer in bytes), text, provider, model, finish reason,
# the four token counts, the native answer as JSON
_Entry = tuple[float, int, str, str, str, str | None, int, int, int, int, bytes | None]


def _flat(expires: float, size: int, answer: CachedAnswer, native: bytes | None) -> _Entry:
    usage = answer.usage
    return (
        expires,
        size,
        answer.text,
        answer.provider,
        answer.model,
        answer.finish_reason,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
        native,
    )


def _answer(entry: _Entry) -> CachedAnswer:
    _, _, text, provider, model, finish_reason, tokens_in, tokens_out, read, created, native = entry
    return CachedAnswer(
        text=text,
        usage=Usage(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=created,
        ),
        provider=provider,
        model=model,
        finish_reason=finish_reason,
        native=None if native is None else loads(native),
    )


class RedisCache:
    """Cache in Redis (`redis.asyncio`), shared by every process pointed at the same URL.

    Entries expire through Redis' own TTL (millisecond precision); keys carry `prefix`.
    Eviction beyond memory limits is Redis' policy (`maxmemory-policy allkeys-lru`).
    `timeout_s` bounds each Redis call, so a hung Redis slows a request by at most that much.
    """

    __slots__ = ("_client", "prefix", "url")

    def __init__(
        self, url: str, *, prefix: str = "orchestrator:cache:", timeout_s: float = 1.0
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"url must be a redis:// or rediss:// or unix:// URL, got {url!r}")
        import redis.asyncio as aioredis  # optional dependency, loaded on use

        self.url, self.prefix = url, prefix
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def get(self, key: str) -> CachedAnswer | None:
        raw = await self._client.get(self.prefix + key)
        return None if raw is None else CachedAnswer.from_json(raw)

    async def put(self, key: str, answer: CachedAnswer, *, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        await self._client.set(self.prefix + key, answer.to_json(), px=max(1, round(ttl_s * 1000)))

    async def clear(self) -> None:
        """Delete every key under this cache's prefix."""
        keys = [key async for key in self._client.scan_iter(match=self.prefix + "*", count=500)]
        if keys:
            await self._client.delete(*keys)

    async def aclose(self) -> None:
        await self._client.aclose()
