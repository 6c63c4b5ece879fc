"""The self_tune package's public surface."""

from __future__ import annotations

import self_tune


def test_all_is_the_curated_public_surface() -> None:
    """`self_tune.__all__` lists exactly the names we mean to export."""
    assert sorted(self_tune.__all__) == sorted(
        [
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
    )
    for name in self_tune.__all__:
        assert hasattr(self_tune, name), name
