"""`GET /metrics`: the pipeline snapshot in Prometheus text format, read at scrape time.

A custom collector turns one `Pipeline.snapshot()` into metric families named `orchestrator_*`
(per-stage and per-provider series carry `stage` / `provider` labels; semantic dedup's are
`orchestrator_semantic_dedup_*`, with a semantic dedup hook), registered in a registry
of its own, so several apps in one process never collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from orchestrator.metrics import MetricsSnapshot
from orchestrator.server.request_counts import RequestCounts

__all__ = ["SnapshotCollector", "router"]

_BREAKER_STATES = ("closed", "open", "half_open")

# (snapshot attribute, metric name without prefix, help); counters get `_total` on exposition.
log = logging.getLogger(__name__)

_COUNTERS = (
    ("requests_total", "requests", "Requests accepted by the pipeline."),
    ("completed_total", "completed", "Requests answered."),
    ("shed_total", "shed", "Requests shed by a full stage queue."),
    ("cancelled_total", "cancelled", "Callers that stopped waiting."),
    ("dedup_hits", "dedup_hits", "Requests served by an identical in-flight request."),
    ("cache_hits", "cache_hits", "Requests served from the response cache."),
    ("cache_misses", "cache_misses", "Response-cache lookups that missed."),
    ("cache_errors", "cache_errors", "Response-cache operations that failed."),
    ("upstream_calls", "upstream_calls", "Calls made to providers."),
    ("retries", "retries", "Provider calls retried."),
    ("fallbacks", "fallbacks", "Requests that fell back to another provider."),
    ("cost_usd_total", "cost_usd", "Spend in US dollars."),
    ("budget_warnings", "budget_warnings", "Budget warnings (80% of a limit reached)."),
    ("budget_refusals", "budget_refusals", "Requests refused by a budget."),
    ("embedding_requests", "embedding_requests", "Embedding requests answered."),
    ("embedding_tokens", "embedding_tokens", "Tokens embedded."),
    ("embedding_cost_usd", "embedding_cost_usd", "Spend on embeddings in US dollars "
     "(also in cost_usd)."),
)
_GAUGES = (
    ("in_flight", "in_flight", "Requests accepted and not yet finished."),
    ("inference_active", "inference_active", "Provider calls running now."),
    ("inference_concurrency", "inference_concurrency", "Live limit on provider calls."),
    ("throughput_rps", "throughput_rps", "Requests finished per second, recently."),
    ("error_rate", "error_rate", "Fraction of recent requests that failed (0..1)."),
    ("dedup_hit_rate", "dedup_hit_rate", "Fraction of requests served by dedup (0..1)."),
    ("cache_hit_rate", "cache_hit_rate", "Fraction of cache lookups that hit (0..1)."),
    ("uptime_s", "uptime_seconds", "Seconds since the pipeline was built."),
)


class SnapshotCollector(Collector):
    """Collects `snapshot()` (a pipeline's, plus `feedback_total()`) on every scrape, and the
    attached fleet's status (`FleetSnapshot.to_json()`, what `/v1/status` shows under
    `"fleet"`) as `orchestrator_fleet_*`, and the server's `requests` as
    `orchestrator_http_requests_total{route, status}`."""

    def __init__(
        self, snapshot: Callable[[], MetricsSnapshot], feedback_total: Callable[[], int],
        fleet_status: Callable[[], Mapping[str, Any]] | None = None,
        *,
        requests: RequestCounts | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._feedback_total = feedback_total
        self._fleet_status = fleet_status
        self._requests = requests

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        for attr, name, doc in _COUNTERS:
            yield CounterMetricFamily(f"orchestrator_{name}", doc, value=getattr(snap, attr))
        for attr, name, doc in _GAUGES:
            yield GaugeMetricFamily(f"orchestrator_{name}", doc, value=getattr(snap, attr))
        yield CounterMetricFamily(
            "orchestrator_feedback", "Feedback received.", value=self._feedback_total()
        )

        errors = CounterMetricFamily(
            "orchestrator_errors", "Requests failed, by error type.", labels=["type"]
        )
        for kind, count in sorted(snap.errors_by_type.items()):
            errors.add_metric([kind], count)
        yield errors

        latency = GaugeMetricFamily(
            "orchestrator_latency_ms",
            "Latency of recent answered requests, by quantile.",
            labels=["quantile"],
        )
        for q, value in (
            ("0.5", snap.latency_p50_ms),
            ("0.95", snap.latency_p95_ms),
            ("0.99", snap.latency_p99_ms),
        ):
            latency.add_metric([q], value)
        yield latency

        depth = GaugeMetricFamily(
            "orchestrator_stage_queue_depth", "Items waiting in a stage queue.", labels=["stage"]
        )
        capacity = GaugeMetricFamily(
            "orchestrator_stage_queue_capacity", "A stage queue's live capacity.", labels=["stage"]
        )
        stage_shed = CounterMetricFamily(
            "orchestrator_stage_shed", "Requests shed at a stage.", labels=["stage"]
        )
        for stage in snap.stages:
            depth.add_metric([stage.name], stage.depth)
            capacity.add_metric([stage.name], stage.capacity)
            stage_shed.add_metric([stage.name], stage.shed_total)
        yield from (depth, capacity, stage_shed)

        breaker = GaugeMetricFamily(
            "orchestrator_provider_breaker_state",
            "1 for a provider breaker's current state, 0 for the others.",
            labels=["provider", "state"],
        )
        calls = CounterMetricFamily(
            "orchestrator_provider_calls", "Calls made to a provider.", labels=["provider"]
        )
        failures = CounterMetricFamily(
            "orchestrator_provider_failures", "Failed calls to a provider.", labels=["provider"]
        )
        opened = CounterMetricFamily(
            "orchestrator_provider_breaker_opened", "Times a breaker opened.", labels=["provider"]
        )
        for provider in snap.providers:
            for state in _BREAKER_STATES:
                breaker.add_metric(
                    [provider.name, state], 1.0 if provider.breaker_state == state else 0.0
                )
            calls.add_metric([provider.name], provider.calls_total)
            failures.add_metric([provider.name], provider.failures_total)
            opened.add_metric([provider.name], provider.breaker_opened_total)
        yield from (breaker, calls, failures, opened)
        yield from _usage_metrics(snap.usage.get("rows", ()))
        if snap.semantic_dedup is not None:
            yield from _semantic_metrics(snap.semantic_dedup)
        if self._requests is not None:
            http = CounterMetricFamily(
                "orchestrator_http_requests",
                "HTTP requests and WebSockets, refused ones included, by route template "
                "('other': no route matched) and status.",
                labels=["route", "status"],
            )
            for route, status, count in self._requests.items():
                http.add_metric([route, str(status)], count)
            yield http
        if self._fleet_status is not None:
            try:
                fleet = self._fleet_status()
            except Exception:  # the pipeline's metrics are still worth a scrape
                log.exception("the fleet's status could not be read for /metrics")
            else:
                yield from _fleet_metrics(fleet)


_TOKEN_FIELDS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("cache_creation", "cache_creation_input_tokens"),
)


def _usage_metrics(rows: Any) -> Iterator[Metric]:
    """The usage ledger's rows (`UsageLedger.to_dict()["rows"]`) by model and client."""
    labels = ["model", "client"]
    requests = CounterMetricFamily(
        "orchestrator_usage_requests", "Answered upstream calls, by model and client.",
        labels=labels,
    )
    tokens = CounterMetricFamily(
        "orchestrator_usage_tokens", "Tokens the provider reported, by model, client and kind "
        "(input, output, cache_read, cache_creation).", labels=[*labels, "kind"],
    )
    cost = CounterMetricFamily(
        "orchestrator_usage_cost_usd", "Spend in US dollars, by model and client.", labels=labels
    )
    without_call = CounterMetricFamily(
        "orchestrator_usage_answered_without_call",
        "Answers served from the cache or by dedup (no upstream call), by model and client.",
        labels=labels,
    )
    saved = CounterMetricFamily(
        "orchestrator_usage_saved_usd",
        "What the upstream calls those answers avoided would have cost, by model and client.",
        labels=labels,
    )
    for row in rows:
        pair = [row["model"], row["client"]]
        requests.add_metric(pair, row["requests"])
        for kind, field in _TOKEN_FIELDS:
            tokens.add_metric([*pair, kind], row[field])
        cost.add_metric(pair, row["cost_usd"])
        without_call.add_metric(pair, row.get("answered_without_call", 0))
        saved.add_metric(pair, row.get("saved_usd", 0.0))
    yield from (requests, tokens, cost, without_call, saved)


