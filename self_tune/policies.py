"""The control laws: how each of the twelve parameters moves with what is measured.

Each law is a small stateful object with `propose(signals, current) -> Proposal | None`;
the `TuningController` clamps, rate-limits and applies what they propose. A law that lacks
its signal (the snapshot does not carry it) proposes nothing: it never guesses.

`Signals` reads the flat metric names the sampler publishes (see self_tune/sources.py):
``requests_per_s``, ``upstream_calls_per_s``, ``inference_active``,
``stage.inference.depth``, ``latency_p95_ms``, ``provider.<name>.failures_per_s``, …
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from orchestrator.request import Priority
from self_tune.limiter import GradientLimiter
from self_tune.objective import Objective, shed_share
from self_tune.pid import PID
from self_tune.telemetry import TelemetrySnapshot

__all__ = [
    "PROTECTED_PRIORITIES",
    "BreakerOpenLaw",
    "BreakerThresholdLaw",
    "CacheTtlLaw",
    "ConcurrencyLaw",
    "DedupThresholdLaw",
    "FleetSizeLaw",
    "Law",
    "LeaseLaw",
    "Proposal",
    "QueueCapacityLaw",
    "RateLimitLaw",
    "RetryAttemptsLaw",
    "RetryDelayLaw",
    "ShedThresholdLaw",
    "Signals",
]

Forecast = Callable[[], float | None]
"""Predicted arrivals per second over the next interval (None: no forecast yet)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proposal:
    """A law's wish: the value it wants and why, in words a person reads in the change log."""

    value: float
    reason: str


