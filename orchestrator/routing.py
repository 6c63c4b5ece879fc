"""Routing: which providers a request tries, in which order, and what each attempt taught.

    router = FallbackRouter()                          # the configured order, always
    routes = router.order(request, pipeline.routes)    # the routes to try, first first
    router.record(route, outcome)                      # after every upstream attempt

The inference stage asks its `Router` once per request for the order of the providers that
can serve it, tries them in that order (breakers, rate limits, retries and deadlines apply
as before), and reports every attempt's `RouteOutcome` (provider, model, latency, cost, error
class) to it. `FallbackRouter` is the default: the order the pipeline was built with
(`fallback_order`, else the order the workers were given in), learning nothing. A learned
router (`intelligence.routing.LearnedRouting`) implements the same protocol.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from orchestrator.errors import ProviderError

if TYPE_CHECKING:
    from orchestrator.providers.base import Worker
    from orchestrator.request import InferenceRequest, Usage
    from orchestrator.resilience.breaker import CircuitBreaker
    from orchestrator.resilience.ratelimit import RateLimiter

__all__ = [
    "ErrorClass",
    "FallbackRouter",
    "ProviderCapabilities",
    "Route",
    "RouteOutcome",
    "Router",
]


_RETRY_AFTER_KEPT = 32
"""How many of a provider's latest Retry-After values `Route.retry_after_p50_s` is over."""


class Route:
    """One provider as the pipeline uses it: the worker, its breaker and its rate limiter,
    and its call counts and the Retry-After its recent 429s asked for."""

    __slots__ = (
        "_retry_after_s",
        "breaker",
        "calls_total",
        "failures_total",
        "free",
        "limiter",
        "name",
        "native_formats",
        "rate_limited_total",
        "rejected_total",
        "timeouts_total",
        "worker",
    )

    def __init__(self, worker: Worker, *, breaker: CircuitBreaker, limiter: RateLimiter) -> None:
        self.worker = worker
        self.name = worker.name
        self.native_formats: frozenset[str] = frozenset(getattr(worker, "native_formats", ()))
        # A worker that costs nothing whatever model a request names (the offline echo).
        self.free: bool = bool(getattr(worker, "free", False))
        self.rate_limited_total = 0
        self.timeouts_total = 0
        self.rejected_total = 0
        self.breaker = breaker
        self.limiter = limiter
        self.calls_total = 0
        self.failures_total = 0
        self._retry_after_s: deque[float] = deque(maxlen=_RETRY_AFTER_KEPT)

    def observe_retry_after(self, seconds: float) -> None:
        """A 429 from this provider asked us to wait `seconds` (its Retry-After)."""
        self._retry_after_s.append(seconds)

    @property
    def retry_after_s(self) -> float | None:
        """The latest Retry-After the provider sent with a 429 (None: none seen)."""
        return self._retry_after_s[-1] if self._retry_after_s else None

    @property
    def retry_after_p50_s(self) -> float | None:
        """The median of the latest 32 Retry-Afters (None: none seen)."""
        return statistics.median(self._retry_after_s) if self._retry_after_s else None

    def __repr__(self) -> str:
        return f"Route({self.name!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderCapabilities:
    """What one provider can do, as the front doors need to know it (`Pipeline.capabilities`):
    its default model, the native request formats it takes, whether it counts tokens."""

    name: str
    default_model: str
    native_formats: frozenset[str]
    counts_tokens: bool


class ErrorClass(StrEnum):
    """Why an upstream attempt failed, as a router needs to tell failures apart."""

    RATE_LIMITED = "rate_limited"  # a 429: the provider is up and asks us to slow down
    TIMEOUT = "timeout"  # no answer within the attempt's time (the worker's TimeoutError)
    UPSTREAM = "upstream"  # a 5xx, a dropped connection: the provider is at fault
    REJECTED = "rejected"  # a 400/401/403/404: this request (or our key) is at fault
    WORKER = "worker"  # the worker raised something that is not a ProviderError

    @classmethod
    def of(cls, error: ProviderError) -> ErrorClass:
        """The class of a `ProviderError` an attempt raised."""
        if error.status == 429:
            return cls.RATE_LIMITED
        if not error.retryable:
            return cls.REJECTED
        return cls.UPSTREAM


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteOutcome:
    """What one upstream attempt on a route came to.

    `error` None is an answer: `model`, `usage` and `cost_usd` are the answer's. `latency_ms`
    is the attempt's own time (a stream's: until its last chunk). `request` is the request as
    sent to that provider (its `request_id` ties later feedback on the answer to this
    attempt).
    """

    request: InferenceRequest
    provider: str
    model: str
    latency_ms: float
    cost_usd: float = 0.0
    usage: Usage | None = None
    error: ErrorClass | None = None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Router(Protocol):
    """Chooses the order in which a request tries the providers, and learns from outcomes.

    Both are called on the pipeline's event loop, so they must not block; `record` is called
    for every upstream attempt (answers and failures; not for routes skipped because their
    breaker was open or their rate limit spent, which made no attempt).
    """

    def order(self, request: InferenceRequest, routes: Sequence[Route]) -> Sequence[Route]:
        """The routes to try for `request`, first first: a reordering of (some of) `routes`.
        Routes left out are not tried."""
        ...

    def record(self, route: Route, outcome: RouteOutcome) -> None:
        """Learn from one attempt on `route`."""
        ...


class FallbackRouter:
    """Today's behaviour: every request tries the routes in the order given (the primary
    first, then the fallbacks), and outcomes change nothing."""

    def order(self, request: InferenceRequest, routes: Sequence[Route]) -> Sequence[Route]:
        return routes

    def record(self, route: Route, outcome: RouteOutcome) -> None:
        return None