def _semantic_metrics(dedup: Mapping[str, Any]) -> Iterator[Metric]:
    """The semantic dedup counters (`MetricsSnapshot.semantic_dedup`, what `/v1/status`
    shows under `"semantic_dedup"`)."""
    for key, doc in (
        ("lookups", "Semantic dedup lookups asked."),
        ("hits", "Requests served by a semantic match."),
        ("errors", "Semantic dedup lookups that failed (served as misses)."),
    ):
        yield CounterMetricFamily(
            f"orchestrator_semantic_dedup_{key}", doc, value=dedup.get(key, 0)
        )
    skipped = CounterMetricFamily(
        "orchestrator_semantic_dedup_skipped",
        "Semantic dedup lookups answered as a miss without a search, by reason: the model "
        "still loading, or the embedder's backlog over the wait budget (busy).",
        labels=["reason"],
    )
    skipped.add_metric(["loading"], dedup.get("skipped_while_loading", 0))
    skipped.add_metric(["busy"], dedup.get("skipped_busy", 0))
    yield skipped


def _fleet_metrics(fleet: Mapping[str, Any]) -> Iterator[Metric]:
    if not fleet or "tasks" not in fleet:  # no fleet yet, or asking it failed
        return
    tasks = GaugeMetricFamily("orchestrator_fleet_tasks", "Fleet tasks, by state.",
                              labels=["state"])
    for state, count in fleet["tasks"].items():
        tasks.add_metric([state], count)
    yield tasks
    yield GaugeMetricFamily("orchestrator_fleet_backlog", "Fleet tasks waiting to be claimed.",
                            value=fleet["backlog"])
    agents = GaugeMetricFamily("orchestrator_fleet_agents", "Fleet agent loops: the live "
                               "target, and those busy and idle now.", labels=["kind"])
    for kind in ("target", "busy", "idle"):
        agents.add_metric([kind], fleet["agents"][kind])
    yield agents
    rates = GaugeMetricFamily("orchestrator_fleet_per_minute", "Fleet claims won, attempts "
                              "done and attempts failed, per minute, recently.", labels=["event"])
    for event in ("claimed", "done", "failed"):
        rates.add_metric([event], fleet["per_min"][event])
    yield rates
    for key, name, doc in (("claim_latency", "claim_latency_seconds", "Time to win a claim."),
                           ("attempt_duration", "attempt_duration_seconds",
                            "Duration of finished attempts.")):
        family = GaugeMetricFamily(f"orchestrator_fleet_{name}", f"{doc} By quantile, recently.",
                                   labels=["quantile"])
        for q in ("p50", "p95", "p99"):
            family.add_metric([f"0.{q[1:]}"], fleet[key][f"{q}_s"])
        yield family


def router(
    snapshot: Callable[[], MetricsSnapshot], feedback_total: Callable[[], int],
    fleet_status: Callable[[], Mapping[str, Any]] | None = None,
    *,
    requests: RequestCounts | None = None,
) -> APIRouter:
    """A router serving `GET /metrics` from its own registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, feedback_total, fleet_status,
                                        requests=requests))
    api = APIRouter()

    @api.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return api
