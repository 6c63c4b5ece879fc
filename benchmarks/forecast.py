"""Benchmark the demand forecaster against the last-value forecast on replayed traces.

    .venv/bin/python benchmarks/forecast.py [--quick] [--seed N] [--db URL]

Traces (one value per telemetry interval, seeded): `daily` (a cycle of 24 intervals),
`ramp` (a steady rise), `daily+ramp`, `flat` (noise around a level), `step` (the level jumps
half-way), `bursty` (a level with short random bursts). With `--db URL` the request rate the
self-tuning loop recorded in agent memory (`requests_per_s` of the stored telemetry) is
replayed too. Each trace is replayed once: before each observation the forecaster and the
last value each predict 1, 6 and 12 intervals ahead, and the mean absolute errors are
compared. Lead time, on the ramp: how many intervals ahead of the true rate the 12-ahead
forecast is on average (the last value is 0 ahead by construction).

The last line printed is one JSON object: `mae_ratio` (ours / last value, the mean over the
traces with a trend or a cycle, lead 6), `mae_ratio_flat`, `ramp_lead_intervals`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence

from intelligence.forecast import DemandForecaster

LEADS = (1, 6, 12)
WARM = 80  # intervals replayed before errors count (the cycle is looked for in the first 72)


def traces(n: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)

    def noisy(values: Sequence[float], sd: float = 1.0) -> list[float]:
        return [max(0.0, v + rng.gauss(0, sd)) for v in values]

    cycle = [10 * math.sin(2 * math.pi * t / 24) for t in range(n)]
    bursts = []
    level = 10.0
    for _ in range(n):
        burst = 20.0 if rng.random() < 0.05 else 0.0
        bursts.append(level + burst)
    return {
        "daily": noisy([20 + c for c in cycle]),
        "ramp": noisy([5 + 0.1 * t for t in range(n)]),
        "daily+ramp": noisy([5 + 0.05 * t + 0.8 * c for t, c in enumerate(cycle)]),
        "flat": noisy([10.0] * n),
        "step": noisy([10.0 if t < n // 2 else 25.0 for t in range(n)]),
        "bursty": noisy(bursts),
    }


def replay(values: Sequence[float]) -> dict[int, tuple[float, float]]:
    """Per lead: (our MAE, last value's MAE)."""
    forecaster = DemandForecaster()
    errors = {lead: [0.0, 0.0, 0] for lead in LEADS}
    for t, value in enumerate(values):
        forecaster.update(value)
        if t < WARM:
            continue
        for lead in LEADS:
            if t + lead >= len(values):
                continue
            predicted = forecaster.forecast(lead)
            assert predicted is not None
            acc = errors[lead]
            acc[0] += abs(predicted - values[t + lead])
            acc[1] += abs(value - values[t + lead])
            acc[2] += 1
    return {lead: (a / n, b / n) for lead, (a, b, n) in errors.items() if n}


def ramp_lead(n: int, seed: int) -> float:
    rng = random.Random(seed)
    forecaster = DemandForecaster(season_length=None)
    ahead = []
    for t in range(n):
        forecaster.update(max(0.0, 5 + 0.1 * t + rng.gauss(0, 1)))
        predicted = forecaster.forecast(12)
        if t >= 50 and predicted is not None:
            ahead.append((predicted - (5 + 0.1 * t)) / 0.1)
    return sum(ahead) / len(ahead)


def recorded(url: str) -> list[float]:
    from memory_db import AgentMemory

    memory = AgentMemory(url)
    rows = sorted(memory.telemetry(limit=100_000), key=lambda r: r.taken_at)
    return [r.values["requests_per_s"] for r in rows if "requests_per_s" in r.values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter traces (a smoke run)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--db", help="also replay the request rate recorded in this memory")
    args = parser.parse_args()
    n = 240 if args.quick else 2000
    runs = traces(n, args.seed)
    if args.db:
        rates = recorded(args.db)
        if len(rates) > WARM + max(LEADS):
            runs["recorded"] = rates
        else:
            print(f"recorded: only {len(rates)} samples in {args.db}; skipped")
    print(f"{'trace':<12} {'lead':>4} {'ours MAE':>9} {'last MAE':>9} {'ratio':>6}")
    ratios: dict[str, float] = {}
    for name, values in runs.items():
        for lead, (ours, naive) in replay(values).items():
            ratio = ours / naive if naive else math.nan
            print(f"{name:<12} {lead:>4} {ours:>9.3f} {naive:>9.3f} {ratio:>6.2f}")
            if lead == 6:
                ratios[name] = ratio
    lead = ramp_lead(n, args.seed)
    print(f"ramp: the 12-ahead forecast is {lead:.1f} intervals ahead of the true rate on average")
    shaped = [ratios[k] for k in ("daily", "ramp", "daily+ramp")]
    print(json.dumps({
        "mae_ratio": round(sum(shaped) / len(shaped), 3),
        "mae_ratio_flat": round(ratios["flat"], 3),
        "ramp_lead_intervals": round(lead, 2),
    }))


if __name__ == "__main__":
    main()