class Signals:
    """One snapshot, read through the names the laws need, with derived quantities.

    `config` is the values in force (the controller passes its port's), for a law whose
    parameter another one bounds: the rate limit caps what more concurrency can carry."""

    __slots__ = ("config", "forecast_rps", "objective", "snapshot")

    def __init__(
        self,
        snapshot: TelemetrySnapshot,
        *,
        objective: Objective,
        forecast_rps: float | None = None,
        config: Mapping[str, float | None] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.objective = objective
        self.forecast_rps = forecast_rps
        self.config = config or {}

    def get(self, metric: str, default: float = 0.0) -> float:
        return self.snapshot.get(metric, default)

    def has(self, metric: str) -> bool:
        return metric in self.snapshot.values

    def _sum(self, prefix: str, suffix: str) -> float:
        return sum(
            v
            for k, v in self.snapshot.values.items()
            if k.startswith(prefix) and k.endswith(suffix)
        )

    @property
    def forecast_agents(self) -> float | None:
        """Agents the demand forecast says the backlog needs `forecast.lead_s` ahead (the
        sampler derives it from the telemetry; None: no forecast yet)."""
        return self.get("forecast.agents") if self.has("forecast.agents") else None

    @property
    def arrivals_per_s(self) -> float:
        return self.get("requests_per_s")

    @property
    def calls_per_s(self) -> float:
        return self.get("upstream_calls_per_s")

    @property
    def failure_ratio(self) -> float:
        """Failed upstream attempts over attempts in the interval (429s, 5xx, timeouts)."""
        calls = self.calls_per_s
        return min(1.0, self._sum("provider.", ".failures_per_s") / calls) if calls > 0 else 0.0

    @property
    def refusal_ratio(self) -> float:
        """429s (the upstream's backpressure) over attempts in the interval; 5xx and timeouts
        are not refusals: they say the upstream is failing, not that we send too much."""
        calls = self.calls_per_s
        refused = self._sum("provider.", ".rate_limited_per_s")
        return min(1.0, refused / calls) if calls > 0 else 0.0

    @property
    def rate_limit_rps(self) -> float | None:
        """The client rate limit in force (None: unlimited, or not known to the controller)."""
        value = self.config.get("rate_limit_rps")
        return float(value) if value is not None else None

    @property
    def throughput_cap(self) -> float | None:
        """Calls per second the upstream path carries now, when something other than demand
        caps it: our own rate limit while calls run at it, or the upstream's 429s (what it
        accepted). None while demand is what sets the call rate."""
        calls = self.calls_per_s
        if calls <= 0:
            return None
        caps = []
        limit = self.rate_limit_rps
        if limit is not None and calls >= 0.9 * limit:
            caps.append(limit)
        refused = self.refusal_ratio
        if refused > 0.05:
            caps.append(calls * (1 - refused))
        return min(caps) if caps else None

    @property
    def call_time_s(self) -> float | None:
        """Mean time a call holds a concurrency slot, by Little's law (active / rate)."""
        calls = self.calls_per_s
        return self.get("inference_active") / calls if calls > 0 else None

    @property
    def queue_depth(self) -> float:
        return self.get("stage.inference.depth")

    @property
    def queue_wait_s(self) -> float:
        """Expected wait for a request arriving now: depth / drain rate."""
        calls = self.calls_per_s
        return self.queue_depth / calls if calls > 0 else (math.inf if self.queue_depth else 0.0)

    @property
    def shed_share(self) -> float:
        return shed_share(self.snapshot)

    @property
    def paused_s(self) -> float:
        """The longest a provider's rate limiter still admits nothing: the rest of the
        Retry-After its last 429 asked for (0 when none is paused)."""
        return self._max("provider.", ".paused_s")

    @property
    def breaker_open(self) -> bool:
        return self._max("provider.", ".breaker_open") >= 1.0

    @property
    def breaker_trips_per_s(self) -> float:
        return self._sum("provider.", ".breaker_opened_per_s")

    def _max(self, prefix: str, suffix: str) -> float:
        vals = [
            v
            for k, v in self.snapshot.values.items()
            if k.startswith(prefix) and k.endswith(suffix)
        ]
        return max(vals, default=0.0)


class Law:
    """Base for the laws: `propose` and `reset` (forget learned state)."""

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget learned state (after a rollback moved the parameter under the law)."""


class ConcurrencyLaw(Law):
    """Inference concurrency: Little's law on measured demand, gated by an RTT gradient.

    Needed slots = demand (max of measured arrivals and the forecast) × the no-load call
    time × `headroom`. While the call time is near its no-load value, the upstream is not
    congested and the limit rises to what demand needs; when the call time grows beyond
    `tolerance` × no-load *after we raised the limit* (or calls are failing), that is the
    provider queueing the extra calls, and the gradient limiter's answer brings the limit
    down. A call time that grew while the limit did not is a slower provider, not congestion
    (Little's law makes in-flight calls grow with it either way): the no-load estimate moves
    to it, and demand then asks for more slots, not fewer. The congestion hypothesis is also
    tested: if two cuts in a row leave the call time where it was, it is not our load, and
    the no-load estimate moves to the new call time.

    While something else caps the call rate (`Signals.throughput_cap`: our rate limit with
    calls running at it, or the upstream's 429s), a slot held longer is a call waiting for a
    token, not a slower provider: the no-load estimate does not follow it, and the slots are
    what the capped rate needs (capped rate × no-load call time × `headroom`), both ways.
    More would only wait in the limiter until their deadlines, and Little's law on the
    inflated call time would ask for more still (the run-away a 429 storm caused).
    """

    def __init__(self, *, headroom: float = 1.3, tolerance: float = 1.5) -> None:
        self.headroom = headroom
        self.tolerance = tolerance
        self._gradient: GradientLimiter | None = None
        self._no_load_s: float | None = None
        self._no_load_limit = 0.0
        self._congested_at_s: float | None = None
        self._cuts = 0

    def reset(self) -> None:
        self._gradient = None
        self._no_load_s = None

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        call_s = signals.call_time_s
        if call_s is None or call_s <= 0:
            return None
        cap = signals.throughput_cap
        if cap is not None and self._no_load_s is not None:
            return self._capped(signals, current, call_s, cap)
        inflight = signals.get("inference_active")
        raised = current > 1.1 * self._no_load_limit
        if self._gradient is None:
            self._gradient = GradientLimiter(
                initial_limit=max(1.0, current), max_limit=1e6, tolerance=self.tolerance
            )
        self._gradient.set_limit(current)  # the controller's clamps are the truth
        dropped = signals.failure_ratio > 0.05
        if self._no_load_s is None or call_s < self._no_load_s:
            self._no_load_s, self._no_load_limit = call_s, current
        elif call_s > self.tolerance * self._no_load_s and not raised and not dropped:
            self._no_load_s, self._no_load_limit = call_s, current  # a slower provider
        else:
            self._no_load_s *= 1.01  # drift up slowly, so the estimate can follow change
        congested = call_s > self.tolerance * self._no_load_s or dropped
        if congested and not dropped:
            if self._congested_at_s is None:
                self._congested_at_s, self._cuts = call_s, 0
            elif self._cuts >= 2 and call_s >= 0.9 * self._congested_at_s:
                # Cutting did not help: the provider itself got slower.
                self._no_load_s, self._no_load_limit = call_s, current
                self._congested_at_s, congested = None, False
        elif not congested:
            self._congested_at_s = None
        gradient_limit = self._gradient.update(call_s, inflight=int(inflight), dropped=dropped)
        demand = max(signals.arrivals_per_s, signals.forecast_rps or 0.0)
        needed = demand * self._no_load_s * self.headroom
        if congested:
            self._cuts += 1
            return Proposal(
                value=min(current, gradient_limit),
                reason=(
                    f"upstream congested: call time {call_s * 1000:.0f} ms vs no-load "
                    f"{self._no_load_s * 1000:.0f} ms, {signals.failure_ratio:.0%} failed"
                ),
            )
        source = "forecast" if (signals.forecast_rps or 0) > signals.arrivals_per_s else "arrivals"
        if needed > current or (signals.queue_depth > 0 and inflight >= current):
            return Proposal(
                value=max(needed, current * 1.1),
                reason=(
                    f"Little's law: {demand:.1f} req/s ({source}) × {self._no_load_s * 1000:.0f} ms"
                    f" × {self.headroom:g} = {needed:.0f} slots; {signals.queue_depth:.0f} queued"
                ),
            )
        if needed < current * 0.25 and signals.queue_depth == 0:
            # Spare slots cost nothing until a burst lands them all on the provider at once;
            # keep twice what demand needs.
            return Proposal(
                value=needed * 2, reason=f"demand needs only {needed:.0f} of {current:.0f} slots"
            )
        return None

    def _capped(
        self, signals: Signals, current: float, call_s: float, cap: float
    ) -> Proposal | None:
        assert self._no_load_s is not None
        if call_s < self._no_load_s:
            self._no_load_s, self._no_load_limit = call_s, current
        else:
            self._no_load_s *= 1.01  # as above: the estimate may still follow slow change
        self._congested_at_s = None
        demand = max(signals.arrivals_per_s, signals.forecast_rps or 0.0)
        carried = min(demand, cap)
        needed = max(1.0, carried * self._no_load_s * self.headroom)
        waiting = call_s > self.tolerance * self._no_load_s  # slots wait for tokens
        if (waiting and current > needed * 1.25) or needed > current * 1.25:
            limit = signals.rate_limit_rps
            by = (
                f"rate limit {limit:g} req/s"
                if limit is not None and cap >= limit
                else f"{signals.refusal_ratio:.0%} refused (429)"
            )
            return Proposal(
                value=needed,
                reason=(
                    f"calls capped at {cap:.1f}/s ({by}): {carried:.1f} req/s × "
                    f"{self._no_load_s * 1000:.0f} ms × {self.headroom:g} = {needed:.0f} slots; "
                    f"call time {call_s * 1000:.0f} ms is waiting for the cap, not the provider"
                ),
            )
        return None


class QueueCapacityLaw(Law):
    """Inference queue capacity: as long as a queue the drain rate empties within the wait
    budget (`wait_share` of the p95 objective), so an overload sheds at once instead of
    queueing requests that will miss their objective anyway.

    The drain rate is what the upstream accepts (`Signals.throughput_cap` while 429s or our
    rate limit cap it): a refused attempt drains nothing. Depth ÷ drain is the wait of a
    first-in-first-out queue; in a priority queue the lower levels wait longer (every
    higher arrival goes ahead), so the budget is also corrected by feedback: while p95 is
    near the objective (over `guard` of it) with the queue at least half full, the budget
    shrinks by a fifth per interval (to a quarter at most); it grows back while p95 is well
    within (under `relax`)."""

    def __init__(
        self, *, wait_share: float = 0.5, guard: float = 0.7, relax: float = 0.5
    ) -> None:
        self.wait_share = wait_share
        self.guard = guard
        self.relax = relax
        self._scale = 1.0

    def reset(self) -> None:
        self._scale = 1.0

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        calls = signals.calls_per_s
        if calls <= 0:
            return None
        cap = signals.throughput_cap
        if cap is not None:
            calls = min(calls, cap)  # 429s drain nothing: the queue empties at what is accepted
        p95_share = signals.get("latency_p95_ms") / signals.objective.p95_ms
        if p95_share > self.guard and signals.queue_depth >= current / 2:
            self._scale = max(0.25, self._scale * 0.8)
        elif p95_share < self.relax:
            self._scale = min(1.0, self._scale * 1.1)
        budget_s = signals.objective.p95_ms / 1000 * self.wait_share * self._scale
        target = calls * budget_s
        if signals.shed_share > 0 and signals.queue_wait_s < budget_s / 2 and target > current:
            return Proposal(
                value=target, reason=f"shedding while queue wait is {signals.queue_wait_s:.2f} s"
            )
        if target < current * 0.8:
            return Proposal(
                value=target,
                reason=(
                    f"{current:.0f} queued requests would wait {current / calls:.1f} s at "
                    f"{calls:.0f} calls/s; the wait budget is {budget_s:.1f} s"
                ),
            )
        if target > current * 1.25 and signals.shed_share > 0:
            return Proposal(value=target, reason="drain rate grew: the budget holds more")
        return None


PROTECTED_PRIORITIES = tuple(str(level) for level in Priority if level is not Priority.LOW)
"""The classes the shed threshold protects: a queue past the threshold sheds only `low`."""


class ShedThresholdLaw(Law):
    """Shed threshold: PID on p95 latency against its objective — shed low priority earlier
    while latency is above the objective, relax back while it is below.

    The latency is that of the classes shedding protects (`priority.<class>.latency_p95_ms`
    of critical, high and normal: the worst of those measured), not the overall p95: the
    low class, served last, waits behind every higher arrival, and its waits would have the
    law shed it harder though the others are served in time. Without per-class figures (a
    snapshot that lacks them, or no protected request answered yet) it reads the overall p95.
    """

    def __init__(self, *, default: float = 0.9, low: float = 0.3, overload: float = 0.1) -> None:
        self.default = default
        self.low = low
        self.overload = overload
        self._pid = PID(0.3, 0.05, 0.0, setpoint=0.0, output_limits=(low - default, 0.0))

    def reset(self) -> None:
        self._pid.reset()

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        if signals.get("requests_per_s") <= 0:
            return None
        # Measurement: how far over the objective p95 is (0 when within it), or the share
        # of arrivals the full queue turns away, whichever is larger.
        p95_ms, whose = self.protected_p95_ms(signals)
        over = max(0.0, p95_ms / signals.objective.p95_ms - 1.0)
        overflow = signals.shed_share if signals.queue_depth > 0 else 0.0
        value = self.default + self._pid.update(max(over, overflow), dt=1.0)
        cap = signals.throughput_cap
        arrivals = signals.arrivals_per_s
        overload = max(0.0, 1.0 - cap / arrivals) if cap is not None else 0.0
        if overload > self.overload:
            # Feed-forward: more arrives than the capped upstream drains, so the queue will
            # fill, and the lowest priority, served last, would wait in it to its deadline.
            # Shed it at the door from the start, not once p95 shows the damage.
            if current <= self.low + 0.01:
                return None
            return Proposal(
                value=self.low,
                reason=(
                    f"{arrivals:.0f} req/s arrive, {cap:.0f}/s drain: shed low priority "
                    "before it queues to its deadline"
                ),
            )
        if abs(value - current) < 0.01:
            return None
        if over >= overflow and over > 0:
            reason = f"p95 {p95_ms:.0f} ms ({whose}) is {over:.0%} over objective"
        elif overflow > 0:
            reason = (
                f"queue full: {overflow:.0%} of arrivals shed; low priority would wait behind "
                "it until its deadline"
            )
        else:
            reason = f"p95 ({whose}) within objective, queue not overflowing: relax shedding"
        return Proposal(value=value, reason=reason)

    @staticmethod
    def protected_p95_ms(signals: Signals) -> tuple[float, str]:
        """The worst p95 (ms) of the protected classes measured, and whose it is (`"all"`:
        the overall p95, when no protected class is)."""
        measured = [
            (signals.get(f"priority.{name}.latency_p95_ms"), name)
            for name in PROTECTED_PRIORITIES
            if signals.has(f"priority.{name}.latency_p95_ms")
        ]
        if not measured:
            return signals.get("latency_p95_ms"), "all"
        return max(measured)


class BreakerThresholdLaw(Law):
    """Breaker failure threshold: raise it after false trips (the breaker opened though the
    failure ratio was low), lower it after a late catch (most calls failing while closed)."""

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        ratio = signals.failure_ratio
        if signals.breaker_trips_per_s > 0 and ratio < 0.2:
            return Proposal(value=current + 2, reason=f"false trip at {ratio:.0%} failures")
        if not signals.breaker_open and ratio > 0.5 and signals.calls_per_s > 0:
            return Proposal(value=current - 1, reason=f"{ratio:.0%} failing with breaker closed")
        return None


class BreakerOpenLaw(Law):
    """Breaker open duration: lengthen after a probe fails (the breaker re-opens within one
    open period), shorten when a trip is followed by a quick recovery."""

    def __init__(self) -> None:
        self._was_open = False
        self._opens = 0

    def reset(self) -> None:
        self._was_open = False
        self._opens = 0

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        trips = signals.breaker_trips_per_s
        is_open = signals.breaker_open
        proposal = None
        if trips > 0 and self._opens > 0:
            proposal = Proposal(value=current * 1.5, reason="half-open probe failed: re-opened")
        elif self._was_open and not is_open and signals.failure_ratio < 0.05:
            proposal = Proposal(value=current * 0.7, reason="recovered at the first probe")
        self._opens = self._opens + 1 if trips > 0 else (self._opens if is_open else 0)
        self._was_open = is_open
        return proposal


class RetryAttemptsLaw(Law):
    """Retry max attempts: fewer when retries rarely rescue a request (they only add load),
    more when they usually do and requests still fail.

    The failures weighed against the retries are those a retry could have rescued: the
    pipeline's error count includes the requests shed at the door (`shed_per_s`), which
    never reached a provider, and counting them made shedding look like retries failing."""

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        retries = signals.get("retries_per_s")
        if retries <= 0:
            return None
        failed = max(0.0, signals.get("errors_per_s") - signals.get("shed_per_s"))
        rescued = max(0.0, 1.0 - failed / retries)
        if rescued < 0.3:
            return Proposal(value=current - 1, reason=f"only {rescued:.0%} of retries help")
        if rescued > 0.8 and failed > 0:
            return Proposal(value=current + 1, reason=f"{rescued:.0%} of retries succeed")
        return None


class RetryDelayLaw(Law):
    """Retry base delay: multiplicative — double while a large share of attempts fail (an
    upstream asking us to back off), decay toward the default while none do."""

    def __init__(self, *, default: float = 0.5) -> None:
        self.default = default

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        ratio = signals.failure_ratio
        if ratio > 0.2:
            return Proposal(value=current * 2, reason=f"{ratio:.0%} of attempts failing")
        if ratio == 0 and current > self.default:
            return Proposal(value=max(self.default, current * 0.7), reason="no failures")
        return None


class RateLimitLaw(Law):
    """Rate limit (req/s): AIMD on the upstream's 429s — on a burst of them, the limit drops
    to what was accepted (never below half of what was attempted); while none, it doubles as
    long as calls run at the limit (slow start: a limit cut during a storm, when few calls
    got through, must not take minutes to climb back) and grows by 10% once they do not.
    5xx and timeouts move nothing here: throttling a failing upstream is the breaker's
    and the retry's business, and would keep the limit low after it recovers.

    As TCP after a loss, a burst leaves a ceiling (the rate the upstream accepted): below
    `ceiling_margin` × that ceiling the limit probes by 10%, not by doubling, so a storm that
    still holds is not hit again at twice its rate every other interval (the saw-tooth that
    kept half the calls refused and the slots waiting); once the limit is past the margin
    with no 429s, the ceiling has lifted and slow start resumes.

    Nor does it raise while an upstream's Retry-After has not passed (`provider.*.paused_s`,
    what is left of the pause the last 429 asked for): an interval without 429s then says
    only that the paused provider was not asked (the others carried the calls), not that it
    would accept more. Cuts still happen meanwhile.

    "Half of what was attempted" is half the highest call rate of the last `memory`
    intervals, not of this one alone: the first 429s pause every call for their Retry-After,
    so the interval they land in attempts few calls (3/s of a demand of 60/s in
    benchmarks/tuning.py's storm) and halving that rate cut the limit to 1.5/s against an
    upstream still accepting 30/s; slow start then took 10 s to climb back while the queue
    grew. As TCP halves the window it was sending at before the loss."""

    def __init__(self, *, ceiling_margin: float = 1.25, memory: int = 3) -> None:
        self.ceiling_margin = ceiling_margin
        self.memory = memory
        self._ceiling: float | None = None
        self._recent_calls: deque[float] = deque(maxlen=memory)

    def reset(self) -> None:
        self._ceiling = None
        self._recent_calls.clear()

    def propose(self, signals: Signals, current: float | None) -> Proposal | None:  # type: ignore[override]
        ratio = signals.refusal_ratio
        calls = signals.calls_per_s
        self._recent_calls.append(calls)
        if calls <= 0:
            return None
        accepted = calls * (1 - ratio)
        if ratio > 0.05:
            self._ceiling = accepted
            value = max(accepted * 0.9, max(self._recent_calls) * 0.5)
            if current is not None and value >= current:
                return None
            return Proposal(
                value=value,
                reason=f"{ratio:.0%} of {calls:.0f} calls/s got 429 (attempted up to "
                f"{max(self._recent_calls):.0f} calls/s)",
            )
        if current is not None and ratio == 0:
            paused_s = signals.paused_s
            if paused_s > 0:
                return None  # the upstream's Retry-After still holds: no evidence to raise on
            if self._ceiling is not None and current >= self.ceiling_margin * self._ceiling:
                self._ceiling = None  # past the last storm's ceiling without a 429: it lifted
            if calls >= 0.8 * current:  # the limit is what holds traffic back
                if self._ceiling is not None:
                    return Proposal(
                        value=current * 1.1,
                        reason=f"no 429s near the last ceiling ({self._ceiling:.1f}/s): probe",
                    )
                return Proposal(value=current * 2, reason="no 429s at the limit: double it")
            return Proposal(value=current * 1.1, reason="no 429s: probe upward")
        return None


class DedupThresholdLaw(Law):
    """Semantic dedup threshold: raise on wrong-hit feedback above `bound`; lower slowly
    while wrong hits stay under half of it and there are hits to gain."""

    def __init__(self, *, bound: float = 0.02) -> None:
        self.bound = bound

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        if not signals.has("semantic_dedup.wrong_hit_rate"):
            return None
        wrong = signals.get("semantic_dedup.wrong_hit_rate")
        if wrong > self.bound:
            return Proposal(
                value=current + 0.01, reason=f"wrong hits {wrong:.1%} > {self.bound:.0%}"
            )
        if wrong < self.bound / 2 and signals.get("semantic_dedup.hit_rate") > 0:
            return Proposal(value=current - 0.002, reason=f"wrong hits {wrong:.1%}: widen")
        return None


class CacheTtlLaw(Law):
    """Cache TTL: shorten when answers are reported stale; lengthen while the cache is
    useful and feedback says nothing was stale. Without stale feedback it holds."""

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        if not signals.has("feedback.stale_rate"):
            return None
        stale = signals.get("feedback.stale_rate")
        if stale > 0.01:
            return Proposal(value=current * 0.5, reason=f"{stale:.1%} of answers stale")
        if stale == 0 and signals.get("cache_hit_rate") > 0.05:
            return Proposal(value=current * 1.25, reason="useful and never stale")
        return None


class FleetSizeLaw(Law):
    """Fleet size (agents): Little's law — backlog drained within `drain_s` at the measured
    attempt duration — capped while the upstream is refusing calls (429s). The demand
    forecast feeds forward (`forecast.agents`: the agents the forecast backlog needs `lead_s`
    ahead): the fleet grows to it before the backlog arrives, and does not shrink below it."""

    def __init__(self, *, drain_s: float = 600.0) -> None:
        self.drain_s = drain_s

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        if not signals.has("fleet.backlog"):
            return None
        if signals.refusal_ratio > 0.2:
            return Proposal(
                value=current - 1, reason=f"upstream refusing {signals.refusal_ratio:.0%} (429)"
            )
        backlog = signals.get("fleet.backlog")
        idle = signals.get("fleet.agents_idle")
        duration = signals.get("fleet.attempt_duration.p50_s", 60.0) or 60.0
        needed = math.ceil(backlog * duration / self.drain_s) if backlog > 0 else 0
        forecast = signals.forecast_agents
        if idle == 0 and forecast is not None and forecast > max(needed, current):
            lead = signals.get("forecast.lead_s")
            return Proposal(value=current + 1,
                            reason=f"forecast: {forecast:.0f} agents needed in {lead:.0f} s")
        if backlog > 0 and idle == 0 and needed > current:
            return Proposal(value=current + 1, reason=f"{backlog:.0f} tasks waiting, none idle")
        if backlog == 0 and idle > 0 and current > 1:
            if forecast is not None and forecast >= current:
                return None  # the forecast needs them soon: keep them
            return Proposal(value=current - 1, reason=f"{idle:.0f} agents idle, nothing waiting")
        return None


class LeaseLaw(Law):
    """Task lease duration: as short as safety allows — three times the p99 heartbeat gap —
    and longer at once when a live owner lost its lease (the fleet's own lease-lost events:
    its agents are alive by definition)."""

    def propose(self, signals: Signals, current: float) -> Proposal | None:
        if signals.get("fleet.leases.lost_per_s") > 0:
            return Proposal(value=current * 1.5, reason="a live agent lost its lease")
        if signals.get("fleet.heartbeat_gap.count") <= 0:
            return None  # no renewals measured yet
        target = max(10.0, 3 * signals.get("fleet.heartbeat_gap.p99_s"))
        if abs(target - current) / current > 0.1:
            return Proposal(value=target, reason=f"3 × heartbeat gap p99 = {target:.0f} s")
        return None
