"""benchmarks/claims.py keeps working: its short scale run prints the keys it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "claims.py"


def test_short_scale_run_prints_its_json_keys() -> None:
    """`claims.py --short` ends with a JSON line of claim rates, p99s and heartbeat costs."""
    done = subprocess.run([sys.executable, str(BENCH), "--short"], capture_output=True,
                          text=True, timeout=600, check=True)
    last = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("claims_per_s_2000", "p99_claim_ms_2000", "claims_per_s_100",
                "p99_claim_ms_100", "scale_claims_ratio", "heartbeat_first_ms",
                "heartbeat_late_ms", "heartbeat_ratio"):
        assert last[key] > 0, key
