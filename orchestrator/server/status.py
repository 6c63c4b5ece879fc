"""What `GET /v1/status` and the dashboards show: the pipeline snapshot and the fleet."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.pipeline import Pipeline

__all__ = ["FleetStatus", "status_payload"]

log = logging.getLogger(__name__)

FleetStatus = Callable[[], Mapping[str, Any]]
"""A zero-argument callable returning the fleet's task counts as JSON-able data."""


def status_payload(pipeline: Pipeline, fleet_status: FleetStatus | None = None) -> dict[str, Any]:
    """What `GET /v1/status` shows: the snapshot's fields and, with a fleet, its task counts
    under `"fleet"` (`{"error": ...}` if asking the fleet failed). JSON-ready."""
    data = pipeline.snapshot().to_dict()
    if fleet_status is not None:
        try:
            data["fleet"] = dict(fleet_status())
        except Exception as exc:  # a broken fleet hook must not blank the pipeline's panels
            log.warning("fleet status failed: %s", type(exc).__name__)
            data["fleet"] = {"error": f"fleet status unavailable ({type(exc).__name__})"}
    return data
