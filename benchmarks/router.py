"""Benchmark the learned router on drifting providers against MABWiser and round-robin.

    .venv/bin/python benchmarks/router.py [--quick] [--seed N] [--requests N]

1. Drift: three seeded simulated providers (a strong, a mid and a local model) whose quality,
   latency and cost drift over 20,000 requests: the strong one degrades (quality down, latency
   up) for a stretch and recovers, the mid one slowly improves and has a latency spike, the
   local one's quality wanders. Each request's reward is `RewardWeights` (quality 0.7, latency
   0.15, cost 0.15) of a noisy observation. Cumulative regret is the sum, over requests, of
   the oracle's expected reward (the best provider at that moment, from the noiseless
   parameters) minus that of the provider chosen. Compared in the same run, on the same
   rewards: our three policies (`thompson`, the default; `ucb1`; `epsilon-greedy`), MABWiser's
   ThompsonSampling (fed Bernoulli draws of the reward, the usual way to run Beta-Bernoulli
   Thompson sampling on rewards in [0, 1]) and UCB1 (alpha 1), and round-robin. MABWiser is
   the `bench` extra (`pip install -e '.[bench]'`); without it those rows are skipped, the run
   says so, and `mabwiser_best_regret` is null.
2. Cheap vs strong: a trace of synthetic prompts of five hidden difficulties; a cheap model
   whose quality falls with difficulty and a strong one ~25x its price. The router sees only
   the prompt's `score_complexity` level as its context and learns per level (reward: quality
   0.8, cost 0.2). Reported: the share of the always-strong policy's quality reached and the
   share of its cost spent.

The last line printed is one JSON object: `regret` (the default policy's), `mabwiser_best_regret`,
`round_robin_regret`, `strong_quality_share`, `strong_cost_share`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from intelligence.complexity import score_complexity
from intelligence.router import LearnedRouter, Policy, RewardWeights

ARMS = ("anthropic:claude-sonnet-4-6", "openai:gpt-4o-mini", "llamacpp:local")
DRIFT_WEIGHTS = RewardWeights(quality=0.7, latency=0.15, cost=0.15)
QUALITY_NOISE = 0.1
LATENCY_NOISE = 0.25  # log-normal sigma


# -- 1. drifting providers ---------------------------------------------------------------------


Schedule = Sequence[tuple[float, float]]  # (fraction of the run, value), piecewise linear


def _at(schedule: Schedule, x: float) -> float:
    if x <= schedule[0][0]:
        return schedule[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(schedule):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
    return schedule[-1][1]


@dataclass(frozen=True, slots=True)
class DriftingProvider:
    """A provider whose expected quality, latency (ms) and cost (USD) follow schedules."""

    name: str
    quality: Schedule
    latency_ms: Schedule
    cost_usd: Schedule

    def params(self, x: float) -> tuple[float, float, float]:
        return _at(self.quality, x), _at(self.latency_ms, x), _at(self.cost_usd, x)

    def expected_reward(self, x: float) -> float:
        q, lat, cost = self.params(x)
        return DRIFT_WEIGHTS.reward(quality=q, latency_ms=lat, cost_usd=cost)

    def observe(self, x: float, rng: random.Random) -> float:
        q, lat, cost = self.params(x)
        return DRIFT_WEIGHTS.reward(
            quality=min(1.0, max(0.0, q + rng.gauss(0.0, QUALITY_NOISE))),
            latency_ms=lat * math.exp(rng.gauss(0.0, LATENCY_NOISE)),
            cost_usd=cost,
        )


def drifting_providers() -> tuple[DriftingProvider, ...]:
    strong = DriftingProvider(
        ARMS[0],
        # degrades from 30% to 45% of the run, recovers from 60% on
        quality=((0.0, 0.93), (0.30, 0.93), (0.33, 0.55), (0.58, 0.55), (0.62, 0.93), (1, 0.93)),
        latency_ms=((0.0, 1200), (0.30, 1200), (0.33, 4000), (0.58, 4000), (0.62, 1200), (1, 1200)),
        cost_usd=((0.0, 0.006), (1.0, 0.006)),
    )
    mid = DriftingProvider(
        ARMS[1],
        quality=((0.0, 0.74), (1.0, 0.86)),  # slowly improves
        latency_ms=((0.0, 700), (0.72, 700), (0.74, 3000), (0.85, 3000), (0.87, 700), (1, 700)),
        cost_usd=((0.0, 0.0015), (1.0, 0.0015)),
    )
    local = DriftingProvider(
        ARMS[2],
        quality=((0.0, 0.55), (0.25, 0.62), (0.5, 0.5), (0.75, 0.6), (1.0, 0.52)),
        latency_ms=((0.0, 400), (1.0, 400)),
        cost_usd=((0.0, 0.0), (1.0, 0.0)),
    )
    return strong, mid, local


class Chooser:
    """One policy under test: `choose()` then `learn(arm, reward)`."""

    name: str

    def choose(self) -> str:
        raise NotImplementedError

    def learn(self, arm: str, reward: float) -> None:
        raise NotImplementedError


class Ours(Chooser):
    def __init__(self, policy: Policy, seed: int) -> None:
        self.name = f"ours:{policy}"
        self.router = LearnedRouter(ARMS, policy=policy, seed=seed)

    def choose(self) -> str:
        return self.router.choose()

    def learn(self, arm: str, reward: float) -> None:
        self.router.update(arm, reward)


class RoundRobin(Chooser):
    name = "round-robin"

    def __init__(self) -> None:
        self.next = 0

    def choose(self) -> str:
        arm = ARMS[self.next % len(ARMS)]
        self.next += 1
        return arm

    def learn(self, arm: str, reward: float) -> None:
        pass


class Oracle(Chooser):
    """Knows the expected rewards (used only to check the regret bookkeeping)."""

    name = "oracle"

    def __init__(self, providers: Sequence[DriftingProvider], position: Callable[[], float]):
        self.providers = providers
        self.position = position

    def choose(self) -> str:
        x = self.position()
        return max(self.providers, key=lambda p: p.expected_reward(x)).name

    def learn(self, arm: str, reward: float) -> None:
        pass


class MabWiser(Chooser):
    """MABWiser's context-free policies, learning online one request at a time."""

    def __init__(self, kind: str, seed: int) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.name = f"mabwiser:{kind}"
        policy = (
            LearningPolicy.ThompsonSampling()
            if kind == "thompson"
            else LearningPolicy.UCB1(alpha=1.0)
        )
        self.mab = MAB(arms=list(ARMS), learning_policy=policy, seed=seed)
        self.binary = kind == "thompson"
        self.rng = random.Random(seed)
        self.fitted = False

    def choose(self) -> str:
        if not self.fitted:
            return ARMS[self.rng.randrange(len(ARMS))]
        return str(self.mab.predict())

    def learn(self, arm: str, reward: float) -> None:
        if self.binary:
            reward = 1.0 if self.rng.random() < reward else 0.0
        if self.fitted:
            self.mab.partial_fit([arm], [reward])
        else:
            self.mab.fit([arm], [reward])
            self.fitted = True


