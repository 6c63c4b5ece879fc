"""Benchmark the anomaly detectors on seeded streams and on telemetry recorded under a fault.

    .venv/bin/python benchmarks/anomaly.py [--quick] [--seed N]
    .venv/bin/python benchmarks/anomaly.py --record   # re-record benchmarks/data/… (~90 s)

Streams (raw values, mean 100, σ 5; every stream starts with 300 samples of noise, the
warm-up): level shifts of 1σ–5σ (median samples from the first shifted sample to the alarm,
0 = on that sample), 8σ spikes (share flagged on the spike's own sample), a slow drift of
0.02σ per sample, and pure noise (false alarms per 10,000 samples after warm-up). Then a
replay of telemetry recorded from the real pipeline (EchoWorker) while its provider slowed
down four-fold and began answering some calls with 429: delay from the fault's onset and false
alarms before it, per metric.

Side by side on the same streams: river's `PageHinkley` and `ADWIN` (the `bench` extra:
`pip install -e '.[bench]'`). River's detectors work in raw units and need their thresholds
set by hand, so each is calibrated here: of a small grid of settings, the one with the
smallest 3σ delay among those with at most our false-alarm rate (or 1 per 10k if that is
higher) is reported. Without river, only our figures are printed, and the output says so.

The last line is one JSON object: `delay_3sigma` (CUSUM), `false_alarms_per_10k` (the worse
of our two detectors), `river_best_delay_3sigma`, `river_false_alarms_per_10k` (null without
river), and the per-detector details.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from self_tune import CusumDetector, ZScoreDetector

# Run as a script, this folder is sys.path[0], and its http.py would shadow the standard
# library's `http` that river (through pandas/requests) imports.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DATA = Path(__file__).with_name("data") / "pipeline_fault_telemetry.json"
MEAN, SD, WARMUP = 100.0, 5.0, 300
SHIFTS = (1, 2, 3, 4, 5)
NOT_FOUND = 1000  # samples after the change we wait before calling it missed


class Detector(Protocol):
    def feed(self, x: float) -> bool: ...


class Ours:
    """One of our detectors, answering 'alarm on this sample?'."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._det = make()

    def feed(self, x: float) -> bool:
        return self._det.update(x) is not None


class River:
    """A river drift detector, answering the same question."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._det = make()

    def feed(self, x: float) -> bool:
        self._det.update(x)
        return bool(self._det.drift_detected)


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    make: Callable[[], Detector]


def _noise(rng: random.Random, n: int) -> list[float]:
    return [rng.gauss(MEAN, SD) for _ in range(n)]


def _delay(make: Callable[[], Detector], after: Iterable[float], warm: list[float]) -> int:
    det = make()
    for x in warm:
        det.feed(x)
    for i, x in enumerate(after):
        if det.feed(x):
            return i
    return NOT_FOUND


def shift_delays(make: Callable[[], Detector], sigma: float, trials: int, seed: int) -> list[int]:
    """Samples from the first shifted value to the alarm, for `trials` seeded streams."""
    delays = []
    for t in range(trials):
        rng = random.Random(seed * 7919 + t)
        warm = _noise(rng, WARMUP)
        after = (rng.gauss(MEAN + sigma * SD, SD) for _ in range(NOT_FOUND))
        delays.append(_delay(make, after, warm))
    return delays


def drift_delays(make: Callable[[], Detector], trials: int, seed: int) -> list[int]:
    """Delay for a drift of 0.02σ per sample (1σ after 50 samples, 3σ after 150)."""
    delays = []
    for t in range(trials):
        rng = random.Random(seed * 104729 + t)
        warm = _noise(rng, WARMUP)
        after = (rng.gauss(MEAN + 0.02 * SD * i, SD) for i in range(NOT_FOUND))
        delays.append(_delay(make, after, warm))
    return delays


def spike_hit_rate(make: Callable[[], Detector], trials: int, seed: int) -> float:
    """Share of 8σ single-sample spikes flagged on the spike's own sample."""
    hits = 0
    for t in range(trials):
        rng = random.Random(seed * 15485863 + t)
        det = make()
        for x in _noise(rng, WARMUP):
            det.feed(x)
        hits += det.feed(MEAN + 8 * SD)
    return hits / trials


