"""Benchmark the tuning loop in a closed-loop simulation of the pipeline, against baselines.

    .venv/bin/python benchmarks/tuning.py [--quick] [--seed N]

A discrete-event model of the inference stage, built from the pipeline's own parts on the
simulation's clock with `PipelineConfig`'s defaults: the sharded `PriorityQueue`s (ageing by
`priority_ageing_s`, low-priority shedding, a full queue's displacement of its newest
lower-priority item), the shard loops behind the live concurrency limit, the provider's
`CircuitBreaker` (half-open probes), `RateLimiter` (paused by a 429's Retry-After),
`RetryPolicy` (full jitter, honouring Retry-After), per-request deadlines enforced as the
pipeline's timer does (a call still running at the deadline is cancelled, no verdict for the
breaker), and `PipelineMetrics` for the snapshot's p95 (answered requests) and error rate
(sheds included). In front of a provider whose latency grows when more calls are in flight
than it can serve and which answers 429 past its own rate limit (backpressure: as in the
pipeline, a 429 never counts against the breaker). Every component reads the live values from
a real `orchestrator.config.LiveConfig` at each use, as the pipeline does.

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
is back within the objective and stays there 10 s; every request that was queued counts, a
request that expires is measured at its deadline, where the pipeline fails it, one displaced
from a full queue when it is displaced; arrivals refused at the door do not), overshoot
(worst p95 / objective − 1), oscillation (direction reversals of the concurrency limit per
minute), and the share of requests shed (refused or displaced). The last line is one JSON
object: `recovery_s` (tuned, worst scenario), `shed_rate` (tuned, all scenarios),
`static_shed_rate`, `aimd_recovery_s`, `gradient_recovery_s` (worst scenario each), then every
figure per scenario and strategy.
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

from orchestrator.config import Change, LiveConfig, PipelineConfig, Tunables
from orchestrator.errors import CircuitOpen, DeadlineExceeded, Overloaded, ProviderError
from orchestrator.metrics import PipelineMetrics
from orchestrator.request import Priority
from orchestrator.resilience.breaker import BreakerState, CircuitBreaker
from orchestrator.resilience.priority import PriorityQueue
from orchestrator.resilience.ratelimit import RateLimiter
from orchestrator.resilience.retry import RetryPolicy
from self_tune.controller import TuningController
from self_tune.limiter import AIMDLimiter, GradientLimiter
from self_tune.live import LocalConfig
from self_tune.objective import Objective
from self_tune.sources import PIPELINE_COUNTERS
from self_tune.telemetry import InProcessBus, Sampler, TelemetrySnapshot

OBJECTIVE = Objective(p95_ms=5_000.0, error_rate=0.05, shed_rate=0.05)
DEADLINE_S = 30.0
STABLE_S = 10  # p95 must stay within the objective this long to count as recovered
PRIORITIES = ((Priority.HIGH, 0.2), (Priority.NORMAL, 0.5), (Priority.LOW, 0.3))
PIPELINE = PipelineConfig()  # the fixed settings the pipeline's stage is built with
_BREAKER_OPEN = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}


def _priority(r: float) -> Priority:
    """The priority a uniform draw `r` picks, by the shares in PRIORITIES."""
    for priority, share in PRIORITIES:
        if r < share:
            return priority
        r -= share
    return PRIORITIES[-1][0]


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
    """One request, as the pipeline's `Job` carries it through the inference stage."""

    id: int
    arrival: float
    priority: Priority
    deadline: float
    enqueued_at: float = 0.0  # set by PriorityQueue.put, read by its ageing
    rounds: int = 0  # rounds that made an upstream call (InferenceStage._call's `rounds`)
    done: bool = False  # answered or failed: the pipeline's `job.future.done()`


@dataclass(slots=True)
class Bucket:
    latencies: list[float] = field(default_factory=list)


