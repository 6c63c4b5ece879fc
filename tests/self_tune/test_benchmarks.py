"""The self-tuning benchmarks run in their quick modes and end with their headline JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _headline(script: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_anomaly_benchmark_quick_mode_reports_the_headline() -> None:
    """benchmarks/anomaly.py --quick ends with the four headline keys; CUSUM meets its target."""
    headline = _headline("anomaly.py")
    for key in (
        "delay_3sigma",
        "false_alarms_per_10k",
        "river_best_delay_3sigma",
        "river_false_alarms_per_10k",
    ):
        assert key in headline
    assert headline["delay_3sigma"] <= 5
    assert headline["zscore_spike_hit_rate"] == 1.0
    assert "latency_p95_ms" in headline["replay"]["cusum"]


def test_tuning_benchmark_quick_mode_reports_the_headline() -> None:
    """benchmarks/tuning.py --quick ends with its five headline keys, for every scenario."""
    headline = _headline("tuning.py")
    for key in (
        "recovery_s",
        "shed_rate",
        "static_shed_rate",
        "aimd_recovery_s",
        "gradient_recovery_s",
    ):
        assert isinstance(headline[key], float), key
    assert set(headline["scenarios"]) == {"demand_3x", "slowdown_4x", "storm_429"}
    for runs in headline["scenarios"].values():
        assert set(runs) == {"static", "aimd", "gradient", "tuned"}
