"""GET /metrics: Prometheus exposition of the pipeline snapshot, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from conftest import PricedEcho
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Pipeline, PipelineConfig


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
