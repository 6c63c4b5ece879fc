"""Adapters from the system's own snapshots to flat telemetry metrics.

The sampler never reaches into a component: it reads the snapshot each already publishes —
the pipeline's (`Pipeline.snapshot()` in process, or a running server's `GET /v1/status`) and
the fleet's — and flattens it. Flattening is generic, so a field the snapshot gains is
telemetry at once: numbers keep their names, nested mappings join with dots, lists of named
entries are keyed by name (``stage.inference.depth``, ``provider.echo.breaker_open``,
``priority.high.latency_p95_ms``), a
breaker's state becomes a number (closed 0, half-open 0.5, open 1) and every stage gets its
``fill`` (depth / capacity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from self_tune.errors import TelemetryUnavailable

__all__ = [
    "FLEET_COUNTERS",
    "PIPELINE_COUNTERS",
    "FleetSource",
    "PipelineSource",
    "StatusSource",
    "flatten",
    "upstream_error_rate",
]

PIPELINE_COUNTERS = frozenset(
    {
        "requests_total",
        "completed_total",
        "errors_total",
        "shed_total",
        "cancelled_total",
        "dedup_hits",
        "cache_hits",
        "cache_misses",
        "cache_errors",
        "upstream_calls",
        "retries",
        "fallbacks",
        "cost_usd_total",
        "budget_refusals",
        "provider.*.calls_total",
        "provider.*.failures_total",
        "provider.*.rate_limited_total",
        "provider.*.timeouts_total",
        "provider.*.rejected_total",
        "provider.*.breaker_opened_total",
    }
)
"""Pipeline metrics that only grow; the sampler publishes each one's rate beside it."""

FLEET_COUNTERS = frozenset(
    {"fleet.claimed_total", "fleet.done_total", "fleet.failed_total", "fleet.leases.lost_total"}
)
"""Fleet counters (when the fleet snapshot carries them)."""

_BREAKER_STATES = {"closed": 0.0, "half_open": 0.5, "half-open": 0.5, "open": 1.0}


def upstream_error_rate(values: Mapping[str, float]) -> dict[str, float]:
    """`upstream_error_rate`: failed provider calls over all provider calls in the last interval.

    The pipeline's own `error_rate` counts requests that failed after retries and fallbacks,
    so a provider failing one call in three can hide behind its retries; this is what the
    upstream itself does. Needs the sampler's `provider.*.calls_total` rates.
    """
    calls = failures = 0.0
    for metric, value in values.items():
        if metric.startswith("provider."):
            if metric.endswith(".calls_per_s"):
                calls += value
            elif metric.endswith(".failures_per_s"):
                failures += value
    return {"upstream_error_rate": min(1.0, failures / calls) if calls > 0 else 0.0}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number in `data`, keyed by its dotted path (see the module docstring)."""
    out: dict[str, float] = {}
    _flatten_into(out, data, prefix)
    return out


def _flatten_into(out: dict[str, float], data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, int | float):
            if math.isfinite(value):
                out[name] = float(value)
        elif isinstance(value, Mapping):
            _flatten_into(out, value, f"{name}.")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    label = str(item.get("name", index))
                    _flatten_into(out, item, f"{_singular(name)}.{label}.")
        elif isinstance(value, str) and key == "breaker_state":
            state = _BREAKER_STATES.get(value.lower())
            if state is not None:
                out[f"{prefix}breaker_open"] = state
    if "depth" in data and "capacity" in data:
        capacity = data["capacity"]
        if isinstance(capacity, int | float) and capacity > 0:
            out[f"{prefix}fill"] = float(data["depth"]) / float(capacity)


def _singular(name: str) -> str:
    # "stages" -> "stage", "priorities" -> "priority": the per-entry metric reads naturally.
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"a snapshot must be a mapping or have to_dict(), got {type(value).__name__}")


class PipelineSource:
    """The pipeline's own snapshot, in process: `snapshot` is `pipeline.snapshot` (or any
    zero-argument callable returning it or its dict). A `fleet` key is left to `FleetSource`."""

    name = "pipeline"

    def __init__(self, snapshot: Callable[[], Any]) -> None:
        self._snapshot = snapshot

    def read(self) -> Mapping[str, float]:
        data = dict(_as_mapping(self._snapshot()))
        data.pop("fleet", None)
        return flatten(data)


class FleetSource:
    """The fleet's snapshot (`FleetSnapshot` or a mapping), as ``fleet.*`` metrics."""

    name = "fleet"

    def __init__(self, snapshot: Callable[[], Any]) -> None:
        self._snapshot = snapshot

    def read(self) -> Mapping[str, float]:
        return flatten(_as_mapping(self._snapshot()), "fleet.")


class StatusSource:
    """A running server's `GET /v1/status` (pipeline metrics, and ``fleet.*`` when it has a
    fleet). `token` is the client token (`API_KEY`) when the server needs one."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"{self.base_url}/v1/status"
        self._token = token
        self._timeout_s = timeout_s

    def read(self) -> Mapping[str, float]:
        import httpx  # only a remote sampler needs an HTTP client

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = httpx.get(self.name, headers=headers, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            raise TelemetryUnavailable(self.name, type(exc).__name__) from exc
        if response.status_code != 200:
            raise TelemetryUnavailable(self.name, f"HTTP {response.status_code}")
        data = dict(response.json())
        fleet = data.pop("fleet", None)
        values = flatten(data)
        if isinstance(fleet, Mapping) and "error" not in fleet:
            values.update(flatten(fleet, "fleet."))
        return values
