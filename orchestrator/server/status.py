"""What `GET /v1/status` and the dashboards show: the pipeline snapshot, the fleet, and the
self-tuning loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.pipeline import Pipeline

__all__ = ["FleetStatus", "SelfTuneStatus", "status_payload"]

log = logging.getLogger(__name__)

FleetStatus = Callable[[], Mapping[str, Any]]
"""A zero-argument callable returning the fleet's task counts as JSON-able data."""

SelfTuneStatus = Callable[[], Mapping[str, Any] | None]
"""A zero-argument callable returning the tuning loop's state (parameters against their
defaults, last changes, recent anomalies) as JSON-able data, or None while none runs."""


def status_payload(
    pipeline: Pipeline,
    fleet_status: FleetStatus | None = None,
    self_tune_status: SelfTuneStatus | None = None,
) -> dict[str, Any]:
    """What `GET /v1/status` shows: the snapshot's fields; with a fleet, its task counts
    under `"fleet"` (`{"error": ...}` if asking the fleet failed); with a tuning loop, its
    state under `"self_tune"`. JSON-ready."""
    data = pipeline.snapshot().to_dict()
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
