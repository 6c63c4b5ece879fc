"""The HTTP benchmark runs end to end (three processes) and reports its headline last."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "http.py"


def test_a_short_benchmark_prints_the_headline_json() -> None:
    """A short run at low rates measures the overhead and ends with the JSON."""
    out = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--rates",
            "50,500,1000",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--probe-steps",
            "0",
            "--quiet-retries",
            "0",  # a test run shares the machine by design
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = out.stdout.strip().splitlines()
    headline = json.loads(lines[-1])
    assert set(headline) == {
        "overhead_p50_ms_500rps",
        "overhead_p99_ms_500rps",
        "overhead_p99_ms_1000rps",
        "overhead_p99_ms_1500rps",
        "max_rps",
        "ttfb_overhead_ms_p50",
        "server_cpu_us_per_request",
        "bare_overhead_p99_ms_1000rps",
        "bare_cpu_us_per_request",
    }
    # Which rates were held is a speed figure, for the benchmark to report on a quiet
    # machine; under a loaded test run even 50 req/s may not be, so only its form is checked.
    assert isinstance(headline["max_rps"], int | float) and headline["max_rps"] >= 0
    assert headline["overhead_p50_ms_500rps"] is not None
    assert headline["overhead_p99_ms_1000rps"] is not None
    assert headline["overhead_p99_ms_1500rps"] is None  # not measured in this run
    assert headline["ttfb_overhead_ms_p50"] is not None  # streamed requests were measured
    assert headline["server_cpu_us_per_request"] > 0
    assert any("streamed | first byte" in line for line in lines)
    assert any(line.startswith("where the server's CPU goes") for line in lines)
    assert headline["bare_cpu_us_per_request"] > 0  # the stack's floor, measured beside it
    assert any(line.startswith("bare pass-through") for line in lines)
    assert any(line.startswith("placement:") for line in lines)
