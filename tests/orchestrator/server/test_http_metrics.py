"""GET /metrics: Prometheus exposition of the pipeline snapshot, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import PricedEcho
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import EchoWorker, Pipeline, PipelineConfig


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from one scrape."""
    response = httpx.get(url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_follow_the_traffic(start_server: Callable[..., str]) -> None:
    """Counters read the live snapshot: requests and completions move with traffic."""
    url = start_server()
    before = scrape(url)
    assert before["orchestrator_requests_total"][()] == 0
    for word in ("a", "b", "c"):
        httpx.post(url + "/v1/prompt", json={"input": word})
    after = scrape(url)
    assert after["orchestrator_requests_total"][()] == 3
    assert after["orchestrator_completed_total"][()] == 3
    assert after["orchestrator_upstream_calls_total"][()] == 3


def test_every_series_is_prefixed_and_labelled(start_server: Callable[..., str]) -> None:
    """All names start with orchestrator_; stages and providers carry their labels."""
    url = start_server()
    samples = scrape(url)
    assert all(name.startswith("orchestrator_") for name in samples)
    stages = {dict(labels)["stage"] for labels in samples["orchestrator_stage_queue_depth"]}
    assert stages == {"rag", "assemble", "inference", "postprocess", "stream"}
    breaker = samples["orchestrator_provider_breaker_state"]
    assert breaker[(("provider", "echo"), ("state", "closed"))] == 1
    assert breaker[(("provider", "echo"), ("state", "open"))] == 0
    assert set(dict(k)["quantile"] for k in samples["orchestrator_latency_ms"]) == {
        "0.5",
        "0.95",
        "0.99",
    }


def test_errors_are_counted_by_type(start_server: Callable[..., str]) -> None:
    """A refused request shows in orchestrator_errors_total under its error type."""
    url = start_server(
        Pipeline(PipelineConfig(global_budget_usd=1e-9), PricedEcho(model="claude-opus-4-1"))
    )
    assert httpx.post(url + "/v1/prompt", json={"input": "x"}).status_code == 402
    samples = scrape(url)
    assert samples["orchestrator_errors_total"][(("type", "BudgetExceeded"),)] == 1
    assert samples["orchestrator_budget_refusals_total"][()] == 1


class ReportingHook:
    """A semantic dedup hook that never matches and reports fixed skip counts in its status."""

    async def match(self, text: str, scope: str) -> None:
        return None

    def started(self, flight_key: str, text: str, scope: str) -> None: ...

    def answered(self, flight_key: str, answer: object, ttl_s: float) -> None: ...

    def finished(self, flight_key: str) -> None: ...

    def served(self, request_id: str, match: object, task_id: str | None = None) -> None: ...

    def status(self) -> dict[str, int]:
        return {"skipped_while_loading": 2, "skipped_busy": 3}


def test_semantic_dedup_counters_are_exported(start_server: Callable[..., str]) -> None:
    """With a semantic dedup hook: its lookups, hits, errors and skipped lookups by reason."""
    url = start_server(Pipeline(PipelineConfig(), EchoWorker(), dedup_hooks=[ReportingHook()]))
    httpx.post(url + "/v1/prompt", json={"input": "a"})
    samples = scrape(url)
    assert samples["orchestrator_semantic_dedup_lookups_total"][()] == 1
    assert samples["orchestrator_semantic_dedup_hits_total"][()] == 0
    skipped = samples["orchestrator_semantic_dedup_skipped_total"]
    assert skipped == {(("reason", "loading"),): 2, (("reason", "busy"),): 3}


def test_without_semantic_dedup_there_are_no_semantic_series(
    start_server: Callable[..., str],
) -> None:
    """A pipeline without a semantic dedup hook exports none of its series."""
    samples = scrape(start_server())
    assert not [name for name in samples if name.startswith("orchestrator_semantic_dedup")]