class Sim:
    """The inference stage and its provider, event by event (see the module docstring).

    The stage's parts are the pipeline's own classes on the simulation's clock, built with the
    defaults of `PipelineConfig` as `Pipeline` builds them: `PriorityQueue` shards (ageing,
    low-priority shedding, displacement), `CircuitBreaker` (half-open probes),
    `RateLimiter` (paused by a 429's Retry-After), `RetryPolicy` and `PipelineMetrics` (the
    snapshot's p95 and error rate). The shard loops and the concurrency limit follow
    `InferenceStage._shard_loop` and `ConcurrencyLimit`; one attempt follows
    `InferenceStage._call` for one provider; the deadline timer follows `Pipeline._expire`.
    """

    def __init__(self, scenario: Scenario, live: LiveConfig, seed: int) -> None:
        self.sc = scenario
        self.live = live
        # Separate streams, so every strategy sees the same arrivals whatever its calls draw
        # (the pipeline's RetryPolicy has its own generator too).
        self.rng = random.Random(seed)  # arrivals and their priorities
        self.provider_rng = random.Random(f"{seed}:provider")
        self.now = 0.0
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()

        def clock() -> float:
            return self.now

        config = PIPELINE
        self.shards = config.inference_shards
        self.queues: tuple[PriorityQueue[Request], ...] = tuple(
            PriorityQueue(
                f"inference[{i}]",
                capacity=self._shard_capacity,
                shed_threshold=lambda: live.current.shed_threshold,
                ageing_s=config.priority_ageing_s,
                clock=clock,
            )
            for i in range(self.shards)
        )
        self._round_robin = 0
        # Shard loops waiting in ConcurrencyLimit.acquire, first come first served.
        self._waiting: deque[PriorityQueue[Request]] = deque()
        self.active = 0  # ConcurrencyLimit.active: slots held
        self.breaker = CircuitBreaker(
            "sim",
            failure_threshold=lambda: live.current.breaker_failure_threshold,
            open_s=lambda: live.current.breaker_open_s,
            probe_count=config.breaker_probe_count,
            close_success_ratio=config.breaker_close_success_ratio,
            clock=clock,
        )
        self.limiter = RateLimiter("sim", rps=lambda: live.current.rate_limit_rps, clock=clock)
        self.retry = RetryPolicy(
            rng=random.Random(f"{seed}:retry"),
            max_attempts=lambda: live.current.retry_max_attempts,
            base_delay_s=lambda: live.current.retry_base_delay_s,
            max_delay_s=config.retry_max_delay_s,
        )
        self.metrics = PipelineMetrics(window=config.metrics_window, clock=clock)
        self.provider_inflight = 0
        self.provider_tokens = 0.0
        self.provider_stamp = 0.0
        # the route's counters (the pipeline's names)
        self.failures_total = self.rate_limited_total = 0
        self.failed_total = 0  # failures other than sheds (the benchmark's error rate)
        self.buckets: dict[int, Bucket] = {}
        self.on_call: Callable[[float, bool], None] | None = None
        self._ids = itertools.count()
        # Pipeline._on_live_change: a raised concurrency limit hands out its slots at once.
        live.on_change(self._on_live_change)

    @property
    def shed_total(self) -> int:
        return sum(q.shed_total for q in self.queues)

    def _shard_capacity(self) -> int:
        return math.ceil(self.live.current.inference_queue_capacity / self.shards)

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

    def _on_live_change(self, changed: Change) -> None:
        if "inference_concurrency" in changed:
            self.at(self.now, "wake")

    def _on_wake(self, _: Any) -> None:
        self._dispatch()

    # -- admission (Pipeline._submit, _push) and the deadline (Pipeline._expire) ----------

    def _on_arrive(self, _: Any) -> None:
        self.at(self.now + self.rng.expovariate(self.sc.demand(self.now)), "arrive")
        self.metrics.requests_total += 1
        req = Request(next(self._ids), self.now, _priority(self.rng.random()),
                      self.now + DEADLINE_S)
        self.at(req.deadline, "expire", req)  # scheduled first: it fires before a call's end
        # Requests without a session go round-robin over the shards (InferenceStage.queue_for).
        self._round_robin = (self._round_robin + 1) % self.shards
        queue = self.queues[self._round_robin]
        try:
            displaced = queue.put(req)
        except Overloaded as exc:
            self._fail(req, exc, measured=False)  # refused on arrival: never queued
            return
        if displaced is not None:
            self._fail(displaced, Overloaded(queue.name, str(displaced.priority), len(queue),
                                             queue.capacity))
        if queue not in self._waiting:  # its shard loop wakes and asks for a slot
            self._waiting.append(queue)
        self._dispatch()

    def _on_expire(self, req: Request) -> None:
        # The pipeline fails a request at its deadline wherever it is, so it is measured there
        # (latency = the deadline). Queued, it stays in its queue until a shard loop takes it
        # and drops it (`not job.wanted`); in a call, the call is cancelled (`_on_done`).
        self._fail(req, DeadlineExceeded(str(req.id), DEADLINE_S, "inference"))

    # -- the shard loops and the concurrency limit --------------------------------------

    def _dispatch(self) -> None:
        # Each shard loop takes a slot first, then its queue's next item by effective priority
        # (ageing included), then queues for a slot again while its queue holds more.
        while self._waiting and self.active < self.live.current.inference_concurrency:
            queue = self._waiting.popleft()
            req = queue.get_nowait()
            if len(queue):
                self._waiting.append(queue)
            if req is None or req.done:
                continue  # displaced since, or expired while queued: the slot goes back
            self.active += 1
            self._attempt(req)

    # -- one round: breaker → rate limit → call (InferenceStage._call, one provider) -----

    def _on_attempt(self, req: Request) -> None:
        self._attempt(req)

    def _attempt(self, req: Request) -> None:
        try:
            self.breaker.allow()
        except CircuitOpen as exc:
            self._release(req, exc)  # no provider to try: fails at once, nothing sent
            return
        wait_s = self.limiter.try_acquire()
        if wait_s > 0:
            self.breaker.release()
            if self.now + wait_s >= req.deadline:
                self._release(req, DeadlineExceeded(str(req.id), DEADLINE_S, "inference"))
            else:  # rate limited: wait (holding the slot), not an attempt
                self.at(max(self.now + wait_s, math.nextafter(self.now, math.inf)), "attempt",
                        req)
            return
        req.rounds += 1
        self.metrics.upstream_calls += 1
        limit = self.sc.provider_rps(self.now)
        if math.isfinite(limit):
            self.provider_tokens = min(
                limit, self.provider_tokens + (self.now - self.provider_stamp) * limit)
            self.provider_stamp = self.now
            if self.provider_tokens < 1:
                self.at(self.now + 0.02, "done", (req, "429", 0.02, False))
                return
            self.provider_tokens -= 1
        else:
            self.provider_tokens, self.provider_stamp = 0.0, self.now
        self.provider_inflight += 1
        over = max(0, self.provider_inflight - self.sc.provider_slots) / self.sc.provider_slots
        latency = (self.sc.latency_s(self.now) * self.provider_rng.lognormvariate(0, 0.3)
                   * (1 + 3 * over))
        if self.now + latency >= req.deadline:
            # The deadline timer fires first (the call's own timeout is computed from the
            # same deadline, later) and cancels the call: no verdict for the breaker.
            self.at(req.deadline, "done", (req, "cancelled", req.deadline - self.now, True))
        else:
            self.at(self.now + latency, "done", (req, "ok", latency, True))

    def _on_done(self, payload: tuple[Request, str, float, bool]) -> None:
        req, outcome, rtt, used_provider = payload
        if used_provider:
            self.provider_inflight -= 1
        if self.on_call is not None:
            self.on_call(rtt, outcome == "ok")
        if outcome == "ok":
            self.breaker.record_success()
            self._release(req, None)
            return
        if outcome == "cancelled":
            self.breaker.release()
            self._release(req, None)  # already failed at its deadline
            return
        # The provider's 429: backpressure, not a fault. It counts as the provider being up,
        # and pauses the provider's rate limiter for its Retry-After.
        error = ProviderError("sim", "rate limited", status=429, retryable=True,
                              retry_after_s=1.0)
        self.failures_total += 1
        self.breaker.record_success()
        self.rate_limited_total += 1
        self.limiter.pause(error.retry_after_s or 1.0)
        backoff_s = self.retry.backoff_s(req.rounds, error)
        if backoff_s is None:
            self._release(req, error)
            return
        self.metrics.retries += 1
        if self.now + backoff_s >= req.deadline:
            self._release(req, error)
            return
        self.at(self.now + backoff_s, "attempt", req)

    def _release(self, req: Request, error: BaseException | None) -> None:
        """The request's task ends (answered, or failed with `error`); its slot goes back."""
        self.active -= 1
        if error is None:
            self._complete(req)
        else:
            self._fail(req, error)
        self._dispatch()

    def _complete(self, req: Request) -> None:
        if req.done:
            return
        req.done = True
        latency = self.now - req.arrival
        self.metrics.completed(latency, self.now)
        self.buckets.setdefault(int(self.now), Bucket()).latencies.append(latency)

    def _fail(self, req: Request, error: BaseException, *, measured: bool = True) -> None:
        # As Pipeline._fail: a request already answered or failed is not counted again.
        # `measured`: in the benchmark's latency buckets (everything that was queued).
        if req.done:
            return
        req.done = True
        latency = self.now - req.arrival
        self.metrics.failed(error, latency, self.now)
        if not isinstance(error, Overloaded):
            self.failed_total += 1
        if measured:
            self.buckets.setdefault(int(self.now), Bucket()).latencies.append(latency)

    # -- the snapshot, in the pipeline's metric names ------------------------------------

    def read(self) -> dict[str, float]:
        # Pipeline.snapshot(): p95 over the answered requests of the last `metrics_window`,
        # error rate over all of them (sheds and deadlines included).
        _, p95, _, throughput, error_rate = self.metrics.window_stats()
        metrics = self.metrics
        tun = self.live.current
        return {
            "requests_total": metrics.requests_total,
            "completed_total": metrics.completed_total,
            "errors_total": metrics.errors_total,
            "shed_total": self.shed_total,
            "retries": metrics.retries,
            "upstream_calls": metrics.upstream_calls,
            "inference_active": self.active,
            "inference_concurrency": tun.inference_concurrency,
            "latency_p95_ms": p95,
            "throughput_rps": throughput,
            "error_rate": error_rate,
            "stage.inference.depth": sum(len(q) for q in self.queues),
            "stage.inference.capacity": tun.inference_queue_capacity,
            "provider.sim.calls_total": metrics.upstream_calls,
            "provider.sim.failures_total": self.failures_total,
            "provider.sim.rate_limited_total": self.rate_limited_total,
            "provider.sim.breaker_open": _BREAKER_OPEN[self.breaker.state],
            "provider.sim.breaker_opened_total": self.breaker.opened_total,
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
        "shed_rate": round(sim.shed_total / max(1, sim.metrics.requests_total), 4),
        "error_rate": round(sim.failed_total / max(1, sim.metrics.requests_total), 4),
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
