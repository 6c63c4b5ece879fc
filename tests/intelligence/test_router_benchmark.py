"""The router benchmark runs in its short mode and reports its headline as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "router.py"


def test_quick_benchmark_prints_the_headline_json() -> None:
    """`--quick` finishes; the last line has every headline key, and the default policy's
    regret is below round-robin's and MABWiser's best (when MABWiser is installed)."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    headline = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(headline) == {
        "regret",
        "mabwiser_best_regret",
        "round_robin_regret",
        "strong_quality_share",
        "strong_cost_share",
    }
    assert 0 < headline["regret"] < 0.25 * headline["round_robin_regret"]
    if headline["mabwiser_best_regret"] is None:
        assert "mabwiser is not installed" in out.stdout
    else:
        assert headline["regret"] <= headline["mabwiser_best_regret"]
    assert 0 < headline["strong_cost_share"] < 1
    assert 0.8 < headline["strong_quality_share"] <= 1.01
