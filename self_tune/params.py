"""The twelve tuned parameters: what each is driven by, its bounds, step limit and cooldown.

`PARAMETERS` is the one table (self_tune/README.md shows it in prose). Names are the live
config's own field names: the pipeline's `Tunables` and the fleet's `FleetTunables` (`agents`,
`lease_s`). Bounds here are the tuner's, inside the live config's own: the loop may only move
a parameter within the range its designers considered safe to automate. `max_step` limits one
change to a factor of ``1 + max_step`` either way (so 1.0 means at most double or halve).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from self_tune import policies
from self_tune.policies import Law

__all__ = ["PARAMETERS", "Method", "Owner", "Parameter", "parameter"]


class Owner(StrEnum):
    """Which live config holds the parameter."""

    PIPELINE = "pipeline"
    FLEET = "fleet"


class Method(StrEnum):
    """How the parameter's law moves it."""

    LITTLE_GRADIENT = "Little's law + gradient limiter"
    LITTLE = "Little's law"
    PID = "PID"
    AIMD = "AIMD"
    MULTIPLICATIVE = "multiplicative feedback"
    FEEDBACK_STEP = "feedback step"


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter:
    """One tuned parameter (see the module docstring for `max_step`)."""

    name: str
    owner: Owner
    unit: str
    low: float
    high: float
    max_step: float
    cooldown_s: float
    integer: bool
    method: Method
    signal: str
    setpoint: str
    why: str
    law: Callable[[], Law]
    metric: str
    """The telemetry metric the parameter's changes aim at: its modification records carry its
    mean before and after each change (beside the objective score)."""
    experiment: bool = False
    """A big change is tried as an A/B experiment first (see self_tune/experiment.py): for
    parameters that move slowly and whose effect on the objective is not immediate."""

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"{self.name}: low must be <= high, got {self.low}..{self.high}")
        if not self.max_step > 0:
            raise ValueError(f"{self.name}: max_step must be > 0, got {self.max_step!r}")
        if self.cooldown_s < 0:
            raise ValueError(f"{self.name}: cooldown_s must be >= 0, got {self.cooldown_s!r}")


def _p(**kw: object) -> Parameter:
    return Parameter(**kw)  # type: ignore[arg-type]


