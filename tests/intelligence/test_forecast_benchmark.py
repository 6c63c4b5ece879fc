"""The forecast benchmark runs in its short mode and reports its headline as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "forecast.py"


def test_quick_benchmark_prints_the_headline_json() -> None:
    """`--quick` finishes; the headline has every key, and on traces with a trend or a cycle
    the forecaster's error is below the last value's."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    headline = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(headline) == {"mae_ratio", "mae_ratio_flat", "ramp_lead_intervals"}
    assert headline["mae_ratio"] < 1.0 and headline["ramp_lead_intervals"] > 0
