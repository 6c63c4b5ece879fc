"""The semantic-dedup benchmark runs in its short mode and ends with its headline JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "semantic_dedup.py"


def test_short_benchmark_prints_the_headline_json() -> None:
    """`--short` finishes; its last line has every headline key, with rates in [0, 1]."""
    out = subprocess.run(
        [sys.executable, str(BENCHMARK), "--short"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    headline = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(headline) == {
        "hit_rate",
        "false_merge_rate",
        "gptcache_hit_rate",
        "gptcache_false_merge_rate",
        "lookup_p50_us",
        "collapse_rate",
        "wrong_answers",
    }
    for key in ("hit_rate", "false_merge_rate", "collapse_rate"):
        assert 0.0 <= headline[key] <= 1.0
    assert headline["lookup_p50_us"] > 0
    assert "conversation merged 0/" in out.stdout  # scope isolation is exact
