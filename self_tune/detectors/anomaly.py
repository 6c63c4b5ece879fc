"""What a detector reports: one `Anomaly`, with its `Severity`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["Anomaly", "DetectorKind", "Severity"]


class Severity(StrEnum):
    """How bad: a statistical surprise is a `Warning`; a breached objective is `Critical`."""

    WARNING = "Warning"
    CRITICAL = "Critical"


class DetectorKind(StrEnum):
    """Which rule raised an anomaly."""

    ZSCORE = "zscore"
    CUSUM = "cusum"
    SLO = "slo"


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    """One anomalous value of one metric.

    `baseline` is what the detector expected (the learned mean or median; the limit for an
    SLO); `score` is how far off it was, in baseline standard deviations for the statistical
    detectors (the estimated shift size for CUSUM) and as value / limit for an SLO. `time` is
    the detector's clock (wall-clock epoch seconds by default) when the value arrived.
    """

    metric: str
    value: float
    baseline: float
    score: float
    severity: Severity
    time: float
    detector: DetectorKind

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "metric": self.metric,
            "value": self.value,
            "baseline": self.baseline,
            "score": self.score,
            "severity": self.severity.value,
            "time": self.time,
            "detector": self.detector.value,
        }