def run_drift(requests: int, seed: int, *, with_mabwiser: bool) -> dict[str, float]:
    """Cumulative regret of each policy on the same drifting providers."""
    providers = drifting_providers()
    by_name = {p.name: p for p in providers}
    step = [0]

    def position() -> float:
        return step[0] / requests

    choosers: list[Chooser] = [Ours(policy, seed) for policy in Policy]
    if with_mabwiser:
        choosers += [MabWiser("thompson", seed), MabWiser("ucb1", seed)]
    choosers += [RoundRobin(), Oracle(providers, position)]
    regret = dict.fromkeys((c.name for c in choosers), 0.0)
    elapsed = dict.fromkeys((c.name for c in choosers), 0.0)
    # One noise stream per chooser, seeded alike: every policy sees the same kind of luck.
    rngs = {c.name: random.Random(seed * 1_000_003 + 1) for c in choosers}
    for t in range(requests):
        step[0] = t
        x = t / requests
        expected = {p.name: p.expected_reward(x) for p in providers}
        best = max(expected.values())
        for chooser in choosers:
            started = time.perf_counter()
            arm = chooser.choose()
            reward = by_name[arm].observe(x, rngs[chooser.name])
            chooser.learn(arm, reward)
            elapsed[chooser.name] += time.perf_counter() - started
            regret[chooser.name] += best - expected[arm]
    for name in regret:
        print(
            f"  {name:24s} regret {regret[name]:9.1f}   "
            f"{elapsed[name] / requests * 1e6:8.1f} us per choose+learn"
        )
    return regret


# -- 2. cheap vs strong ------------------------------------------------------------------------

CHEAP, STRONG = "llamacpp:local", "anthropic:claude-sonnet-4-6"
TRACE_WEIGHTS = RewardWeights(quality=0.8, latency=0.0, cost=0.2, cost_scale_usd=0.005)
DIFFICULTY_MIX = (0.3, 0.25, 0.2, 0.15, 0.1)  # most traffic is simple
CHEAP_QUALITY = (0.95, 0.9, 0.8, 0.55, 0.4)
STRONG_QUALITY = (0.97, 0.96, 0.95, 0.93, 0.9)
COST_USD = {CHEAP: 0.0006, STRONG: 0.015}

_COUNTRIES = ("France", "Peru", "Kenya", "Norway", "Japan", "Chile", "Egypt", "Canada")
_TERMS = ("latency", "entropy", "a mutex", "idempotence", "a monad", "backpressure")
_STRUCTURES = ("an LRU cache", "a B-tree", "a rate limiter", "a trie", "a priority queue")
_LANGS = ("Rust", "Go", "Python", "TypeScript", "C++")


