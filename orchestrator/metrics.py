"""Pipeline measurements and the frozen snapshot the dashboards and the tuning loop read.

`PipelineMetrics` is the recorder the pipeline updates on its hot path (plain counters and a
ring of the last `window` outcomes); `MetricsSnapshot` is what `Pipeline.snapshot()` returns.
Latency percentiles and the error rate are over the ring; throughput is over the ring's
outcomes within the last `throughput_window_s` seconds, and `throughput_history` keeps the
last fifteen minutes of it (`ThroughputHistory`) for the dashboards.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.throughput import ThroughputHistory

__all__ = [
    "MetricsSnapshot",
    "PipelineMetrics",
    "PrioritySnapshot",
    "ProviderSnapshot",
    "Stage",
    "StageSnapshot",
    "percentile",
]


class Stage(StrEnum):
    """The pipeline's stages, in the order a request passes them (as metrics, snapshots and
    deadline errors name them)."""

    RAG = "rag"
    ASSEMBLE = "assemble"
    INFERENCE = "inference"
    POSTPROCESS = "postprocess"
    STREAM = "stream"


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0..100) of an ascending list; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSnapshot:
    """One stage queue: items waiting now, the live capacity, requests shed there so far, and
    how long recent requests spent in the stage (queue wait plus work; 0.0 before any)."""

    name: Stage
    depth: int
    capacity: int
    shed_total: int
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PrioritySnapshot:
    """The answered requests of one priority class (the client's, before any ageing): how
    many, and the latency percentiles of the recent ones. The shed threshold protects every
    class but `low`; their own latency is what it is tuned by, not the overall p95 that the
    low class's waits behind them inflate."""

    name: str
    completed_total: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSnapshot:
    """One provider: its breaker and its call counts."""

    name: str
    breaker_state: str
    consecutive_failures: int
    breaker_opened_total: int
    calls_total: int
    failures_total: int
    rate_limited_total: int = 0  # 429s: backpressure, not counted against the breaker
    timeouts_total: int = 0  # attempts with no answer in time (also in failures_total)
    rejected_total: int = 0  # 4xx: the request (or our key) at fault, not the provider
    retry_after_s: float | None = None  # the latest Retry-After a 429 sent (None: none yet)
    retry_after_p50_s: float | None = None  # the median of its latest 32
    paused_s: float = 0.0
    """Seconds its rate limiter still admits nothing: what is left of the last 429's
    Retry-After (1 s when it sent none)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsSnapshot:
    """Everything measured, at one instant. Units are in the names; rates are 0..1."""

    taken_at_s: float
    uptime_s: float
    stages: tuple[StageSnapshot, ...]
    providers: tuple[ProviderSnapshot, ...]
    requests_total: int
    completed_total: int
    errors_total: int
    errors_by_type: Mapping[str, int]
    shed_total: int
    cancelled_total: int
    in_flight: int
    inference_active: int
    inference_concurrency: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    throughput_rps: float
    error_rate: float
    dedup_hits: int
    dedup_hit_rate: float
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    cache_errors: int
    upstream_calls: int
    retries: int
    fallbacks: int
    cost_usd_total: float
    budget_warnings: int
    budget_refusals: int
    embedding_requests: int = 0
    """`/v1/embeddings` requests answered (their cost is in `cost_usd_total` too)."""
    embedding_tokens: int = 0
    embedding_cost_usd: float = 0.0
    unpriced_models: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Answered requests per model that has no price (billed $0: budgets cannot see them)."""
    saved_usd: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Cost avoided, priced like each request would have been upstream, by how it was
    answered: `cache` (exact cache hit), `dedup` (joined an identical flight), `semantic`
    (a semantic match, cached or in flight), and `total`."""
    routing: Mapping[str, Any] | None = None
    """With a router that reports its state (`status()`, the learned router): its arms and
    their estimated rewards."""
    usage: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The usage ledger (`UsageLedger.to_dict()`): requests, tokens and cost of the answered
    upstream calls, by model, by client, and by (model, client) in `rows`."""
    priorities: tuple[PrioritySnapshot, ...] = ()
    """Per priority class that has answered requests, highest first: count and latency."""
    semantic_dedup: Mapping[str, Any] | None = None
    """With a semantic dedup hook: lookups, hits, hit rate, errors, the recent hits with their
    similarity, and the hook's own state (embedder, entries, threshold, wrong-hit rate)."""
    feedback: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Client feedback (`FeedbackLog.status()`): verdicts received and attributed, those that
    said stale, answers served from a cache, and once a verdict on one arrived, `stale_rate`
    (the share of the recent cache-served answers reported stale)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        data = dataclasses.asdict(self)
        data["errors_by_type"] = dict(self.errors_by_type)
        data["unpriced_models"] = dict(self.unpriced_models)
        data["saved_usd"] = dict(self.saved_usd)
        data["usage"] = dict(self.usage)
        data["feedback"] = dict(self.feedback)
        for name in ("routing", "semantic_dedup"):
            value = getattr(self, name)
            if value is None:
                del data[name]
            else:
                data[name] = dict(value)
        return data


class PipelineMetrics:
    """Counters and a ring of recent outcomes, updated by the stages."""

    __slots__ = (
        "_clock",
        "_latencies_s",
        "_next",
        "_ok",
        "_priority_s",
        "_stage_s",
        "_times",
        "cache_errors",
        "cache_hits",
        "cache_misses",
        "cancelled_total",
        "completed_total",
        "cost_usd_total",
        "dedup_hits",
        "embedding_cost_usd",
        "embedding_requests",
        "embedding_tokens",
        "errors_by_type",
        "errors_total",
        "fallbacks",
        "recent_semantic_hits",
        "requests_total",
        "retries",
        "saved_usd",
        "semantic_errors",
        "semantic_hits",
        "semantic_lookups",
        "started_at_s",
        "throughput_history",
        "throughput_window_s",
        "upstream_calls",
        "window",
    )

    def __init__(
        self,
        *,
        window: int = 4096,
        throughput_window_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        if throughput_window_s <= 0:
            raise ValueError(f"throughput_window_s must be > 0, got {throughput_window_s!r}")
        self.window = window
        self.throughput_window_s = throughput_window_s
        self._clock = clock
        self.started_at_s = clock()
        self.throughput_history = ThroughputHistory(clock=clock)
        self._times: list[float] = []
        self._latencies_s: list[float] = []
        self._ok: list[bool] = []
        self._next = 0
        self.requests_total = self.completed_total = self.errors_total = 0
        self.cancelled_total = 0
        self.errors_by_type: dict[str, int] = {}
        self.dedup_hits = self.cache_hits = self.cache_misses = self.cache_errors = 0
        self.upstream_calls = self.retries = self.fallbacks = 0
        self.cost_usd_total = 0.0
        self.embedding_requests = self.embedding_tokens = 0
        self.embedding_cost_usd = 0.0
        self.semantic_lookups = self.semantic_hits = self.semantic_errors = 0
        self.recent_semantic_hits: deque[dict[str, Any]] = deque(maxlen=20)
        self.saved_usd = {"cache": 0.0, "dedup": 0.0, "semantic": 0.0}
        self._stage_s: dict[str, deque[float]] = {}
        # Per priority class: answered count and the last `window` answered latencies.
        self._priority_s: dict[str, tuple[list[int], deque[float]]] = {}

    def observe(self, latency_s: float, ok: bool, now: float) -> None:
        """Record one finished request (answered or failed) `latency_s` after it arrived."""
        self.throughput_history.record(now)
        if len(self._times) < self.window:
            self._times.append(now)
            self._latencies_s.append(latency_s)
            self._ok.append(ok)
        else:
            i = self._next
            self._times[i], self._latencies_s[i], self._ok[i] = now, latency_s, ok
            self._next = (i + 1) % self.window

    def stage_done(self, stage: Stage, seconds: float) -> None:
        """Record that a request spent `seconds` in `stage` (the last `window` are kept)."""
        ring = self._stage_s.get(stage)
        if ring is None:
            ring = self._stage_s[stage] = deque(maxlen=self.window)
        ring.append(seconds)

    def stage_percentiles_ms(self, stage: Stage) -> tuple[float, float, float]:
        """(p50, p95, p99) in ms of the recent times spent in `stage`; zeros before any."""
        values = sorted(self._stage_s.get(stage, ()))
        return (
            percentile(values, 50) * 1000,
            percentile(values, 95) * 1000,
            percentile(values, 99) * 1000,
        )

    def completed(self, latency_s: float, now: float, priority: str | None = None) -> None:
        """Record an answered request; `priority` (its class) also counts it for that class."""
        self.completed_total += 1
        self.observe(latency_s, True, now)
        if priority is not None:
            found = self._priority_s.get(priority)
            if found is None:
                found = self._priority_s[priority] = ([0], deque(maxlen=self.window))
            found[0][0] += 1
            found[1].append(latency_s)

    def priority_stats(self) -> dict[str, tuple[int, float, float, float]]:
        """Per priority class seen: (answered, p50_ms, p95_ms, p99_ms) of its recent ones."""
        out = {}
        for name, (count, ring) in self._priority_s.items():
            values = sorted(ring)
            out[name] = (count[0], *(percentile(values, q) * 1000 for q in (50, 95, 99)))
        return out

    def failed(self, error: BaseException, latency_s: float, now: float) -> None:
        self.errors_total += 1
        name = type(error).__name__
        self.errors_by_type[name] = self.errors_by_type.get(name, 0) + 1
        self.observe(latency_s, False, now)

    def window_stats(self) -> tuple[float, float, float, float, float]:
        """(p50_ms, p95_ms, p99_ms, throughput_rps, error_rate) over the recent window."""
        now = self._clock()
        latencies = sorted(lat for lat, ok in zip(self._latencies_s, self._ok, strict=True) if ok)
        p50, p95, p99 = (percentile(latencies, q) * 1000 for q in (50, 95, 99))
        n = len(self._ok)
        error_rate = (n - sum(self._ok)) / n if n else 0.0
        horizon = now - self.throughput_window_s
        recent = [t for t in self._times if t >= horizon]
        if not recent:
            return p50, p95, p99, 0.0, error_rate
        if len(self._times) == self.window and min(self._times) >= horizon:
            span = now - min(self._times)  # the ring holds less than the window: use its span
        else:
            span = min(self.throughput_window_s, now - self.started_at_s)
        throughput = len(recent) / span if span > 0 else 0.0
        return p50, p95, p99, throughput, error_rate
