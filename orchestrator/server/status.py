"""The one status builder: what `GET /v1/status`, the dashboard's event stream and MCP's
`pipeline_status` show, built in one place so they can never disagree.

The data is the pipeline snapshot's fields (`MetricsSnapshot.to_dict()`, with wall-clock and
monotonic timestamps), the feedback count, the live configuration and its version, on a server
its HTTP requests by route and status, with a fleet attached, its `FleetSnapshot` under
`"fleet"`, and with a tuning loop its state under `"self_tune"`. Prometheus reads the same
snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.config import LiveConfigSet
from orchestrator.pipeline import Pipeline
from orchestrator.server.request_counts import RequestCounts

__all__ = ["FleetStatus", "SelfTuneStatus", "status_payload"]

log = logging.getLogger(__name__)

FleetStatus = Callable[[], Mapping[str, Any]]
"""A zero-argument callable returning the fleet's status as JSON-able data."""

SelfTuneStatus = Callable[[], Mapping[str, Any] | None]
"""A zero-argument callable returning the tuning loop's state (parameters against their
defaults, last changes, recent anomalies) as JSON-able data, or None while none runs."""

def status_payload(
    pipeline: Pipeline,
    fleet_status: FleetStatus | None = None,
    config: LiveConfigSet | None = None,
    self_tune_status: SelfTuneStatus | None = None,
    *,
    requests: RequestCounts | None = None,
) -> dict[str, Any]:
    """The status, JSON-ready: the snapshot's fields, `feedback_total`, `live_config` and
    `live_config_version` (of `config`, default the pipeline's own), with a fleet its
    status under `"fleet"` (`{"error": ...}` if asking the fleet failed), and with a tuning
    loop its state under `"self_tune"`, and with the server's request counts those under
    `"http_requests"` (`RequestCounts.to_dict()`)."""
    config = config if config is not None else LiveConfigSet(pipeline.live)
    data = pipeline.snapshot().to_dict()
    data["feedback_total"] = pipeline.feedback.received_total
    data["live_config"] = config.values()
    data["live_config_version"] = config.version
    if requests is not None:
        data["http_requests"] = requests.to_dict()
    if self_tune_status is not None:
        try:
            tuning = self_tune_status()
        except Exception as exc:  # the loop's state is extra: never blank the pipeline's
            log.warning("self-tune status failed: %s", type(exc).__name__)
            tuning = {"error": f"self-tune status unavailable ({type(exc).__name__})"}
        if tuning is not None:
            data["self_tune"] = dict(tuning)
    if fleet_status is not None:
        try:
            data["fleet"] = dict(fleet_status())
        except Exception as exc:  # a broken fleet hook must not blank the pipeline's panels
            log.warning("fleet status failed: %s", type(exc).__name__)
            data["fleet"] = {"error": f"fleet status unavailable ({type(exc).__name__})"}
    return data
