"""`Objective`: what "better" means for the tuner, the rollback and the experiments."""

from __future__ import annotations

import math
from dataclasses import dataclass

from self_tune.telemetry import TelemetrySnapshot

__all__ = ["Objective"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Objective:
    """Service objectives: p95 latency and error rate, plus the share of requests shed.

    `score(snapshot)` is lower-is-better: p95 / objective + error rate / objective + shed share
    / objective, so 3.0 means "exactly at every objective" and each term counts a breach alike.
    """

    p95_ms: float = 10_000.0
    error_rate: float = 0.05
    shed_rate: float = 0.05

    def __post_init__(self) -> None:
        for name in ("p95_ms", "error_rate", "shed_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def score(self, snapshot: TelemetrySnapshot) -> float:
        """Lower is better; see the class docstring."""
        return (
            snapshot.get("latency_p95_ms") / self.p95_ms
            + snapshot.get("error_rate") / self.error_rate
            + shed_share(snapshot) / self.shed_rate
        )


def shed_share(snapshot: TelemetrySnapshot) -> float:
    """Sheds over arrivals in the snapshot's interval (0 when nothing arrived)."""
    arrivals = snapshot.get("requests_per_s")
    return snapshot.get("shed_per_s") / arrivals if arrivals > 0 else 0.0