def false_alarms_per_10k(make: Callable[[], Detector], samples: int, seed: int) -> float:
    """Alarms per 10,000 samples of pure noise, after each stream's warm-up."""
    alarms = counted = 0
    stream_len = 10_000
    for s in range(max(1, samples // stream_len)):
        rng = random.Random(seed * 32452843 + s)
        det = make()
        for i in range(WARMUP + stream_len):
            fired = det.feed(rng.gauss(MEAN, SD))
            if i >= WARMUP:
                alarms += fired
                counted += 1
    return alarms * 10_000 / counted


def replay(make: Callable[[], Detector], recording: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per recorded metric: delay from the fault's onset, false alarms before it."""
    onset = recording["fault_onset_index"]
    out = {}
    for metric, values in recording["metrics"].items():
        det = make()
        fired = [det.feed(v) for v in values]
        before = sum(fired[:onset])
        delay = next((i - onset for i in range(onset, len(fired)) if fired[i]), None)
        out[metric] = {"delay": delay, "false_alarms_before_onset": before}
    return out


def _ours() -> list[Candidate]:
    return [
        Candidate("cusum", lambda: Ours(CusumDetector)),
        Candidate("zscore", lambda: Ours(ZScoreDetector)),
        Candidate("zscore_robust", lambda: Ours(lambda: ZScoreDetector(robust=True))),
    ]


def _river_grid(quick: bool) -> list[Candidate] | None:
    try:
        from river import drift
    except ImportError:
        return None
    grid = []
    for threshold in (25, 50, 100, 200):
        for delta in (0.005, 0.5 * SD):
            grid.append(
                Candidate(
                    f"PageHinkley(threshold={threshold},delta={delta:g})",
                    lambda t=threshold, d=delta: River(
                        lambda: drift.PageHinkley(min_instances=30, delta=d, threshold=t)
                    ),
                )
            )
    for delta in (0.002, 1e-4, 1e-6):
        for clock in (1, 32):
            grid.append(
                Candidate(
                    f"ADWIN(delta={delta:g},clock={clock})",
                    lambda d=delta, c=clock: River(lambda: drift.ADWIN(delta=d, clock=c)),
                )
            )
    # Quick mode (the tests) keeps one setting of each, just to show the comparison runs.
    return [grid[2], grid[8]] if quick else grid


def _median(values: list[int]) -> float:
    return float(statistics.median(values))


def evaluate(candidate: Candidate, trials: int, noise: int, seed: int) -> dict[str, Any]:
    make = candidate.make
    return {
        "delays": {f"{s}sigma": _median(shift_delays(make, s, trials, seed)) for s in SHIFTS},
        "drift_delay": _median(drift_delays(make, trials, seed)),
        "spike_hit_rate": spike_hit_rate(make, trials, seed),
        "false_alarms_per_10k": false_alarms_per_10k(make, noise, seed),
    }


def run(quick: bool, seed: int) -> dict[str, Any]:
    trials, noise = (10, 10_000) if quick else (200, 100_000)
    t0 = time.perf_counter()
    print(
        f"streams: mean {MEAN:g}, σ {SD:g}, warm-up {WARMUP}; {trials} trials per case, "
        f"{noise:,} noise samples; seed {seed}"
    )
    print(
        f"{'detector':<34} {'1σ':>5} {'2σ':>5} {'3σ':>5} {'4σ':>5} {'5σ':>5} "
        f"{'drift':>6} {'spike':>6} {'FA/10k':>7}"
    )

    def show(name: str, r: dict[str, Any]) -> None:
        d = r["delays"]
        print(
            f"{name:<34} "
            + " ".join(f"{d[f'{s}sigma']:>5g}" for s in SHIFTS)
            + f" {r['drift_delay']:>6g} {r['spike_hit_rate']:>6.2f} "
            f"{r['false_alarms_per_10k']:>7.2f}"
        )

    ours = {}
    for c in _ours():
        ours[c.name] = evaluate(c, trials, noise, seed)
        show(c.name, ours[c.name])
    our_fa = max(ours["cusum"]["false_alarms_per_10k"], ours["zscore"]["false_alarms_per_10k"])

    recording = json.loads(DATA.read_text()) if DATA.exists() else None
    replays = {c.name: replay(c.make, recording) for c in _ours()} if recording else {}

    river_best: tuple[str, dict[str, Any]] | None = None
    grid = _river_grid(quick)
    if grid is None:
        print("river is not installed (pip install -e '.[bench]'): our figures only, no comparison")
    else:
        budget = max(our_fa, 1.0)
        for c in grid:
            fa = false_alarms_per_10k(c.make, noise, seed)
            if fa > budget:
                print(f"{c.name:<34} (FA/10k {fa:.2f} > {budget:.2f}: not a match)")
                continue
            r = evaluate(c, trials, noise, seed)
            show(c.name, r)
            if river_best is None or r["delays"]["3sigma"] < river_best[1]["delays"]["3sigma"]:
                river_best = (c.name, r)
        if river_best is not None and recording is not None:
            replays[river_best[0]] = replay(_by_name(grid, river_best[0]), recording)
    for name, result in replays.items():
        shown = ", ".join(
            f"{m}: delay {v['delay']}, {v['false_alarms_before_onset']} before onset"
            for m, v in result.items()
        )
        print(f"replay {name}: {shown}")
    delay3 = ours["cusum"]["delays"]["3sigma"]
    summary: dict[str, Any] = {
        "delay_3sigma": delay3,
        "false_alarms_per_10k": our_fa,
        "river_best_delay_3sigma": river_best[1]["delays"]["3sigma"] if river_best else None,
        "river_false_alarms_per_10k": (
            river_best[1]["false_alarms_per_10k"] if river_best else None
        ),
        "river_best": river_best[0] if river_best else None,
        "zscore_spike_hit_rate": ours["zscore"]["spike_hit_rate"],
        "ours": ours,
        "replay": replays,
        "quick": quick,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    if river_best:
        ratio = river_best[1]["delays"]["3sigma"] / max(delay3, 0.5)
        print(
            f"3σ delay: CUSUM {delay3:g} vs river's best {river_best[1]['delays']['3sigma']:g}"
            f" ({ratio:.1f}x) at {our_fa:.2f} vs "
            f"{river_best[1]['false_alarms_per_10k']:.2f} false alarms per 10k"
        )
    return summary


def _by_name(grid: list[Candidate], name: str) -> Callable[[], Detector]:
    return next(c.make for c in grid if c.name == name)


# --- recording telemetry from the real pipeline under a fault -------------------------------


async def _record(path: Path, seed: int, before: int, after: int, interval_s: float) -> None:
    from orchestrator import EchoWorker, InferenceRequest, Pipeline, PipelineConfig
    from orchestrator.errors import OrchestratorError, ProviderError

    class FaultyEcho(EchoWorker):
        """EchoWorker whose provider slows down and starts refusing some calls with 429."""

        def __init__(self) -> None:
            super().__init__(latency_s=0.01, name="echo")
            self.rng = random.Random(seed)
            self.faulty = False

        async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Any:
            if self.faulty and self.rng.random() < 0.15:
                await asyncio.sleep(0.005)
                raise ProviderError(
                    "echo", "rate limited", status=429, retryable=True, retry_after_s=0.05
                )
            return await super().complete(request, timeout_s=timeout_s)

    worker = FaultyEcho()
    config = PipelineConfig(metrics_window=64, cache_enabled=False, seed=seed)
    metrics: dict[str, list[float]] = {
        "latency_p95_ms": [],
        "error_rate": [],
        "throughput_rps": [],
        "upstream_calls_per_s": [],
    }
    async with Pipeline(config, worker) as pipeline:
        stop = asyncio.Event()
        counter = 0

        async def client(c: int) -> None:
            nonlocal counter
            rng = random.Random(seed + c)
            while not stop.is_set():
                counter += 1
                with contextlib.suppress(OrchestratorError):  # sheds and 429s are the point
                    await pipeline.infer(InferenceRequest(f"request {c}-{counter}"))
                await asyncio.sleep(rng.expovariate(1 / 0.02))

        clients = [asyncio.create_task(client(c)) for c in range(8)]
        last_calls = 0
        for i in range(before + after):
            if i == before:
                worker.faulty = True
                worker.latency_s = 0.04
            await asyncio.sleep(interval_s)
            snap = pipeline.snapshot()
            metrics["latency_p95_ms"].append(round(snap.latency_p95_ms, 3))
            metrics["error_rate"].append(round(snap.error_rate, 4))
            metrics["throughput_rps"].append(round(snap.throughput_rps, 2))
            metrics["upstream_calls_per_s"].append(
                round((snap.upstream_calls - last_calls) / interval_s, 2)
            )
            last_calls = snap.upstream_calls
        stop.set()
        await asyncio.gather(*clients)
    path.write_text(
        json.dumps(
            {
                "description": (
                    f"pipeline.snapshot() sampled every {interval_s}s under 8 clients on "
                    "EchoWorker (10 ms); at fault_onset_index the provider slows to 40 ms and "
                    "refuses 15% of calls with 429 (Retry-After 0.05 s). The pipeline runs "
                    "with its defaults, so its breaker may open (5 consecutive failures) and "
                    "stay open. "
                    "Recorded by benchmarks/anomaly.py --record."
                ),
                "interval_s": interval_s,
                "fault_onset_index": before,
                "metrics": metrics,
            },
            indent=None,
        )
        + "\n"
    )
    print(f"recorded {before + after} samples to {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials (tests use this)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"re-record {DATA.name} from the real pipeline, then exit",
    )
    args = parser.parse_args(argv)
    if args.record:
        asyncio.run(_record(DATA, args.seed, before=400, after=100, interval_s=0.2))
        return 0
    summary = run(args.quick, args.seed)
    print(json.dumps(summary, sort_keys=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
