"""The one status builder: what `GET /v1/status`, the dashboard's event stream and MCP's
`pipeline_status` show, built in one place so they can never disagree.

The data is the pipeline snapshot's fields (`MetricsSnapshot.to_dict()`, with wall-clock and
monotonic timestamps), the feedback count, the live configuration and its version, and, with
a fleet attached, its `FleetSnapshot` under `"fleet"`. Prometheus reads the same snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.config import LiveConfigSet
from orchestrator.pipeline import Pipeline

__all__ = ["FleetStatus", "status_payload"]

log = logging.getLogger(__name__)

FleetStatus = Callable[[], Mapping[str, Any]]
"""A zero-argument callable returning the fleet's status as JSON-able data."""


def status_payload(
    pipeline: Pipeline,
    fleet_status: FleetStatus | None = None,
    config: LiveConfigSet | None = None,
) -> dict[str, Any]:
    """The status, JSON-ready: the snapshot's fields, `feedback_total`, `live_config` and
    `live_config_version` (of `config`, default the pipeline's own), and with a fleet its
    status under `"fleet"` (`{"error": ...}` if asking the fleet failed)."""
    config = config if config is not None else LiveConfigSet(pipeline.live)
    data = pipeline.snapshot().to_dict()
    data["feedback_total"] = pipeline.feedback.received_total
    data["live_config"] = config.values()
    data["live_config_version"] = config.version
    if fleet_status is not None:
        try:
            data["fleet"] = dict(fleet_status())
        except Exception as exc:  # a broken fleet hook must not blank the pipeline's panels
            log.warning("fleet status failed: %s", type(exc).__name__)
            data["fleet"] = {"error": f"fleet status unavailable ({type(exc).__name__})"}
    return data
