"""Self-tuning: anomaly detection and control of the system's live parameters.

Detectors (`ZScoreDetector`, `CusumDetector`, `SloDetector`) turn raw metric values into
`Anomaly` reports; `PID`, `AIMDLimiter` and `GradientLimiter` turn measurements into new
parameter values; `Experiment` tries a change against the value in force (A/B, Welch's
t-test).
"""

from self_tune.detectors import (
    Anomaly,
    CusumDetector,
    DetectorKind,
    Severity,
    SloDetector,
    ZScoreDetector,
)
from self_tune.errors import ConfigUpdateRejected, GateError, SelfTuneError, TelemetryUnavailable
from self_tune.experiment import Experiment, ExperimentResult, ExperimentSettings
from self_tune.gate import GateCommand, GateResult, GateSettings, MergeResult, ValidationGate
from self_tune.limiter import AIMDLimiter, GradientLimiter
from self_tune.loop import SelfImprovementLoop
from self_tune.metatasks import Finding, FindingKind, MetaTaskGenerator
from self_tune.pid import PID

__all__ = [
    "PID",
    "AIMDLimiter",
    "Anomaly",
    "ConfigUpdateRejected",
    "CusumDetector",
    "DetectorKind",
    "Experiment",
    "ExperimentResult",
    "ExperimentSettings",
    "Finding",
    "FindingKind",
    "GateCommand",
    "GateError",
    "GateResult",
    "GateSettings",
    "GradientLimiter",
    "MergeResult",
    "MetaTaskGenerator",
    "SelfImprovementLoop",
    "SelfTuneError",
    "Severity",
    "SloDetector",
    "TelemetryUnavailable",
    "ValidationGate",
    "ZScoreDetector",
]