PARAMETERS: tuple[Parameter, ...] = (
    _p(
        name="inference_concurrency", owner=Owner.PIPELINE, unit="calls", low=1, high=1024,
        max_step=1.0, cooldown_s=2, integer=True, method=Method.LITTLE_GRADIENT,
        signal="arrivals/s, call time (inference_active / calls/s), queue depth, failure "
        "ratio, the rate limit in force and the 429 ratio (the capped call rate)",
        setpoint="demand × no-load call time × 1.3 while the call time stays within 1.5× of "
        "its no-load value; the capped rate instead of demand while calls run at a cap",
        why="concurrency is right when it carries demand without queueing at the provider; "
        "the call time rising above no-load is the provider's queue, which more slots worsen",
        metric="latency_p95_ms", law=policies.ConcurrencyLaw,
    ),
    _p(
        name="inference_queue_capacity", owner=Owner.PIPELINE, unit="requests", low=8,
        high=65536, max_step=1.0, cooldown_s=5, integer=True, method=Method.LITTLE,
        signal="drain rate (calls/s the upstream accepts), queue wait, shed share, p95 "
        "while the queue is full",
        setpoint="drain rate × half the p95 objective, less while p95 nears it with the "
        "queue full",
        why="a request queued beyond what drains within the objective misses it anyway; "
        "shedding it at once is kinder than a timeout",
        metric="shed_per_s", law=policies.QueueCapacityLaw,
    ),
    _p(
        name="shed_threshold", owner=Owner.PIPELINE, unit="fraction of capacity", low=0.3,
        high=0.95, max_step=2.0, cooldown_s=5, integer=False, method=Method.PID,
        signal="p95 latency of the protected classes (priority.<class>.latency_p95_ms of "
        "critical, high, normal; overall p95 without them) over its objective; arrivals a full "
        "queue sheds; arrivals over the capped drain rate (feed-forward: to the floor at once)",
        setpoint="p95 ≤ objective, no low priority queued where it cannot be served",
        why="shedding low priority earlier keeps headroom for the rest when latency suffers; "
        "in a priority queue the lowest level waits behind every higher arrival",
        metric="latency_p95_ms", law=policies.ShedThresholdLaw,
    ),
    _p(
        name="breaker_failure_threshold", owner=Owner.PIPELINE, unit="failures", low=2,
        high=50, max_step=0.5, cooldown_s=30, integer=True, method=Method.FEEDBACK_STEP,
        signal="breaker trips at a low failure ratio (false trips) vs failure ratio > 50% "
        "while closed (late catches)",
        setpoint="no false trips, no late catches",
        why="counts of trips are feedback events, not a continuous error: steps fit, PID "
        "does not",
        metric="error_rate", law=policies.BreakerThresholdLaw, experiment=True,
    ),
    _p(
        name="breaker_open_s", owner=Owner.PIPELINE, unit="s", low=1, high=600, max_step=0.5,
        cooldown_s=30, integer=False, method=Method.MULTIPLICATIVE,
        signal="half-open probe outcomes: re-opened at once vs recovered",
        setpoint="the first probe after the open period succeeds",
        why="a failed probe means the outage outlasts the period; a quick recovery means "
        "the period wasted good time",
        metric="error_rate", law=policies.BreakerOpenLaw, experiment=True,
    ),
    _p(
        name="retry_max_attempts", owner=Owner.PIPELINE, unit="attempts", low=1, high=6,
        max_step=0.5, cooldown_s=30, integer=True, method=Method.FEEDBACK_STEP,
        signal="share of retries that rescue a request (1 - (errors/s - sheds/s) ÷ retries/s)",
        setpoint="retries rescue at least 30% of the requests they retry",
        why="a retry that rarely succeeds only adds load to an upstream already failing",
        metric="error_rate", law=policies.RetryAttemptsLaw, experiment=True,
    ),
    _p(
        name="retry_base_delay_s", owner=Owner.PIPELINE, unit="s", low=0.05, high=10,
        max_step=1.0, cooldown_s=10, integer=False, method=Method.MULTIPLICATIVE,
        signal="failure ratio of upstream attempts",
        setpoint="failure ratio under 20%; back to the default while there are none",
        why="an upstream refusing many calls is asking for space; Retry-After is honoured "
        "per call already, this spreads the retries that have none",
        metric="upstream_error_rate", law=policies.RetryDelayLaw,
    ),
    _p(
        name="rate_limit_rps", owner=Owner.PIPELINE, unit="requests/s", low=0.5, high=100_000,
        max_step=1.0, cooldown_s=2, integer=False, method=Method.AIMD,
        signal="429 ratio (provider.*.rate_limited_total rates) and the call rate; the "
        "observed Retry-After (provider.*.paused_s: no raise before it passed); 5xx and "
        "timeouts do not move it", setpoint="no 429s (after a burst, +10% probes up to "
        "1.25 × what was accepted, then doubling again)",
        why="the upstream's limit is unknown and moves; AIMD finds it and tracks it, as TCP",
        metric="upstream_error_rate", law=policies.RateLimitLaw,
    ),
    _p(
        name="semantic_dedup_threshold", owner=Owner.PIPELINE, unit="match probability",
        low=0.8, high=0.99, max_step=0.02, cooldown_s=300, integer=False,
        method=Method.FEEDBACK_STEP,
        signal="wrong-hit feedback rate (semantic_dedup.wrong_hit_rate) and hit rate",
        setpoint="wrong hits under 2%",
        why="a wrong hit serves someone another prompt's answer; the bound is the contract, "
        "the hit rate is the gain",
        metric="semantic_dedup.wrong_hit_rate", law=policies.DedupThresholdLaw,
    ),
    _p(
        name="cache_ttl_s", owner=Owner.PIPELINE, unit="s", low=10, high=86_400, max_step=0.5,
        cooldown_s=300, integer=False, method=Method.MULTIPLICATIVE,
        signal="cache hit rate vs stale-answer feedback (feedback.stale_rate: stale reports "
        "over the answers a cache served in the last 5 minutes)",
        setpoint="no stale answers",
        why="a longer TTL saves calls only while answers stay true; without stale feedback "
        "the law holds",
        metric="cache_hit_rate", law=policies.CacheTtlLaw, experiment=True,
    ),
    _p(
        name="agents", owner=Owner.FLEET, unit="agents", low=1, high=64, max_step=0.5,
        cooldown_s=60, integer=True, method=Method.LITTLE,
        signal="backlog, idle agents, attempt duration; the 429 ratio caps it",
        setpoint="backlog drained within 10 min, no agent idle while tasks wait",
        why="more agents than the backlog needs only add upstream load; fewer leave work "
        "waiting",
        metric="fleet.backlog", law=policies.FleetSizeLaw,
    ),
    _p(
        name="lease_s", owner=Owner.FLEET, unit="s", low=10, high=3600, max_step=0.5,
        cooldown_s=120, integer=False, method=Method.FEEDBACK_STEP,
        signal="heartbeat gap p99, leases lost by live owners",
        setpoint="3 × heartbeat gap p99, and no live owner losing a lease",
        why="a short lease brings a dead agent's task back sooner; too short takes work from "
        "a live one",
        metric="fleet.leases.lost_per_s", law=policies.LeaseLaw,
    ),
)
"""The twelve, in the order the README's table lists them."""

_BY_NAME = MappingProxyType({p.name: p for p in PARAMETERS})


def parameter(name: str) -> Parameter:
    """The parameter called `name`; KeyError naming it otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown tuned parameter {name!r}; have {sorted(_BY_NAME)}") from None
