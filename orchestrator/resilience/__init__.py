"""Resilience primitives: breaker, retry, rate limit, priority queue, cache, coalescing."""

from orchestrator.resilience.breaker import BreakerState, CircuitBreaker
from orchestrator.resilience.cache import CachedAnswer, MemoryCache, RedisCache, ResponseCache
from orchestrator.resilience.coalesce import (
    Broadcast,
    Coalescer,
    DedupHook,
    normalise_text,
    request_key,
)
from orchestrator.resilience.priority import PriorityQueue
from orchestrator.resilience.ratelimit import RateLimiter, TokenBucket
from orchestrator.resilience.retry import RetryPolicy

__all__ = [
    "BreakerState",
    "Broadcast",
    "CachedAnswer",
    "CircuitBreaker",
    "Coalescer",
    "DedupHook",
    "MemoryCache",
    "PriorityQueue",
    "RateLimiter",
    "RedisCache",
    "ResponseCache",
    "RetryPolicy",
    "TokenBucket",
    "normalise_text",
    "request_key",
]
