"""Benchmark the tuning loop in a closed-loop simulation of the pipeline, against baselines.

    .venv/bin/python benchmarks/tuning.py [--quick] [--seed N]

A discrete-event model of the inference stage — a bounded priority queue with low-priority
shedding, a live concurrency limit, per-provider breaker, client rate limit, retries with
full-jitter backoff honouring Retry-After, per-request deadlines — in front of a provider
whose latency grows when more calls are in flight than it can serve and which answers 429
past its own rate limit (backpressure: as in the pipeline, a 429 never counts against the
breaker). Every component reads the live values from a real
`orchestrator.config.LiveConfig` at each use, as the pipeline does.

Three scenarios, each started from the defaults, the event at t0: a 3× demand step, a
four-fold provider slowdown, a storm of 429s (the provider's limit falls to half the demand
for a minute). Four strategies on the same seeded arrivals:

- `static`: the defaults, untouched;
- `aimd`: Netflix-style AIMD concurrency limit, updated on every call (self_tune.AIMDLimiter);
- `gradient`: Netflix-style gradient limit, updated on every call (self_tune.GradientLimiter);
- `tuned`: the self-tuning loop — the same `Sampler`, `TuningController`, laws, snapshot
  store and rollback the live system runs, reading this simulation's snapshot every second
  and acting through `LocalConfig` on the same `LiveConfig`.

Per run: recovery (seconds from t0 until p95 latency of finished requests, in 1 s buckets,
is back within the objective and stays there 10 s; a request that expires while queued is
measured at its deadline, where the pipeline fails it), overshoot (worst p95 / objective − 1),
oscillation (direction reversals of the concurrency limit per minute), and the share of
requests shed. The last line is one JSON object: `recovery_s` (tuned, worst scenario),
`shed_rate` (tuned, all scenarios), `static_shed_rate`, `aimd_recovery_s`,
`gradient_recovery_s` (worst scenario each), then every figure per scenario and strategy.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import LiveConfig, Tunables
from self_tune.controller import TuningController
from self_tune.limiter import AIMDLimiter, GradientLimiter
from self_tune.live import LocalConfig
from self_tune.objective import Objective
from self_tune.sources import PIPELINE_COUNTERS
from self_tune.telemetry import InProcessBus, Sampler, TelemetrySnapshot

OBJECTIVE = Objective(p95_ms=5_000.0, error_rate=0.05, shed_rate=0.05)
DEADLINE_S = 30.0
STABLE_S = 10  # p95 must stay within the objective this long to count as recovered
PRIORITIES = (("high", 0.2), ("normal", 0.5), ("low", 0.3))


@dataclass(frozen=True, slots=True)
class Scenario:
    """Demand (req/s), provider latency (s) and provider rate limit (req/s) over time."""

    name: str
    t0: float
    duration_s: float
    demand: Callable[[float], float]
    latency_s: Callable[[float], float]
    provider_rps: Callable[[float], float]
    provider_slots: int = 200


def scenarios(quick: bool) -> list[Scenario]:
    t0, dur = (30.0, 120.0) if quick else (60.0, 300.0)
    return [
        Scenario("demand_3x", t0, dur, lambda t: 40.0 if t < t0 else 120.0,
                 lambda t: 1.0, lambda t: math.inf),
        Scenario("slowdown_4x", t0, dur, lambda t: 60.0,
                 lambda t: 0.5 if t < t0 else 2.0, lambda t: math.inf),
        Scenario("storm_429", t0, dur, lambda t: 60.0, lambda t: 0.5,
                 lambda t: 30.0 if t0 <= t < t0 + 60 else math.inf),
    ]


@dataclass(slots=True)
class Request:
    id: int
    arrival: float
    priority: int  # 0 high … 2 low
    deadline: float
    attempts: int = 0


@dataclass(slots=True)
class Bucket:
    latencies: list[float] = field(default_factory=list)


class Sim:
    """The inference stage and its provider, event by event (see the module docstring)."""

    def __init__(self, scenario: Scenario, live: LiveConfig, seed: int) -> None:
        self.sc = scenario
        self.live = live
        self.rng = random.Random(seed)
        self.now = 0.0
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.queues: tuple[deque[Request], ...] = (deque(), deque(), deque())
        self.active = 0
        self.provider_inflight = 0
        self.provider_tokens = 0.0
        self.provider_stamp = 0.0
        self.client_tokens = 0.0
        self.client_stamp = 0.0
        # breaker
        self.consecutive = 0
        self.open_until = -math.inf
        self.half_open_probe = False
        self.breaker_opened_total = 0
        # counters (the pipeline's names)
        self.requests_total = self.completed_total = self.errors_total = self.shed_total = 0
        self.retries = self.upstream_calls = self.failures_total = self.rate_limited_total = 0
        self.ring: deque[tuple[float, bool]] = deque(maxlen=256)
        self.buckets: dict[int, Bucket] = {}
        self.on_call: Callable[[float, bool], None] | None = None
        self._ids = itertools.count()

    # -- the event loop -----------------------------------------------------------------

    def at(self, t: float, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._events, (t, next(self._seq), kind, payload))

    def run_until(self, t_end: float) -> None:
        while self._events and self._events[0][0] <= t_end:
            self.now, _, kind, payload = heapq.heappop(self._events)
            getattr(self, f"_on_{kind}")(payload)
        self.now = t_end

    def start(self) -> None:
        self.at(self.rng.expovariate(self.sc.demand(0.0)), "arrive")

    # -- admission and dispatch ---------------------------------------------------------

    def _on_arrive(self, _: Any) -> None:
        self.at(self.now + self.rng.expovariate(self.sc.demand(self.now)), "arrive")
        tun = self.live.current
        self.requests_total += 1
        r = self.rng.random()
        priority = 0 if r < 0.2 else (1 if r < 0.7 else 2)
        depth = sum(len(q) for q in self.queues)
        capacity = tun.inference_queue_capacity
        if depth >= capacity or (priority == 2 and depth >= tun.shed_threshold * capacity):
            self.shed_total += 1
            return
        req = Request(next(self._ids), self.now, priority, self.now + DEADLINE_S)
        self.queues[priority].append(req)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.active < self.live.current.inference_concurrency:
            req = next((q.popleft() for q in self.queues if q), None)
            if req is None:
                return
            if self.now >= req.deadline:
                # Expired while queued. The pipeline fails a request at its deadline wherever
                # it is, so it is measured there (latency = the deadline), not when a slot
                # happened to reach it (which once recorded 66 s for a 30 s deadline, in the
                # bucket of whenever the queue drained).
                self._finish(req, ok=False, at=req.deadline)
                continue
            if self._circuit_blocks():
                self._finish(req, ok=False)  # the breaker fails it at once
                continue
            self.active += 1
            self._attempt(req)

    # -- one attempt: breaker → client rate limit → provider ----------------------------

    def _on_attempt(self, req: Request) -> None:
        self._attempt(req)

    def _circuit_blocks(self) -> bool:
        return self.now < self.open_until or (self.half_open_probe and self.now >= self.open_until)

    def _attempt(self, req: Request) -> None:
        tun = self.live.current
        if self._circuit_blocks():
            self._release(req, ok=False)  # circuit open: fails at once, nothing sent
            return
        probing = self.open_until > -math.inf and self.now >= self.open_until
        if tun.rate_limit_rps is not None:
            rate = tun.rate_limit_rps
            earned = (self.now - self.client_stamp) * rate
            self.client_tokens = min(max(1.0, rate), self.client_tokens + earned)  # burst >= 1
            self.client_stamp = self.now
            if self.client_tokens < 1 - 1e-9:  # rounding must not make a wait of 1e-14 s
                wait = max(1e-3, (1 - self.client_tokens) / rate)
                if self.now + wait >= req.deadline:
                    self._release(req, ok=False)
                else:
                    self.at(self.now + wait, "attempt", req)
                return
            self.client_tokens = max(0.0, self.client_tokens - 1)
        if probing:
            self.half_open_probe = True
        req.attempts += 1
        self.upstream_calls += 1
        limit = self.sc.provider_rps(self.now)
        if math.isfinite(limit):
            self.provider_tokens = min(
                limit, self.provider_tokens + (self.now - self.provider_stamp) * limit)
            self.provider_stamp = self.now
            if self.provider_tokens < 1:
                self.at(self.now + 0.02, "done", (req, False, 1.0, 0.02, False))
                return
            self.provider_tokens -= 1
        else:
            self.provider_tokens, self.provider_stamp = 0.0, self.now
        self.provider_inflight += 1
        over = max(0, self.provider_inflight - self.sc.provider_slots) / self.sc.provider_slots
        latency = self.sc.latency_s(self.now) * self.rng.lognormvariate(0, 0.3) * (1 + 3 * over)
        if self.now + latency > req.deadline:
            self.at(req.deadline, "done", (req, False, None, req.deadline - self.now, True))
        else:
            self.at(self.now + latency, "done", (req, True, None, latency, True))

    def _on_done(self, payload: tuple[Request, bool, float | None, float, bool]) -> None:
        req, ok, retry_after, rtt, used_provider = payload
        if used_provider:
            self.provider_inflight -= 1
        tun = self.live.current
        if self.half_open_probe:
            self.half_open_probe = False
            if ok or retry_after is not None:  # a 429 says the provider is up
                self.open_until = -math.inf
                self.consecutive = 0
            else:
                self.open_until = self.now + tun.breaker_open_s
                self.breaker_opened_total += 1
        if self.on_call is not None:
            self.on_call(rtt, ok)
        if ok:
            self.consecutive = 0
            self._release(req, ok=True)
            return
        self.failures_total += 1
        if retry_after is not None:
            # The provider's 429: backpressure, not a fault. As in the pipeline's inference
            # stage, it counts as the provider being up and never opens the breaker.
            self.rate_limited_total += 1
            self.consecutive = 0
        else:
            self.consecutive += 1
        if self.consecutive >= tun.breaker_failure_threshold and self.now >= self.open_until:
            self.open_until = self.now + tun.breaker_open_s
            self.breaker_opened_total += 1
            self.consecutive = 0
        if req.attempts < tun.retry_max_attempts and self.now < req.deadline:
            ceiling = min(30.0, tun.retry_base_delay_s * 2 ** (req.attempts - 1))
            delay = max(self.rng.uniform(0, ceiling), retry_after or 0.0)
            if self.now + delay < req.deadline:
                self.retries += 1
                self.at(self.now + delay, "attempt", req)
                return
        self._release(req, ok=False)

    def _release(self, req: Request, *, ok: bool) -> None:
        self.active -= 1
        self._finish(req, ok=ok)
        self._dispatch()

    def _finish(self, req: Request, *, ok: bool, at: float | None = None) -> None:
        at = self.now if at is None else at
        latency = at - req.arrival
        if ok:
            self.completed_total += 1
        else:
            self.errors_total += 1
        self.ring.append((latency, ok))
        self.buckets.setdefault(int(at), Bucket()).latencies.append(latency)

    # -- the snapshot, in the pipeline's metric names ------------------------------------

    def read(self) -> dict[str, float]:
        lat = sorted(x for x, _ in self.ring)
        p95 = lat[max(0, math.ceil(len(lat) * 0.95) - 1)] * 1000 if lat else 0.0
        errors = sum(1 for _, ok in self.ring if not ok)
        state = 1.0 if self.now < self.open_until else (0.5 if self.open_until > -math.inf else 0.0)
        tun = self.live.current
        return {
            "requests_total": self.requests_total,
            "completed_total": self.completed_total,
            "errors_total": self.errors_total,
            "shed_total": self.shed_total,
            "retries": self.retries,
            "upstream_calls": self.upstream_calls,
            "inference_active": self.active,
            "inference_concurrency": tun.inference_concurrency,
            "latency_p95_ms": p95,
            "error_rate": errors / len(self.ring) if self.ring else 0.0,
            "stage.inference.depth": sum(len(q) for q in self.queues),
            "stage.inference.capacity": tun.inference_queue_capacity,
            "provider.sim.calls_total": self.upstream_calls,
            "provider.sim.failures_total": self.failures_total,
            "provider.sim.rate_limited_total": self.rate_limited_total,
            "provider.sim.breaker_open": state,
            "provider.sim.breaker_opened_total": self.breaker_opened_total,
        }


class SimSource:
    name = "sim"

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def read(self) -> dict[str, float]:
        return self.sim.read()


def run_one(scenario: Scenario, strategy: str, seed: int) -> dict[str, Any]:
    live: LiveConfig = LiveConfig(Tunables())
    sim = Sim(scenario, live, seed)
    limits: list[int] = []
    controller = None
    if strategy in ("aimd", "gradient"):
        start = live.current.inference_concurrency
        limiter = (AIMDLimiter(initial_limit=start, max_limit=1024) if strategy == "aimd"
                   else GradientLimiter(initial_limit=start, max_limit=1024))

        def on_call(rtt: float, ok: bool) -> None:
            new = limiter.update(rtt, inflight=sim.active, dropped=not ok)
            if new != live.current.inference_concurrency:
                live.set(inference_concurrency=new)

        sim.on_call = on_call
    sampler = None
    if strategy == "tuned":
        bus: InProcessBus[TelemetrySnapshot] = InProcessBus()
        sampler = Sampler(bus, (SimSource(sim),), interval_s=1.0, counters=PIPELINE_COUNTERS,
                          clock=lambda: sim.now, monotonic=lambda: sim.now)
        controller = TuningController(LocalConfig(live), objective=OBJECTIVE,
                                      clock=lambda: sim.now)
    sim.start()
    for t in range(1, int(scenario.duration_s) + 1):
        sim.run_until(float(t))
        if sampler is not None and controller is not None:
            controller.step(sampler.sample())
        limits.append(live.current.inference_concurrency)
    return _figures(scenario, sim, limits, controller)


def _figures(scenario: Scenario, sim: Sim, limits: list[int],
             controller: TuningController | None) -> dict[str, Any]:
    objective_s = OBJECTIVE.p95_ms / 1000
    t0 = int(scenario.t0)
    p95s = []
    for t in range(t0, int(scenario.duration_s)):
        lat = sorted(sim.buckets.get(t, Bucket()).latencies)
        p95s.append(lat[max(0, math.ceil(len(lat) * 0.95) - 1)] if lat else 0.0)
    # Recovered: from the bucket after the last one over the objective, if the run then
    # stays within it for STABLE_S seconds; a run that ends over (or too soon after) the
    # objective never recovered and scores its whole length after t0.
    bad = [i for i, p in enumerate(p95s) if p > objective_s]
    recovery = 0.0 if not bad else float(bad[-1] + 1)
    if bad and len(p95s) - (bad[-1] + 1) < STABLE_S:
        recovery = float(len(p95s))
    after = limits[t0:]
    reversals = sum(
        1 for a, b, c in zip(after, after[1:], after[2:], strict=False) if (b - a) * (c - b) < 0
    )
    out = {
        "recovery_s": recovery,
        "overshoot": round(max(p95s, default=0.0) / objective_s - 1, 3),
        "oscillation_per_min": round(reversals / (len(after) / 60), 2) if after else 0.0,
        "shed_rate": round(sim.shed_total / max(1, sim.requests_total), 4),
        "error_rate": round(sim.errors_total / max(1, sim.requests_total), 4),
        "final_concurrency": limits[-1] if limits else None,
    }
    if controller is not None:
        out["changes"] = len(controller.changes)
        out["rollbacks"] = sum(1 for c in controller.changes if c.kind.value == "rolled_back")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter scenarios (tests)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    strategies = ("static", "aimd", "gradient", "tuned")
    results: dict[str, dict[str, Any]] = {}
    print(f"objective p95 {OBJECTIVE.p95_ms / 1000:g} s; deadline {DEADLINE_S:g} s; "
          f"seed {args.seed}")
    print(f"{'scenario':<12} {'strategy':<9} {'recovery_s':>10} {'overshoot':>9} "
          f"{'osc/min':>7} {'shed':>6} {'errors':>6} {'conc':>5}")
    for sc in scenarios(args.quick):
        results[sc.name] = {}
        for strategy in strategies:
            r = run_one(sc, strategy, args.seed)
            results[sc.name][strategy] = r
            print(f"{sc.name:<12} {strategy:<9} {r['recovery_s']:>10g} {r['overshoot']:>9.2f} "
                  f"{r['oscillation_per_min']:>7.2f} {r['shed_rate']:>6.1%} "
                  f"{r['error_rate']:>6.1%} {r['final_concurrency']:>5}")

    def worst(strategy: str) -> float:
        return max(results[s][strategy]["recovery_s"] for s in results)

    def shed(strategy: str) -> float:
        return round(sum(results[s][strategy]["shed_rate"] for s in results) / len(results), 4)

    summary = {
        "recovery_s": worst("tuned"),
        "shed_rate": shed("tuned"),
        "static_shed_rate": shed("static"),
        "aimd_recovery_s": worst("aimd"),
        "gradient_recovery_s": worst("gradient"),
        "static_recovery_s": worst("static"),
        "quick": args.quick,
        "scenarios": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
