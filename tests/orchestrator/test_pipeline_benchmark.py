"""The pipeline benchmark runs and reports its headline as the last line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline.py"


def test_quick_benchmark_prints_the_headline_json() -> None:
    """`--quick` finishes and its last line is the JSON object with every headline key;
    coalescing makes exactly one upstream call per distinct request."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    headline = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(headline) == {
        "overhead_p50_us_c1",
        "overhead_p99_us_c1",
        "throughput_rps",
        "p99_us_c64",
        "upstream_calls",
        "distinct_requests",
        "requests",
    }
    assert headline["upstream_calls"] == headline["distinct_requests"] < headline["requests"]