def trace_prompt(difficulty: int, rng: random.Random) -> str:
    """A synthetic prompt of hidden `difficulty` (0 easiest .. 4 hardest)."""
    pick = rng.choice
    if difficulty == 0:
        return pick(
            (
                f"What is the capital of {pick(_COUNTRIES)}?",
                f"Define {pick(_TERMS)} in one sentence.",
                f"Translate 'good morning' to {pick(('French', 'German', 'Spanish'))}.",
            )
        )
    if difficulty == 1:
        words = " ".join(
            rng.choice(("the", "service", "queue", "grew", "slowly", "data"))
            for _ in range(rng.randint(30, 80))
        )
        return pick(
            (f"Summarize this paragraph: {words}", f"List five facts about {pick(_COUNTRIES)}.")
        )
    if difficulty == 2:
        return pick(
            (
                f"Explain how {pick(_TERMS)} works in a distributed system and give an example.",
                f"Write a {pick(_LANGS)} function that reverses the words of a sentence.",
            )
        )
    if difficulty == 3:
        return (
            f"Implement {pick(_STRUCTURES)} in {pick(_LANGS)}, then write unit tests for the edge "
            "cases and explain the time complexity of each operation."
        )
    code = "\n".join(
        f"def step_{i}(state):\n    state[{i}] = state.get({i}, 0) + 1\n    return state"
        for i in range(rng.randint(3, 8))
    )
    return (
        "Refactor the following code to be thread-safe, then benchmark it and analyze the "
        f"trade-offs:\n```python\n{code}\n```\n1. keep the API\n2. add tests\n3. profile it\n"
        "4. document the locking design"
    )


def run_trace(requests: int, seed: int) -> dict[str, float]:
    """Learned routing by complexity level against always-strong and always-cheap."""
    rng = random.Random(seed)
    router = LearnedRouter([CHEAP, STRONG], seed=seed)
    totals = {name: [0.0, 0.0] for name in ("router", "strong", "cheap")}  # quality, cost
    routed_cheap = 0
    for _ in range(requests):
        difficulty = rng.choices(range(5), weights=DIFFICULTY_MIX)[0]
        context = str(score_complexity(trace_prompt(difficulty, rng)).level)
        quality = {CHEAP: CHEAP_QUALITY[difficulty], STRONG: STRONG_QUALITY[difficulty]}
        arm = router.choose(context)
        observed = min(1.0, max(0.0, quality[arm] + rng.gauss(0.0, QUALITY_NOISE)))
        router.update(
            arm,
            TRACE_WEIGHTS.reward(quality=observed, latency_ms=0.0, cost_usd=COST_USD[arm]),
            context,
        )
        routed_cheap += arm == CHEAP
        for name, used in (("router", arm), ("strong", STRONG), ("cheap", CHEAP)):
            totals[name][0] += quality[used]
            totals[name][1] += COST_USD[used]
    quality_share = totals["router"][0] / totals["strong"][0]
    cost_share = totals["router"][1] / totals["strong"][1]
    print(
        f"  router: {quality_share:.1%} of the strong model's quality at {cost_share:.1%} of its "
        f"cost ({routed_cheap / requests:.0%} of requests to the cheap model); always-cheap: "
        f"{totals['cheap'][0] / totals['strong'][0]:.1%} of the quality"
    )
    for estimate in sorted(router.contexts):
        best = router.estimates(estimate)[0]
        print(f"    level {estimate:9s} -> {best.arm} (estimated reward {best.mean_reward:.3f})")
    return {"strong_quality_share": quality_share, "strong_cost_share": cost_share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, for a smoke test")
    parser.add_argument("--requests", type=int, default=None, help="requests in the drift run")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    requests = args.requests or (2_000 if args.quick else 20_000)
    trace_requests = 2_000 if args.quick else 20_000
    try:
        import mabwiser  # noqa: F401

        with_mabwiser = True
    except ImportError:
        with_mabwiser = False
    print(f"1. drift: {requests:,} requests, seed {args.seed}")
    if not with_mabwiser:
        print(
            "  mabwiser is not installed (pip install -e '.[bench]'): its rows are skipped, "
            "these are our own figures only"
        )
    regret = run_drift(requests, args.seed, with_mabwiser=with_mabwiser)
    ours = regret[f"ours:{Policy.THOMPSON}"]
    round_robin = regret["round-robin"]
    mabwiser_best = (
        min(regret["mabwiser:thompson"], regret["mabwiser:ucb1"]) if with_mabwiser else None
    )
    print(f"  default policy: {ours / round_robin:.3f} x round-robin's regret", end="")
    if mabwiser_best is not None:
        print(f", {ours / mabwiser_best:.3f} x MABWiser's best")
    else:
        print()
    print(f"2. cheap vs strong: {trace_requests:,} requests, seed {args.seed}")
    shares = run_trace(trace_requests, args.seed)
    headline = {
        "regret": round(ours, 2),
        "mabwiser_best_regret": None if mabwiser_best is None else round(mabwiser_best, 2),
        "round_robin_regret": round(round_robin, 2),
        "strong_quality_share": round(shares["strong_quality_share"], 4),
        "strong_cost_share": round(shares["strong_cost_share"], 4),
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
