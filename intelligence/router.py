"""`LearnedRouter`: a multi-armed bandit over providers that follows them as they drift.

    router = LearnedRouter(["anthropic:claude-sonnet-4-6", "openai:gpt-4o-mini", "llamacpp:local"],
                           seed=7)
    arm = router.choose(context=None)         # context: a category such as a complexity level
    router.update(arm, reward, context=None)  # reward in [0, 1]

Two mechanisms follow a provider that changes:
- discounting: after each update in a context, all evidence in that context is multiplied by
  `discount` (0.998 by default: an observation 350 updates old counts half as much as a new
  one). So the evidence about an arm nobody picks fades, the policy tries it again, and finds
  out whether it recovered. `discount=1.0` gives the classic stationary bandit.
- change detection: each arm also keeps a short memory of its own last ~10 rewards; when that
  recent mean leaves the arm's long-run mean by more than chance allows (4 standard
  deviations of the recent mean), the arm's older evidence is dropped. So a provider that
  degrades at once (an outage, a model swap behind the same name) loses its lead within a few
  requests instead of a few hundred.

Contexts are learned separately but not from scratch: an arm's estimate in a context starts
from its estimate over all contexts (`prior_weight` pseudo-observations of it), so a new
complexity level begins where the others are, then learns its own best arm.

Policies (`policy=`), all on the same discounted statistics:
- `thompson` (the default): Gaussian Thompson sampling, the posterior variance from the
  discounted variance of the rewards seen (so low-noise rewards explore little);
- `ucb1`: discounted UCB1 (Garivier & Moulines), mean + `ucb_c` * sqrt(2 ln n * var_arm), the
  variance of the arm's mean estimate standing for UCB1's 1 / n_arm (as in UCB1-Normal);
- `epsilon-greedy`: the best discounted mean, a uniformly random arm with probability
  `epsilon`.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from intelligence.errors import LearnerStateError, UnknownArm

__all__ = [
    "STATE_FORMAT",
    "ArmEstimate",
    "LearnedRouter",
    "LearnerStore",
    "Policy",
    "RewardWeights",
]

log = logging.getLogger(__name__)

STATE_FORMAT = 1
"""The format version of `LearnedRouter.to_state()`; a state of another version is refused."""

_PRIOR_MEAN = 0.5  # an arm nobody has seen anywhere: the middle of [0, 1]
_PRIOR_VARIANCE = 0.25  # the largest variance a reward in [0, 1] can have
_PRIOR_VARIANCE_WEIGHT = 1.0  # how many observations that prior variance is worth
# Change detection: an exponentially weighted mean of an arm's own last ~10 rewards against
# its long-run mean. With per-observation discount r, that recent mean's variance is
# variance * (1 - r) / (1 + r); a gap of _CHANGE_Z of its standard deviations is a change.
_RECENT_DISCOUNT = 0.8
_RECENT_VARIANCE_FACTOR = (1 - _RECENT_DISCOUNT) / (1 + _RECENT_DISCOUNT)
_RECENT_MIN_WEIGHT = 4.0  # at least this much recent evidence before judging
_CHANGE_Z = 4.0
_MIN_VARIANCE = 0.0025  # a noise floor (sd 0.05), so near-constant rewards do not alarm on 0.01


class Policy(StrEnum):
    """How the router trades exploring against exploiting."""

    EPSILON_GREEDY = "epsilon-greedy"
    THOMPSON = "thompson"
    UCB1 = "ucb1"


@runtime_checkable
class LearnerStore(Protocol):
    """Where learned state survives a restart (`memory_db.AgentMemory` is one)."""

    def save_learner_state(self, name: str, state: Mapping[str, Any]) -> None: ...

    def load_learner_state(self, name: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardWeights:
    """How quality, latency and cost combine into one reward in [0, 1].

    Quality is already in [0, 1]. Latency and cost map to (0, 1] as `1 / (1 + x / scale)`:
    1 for free and instant, 0.5 at `latency_scale_ms` / `cost_scale_usd`, towards 0 beyond.
    The reward is the weighted mean of the three scores; a weight of 0 ignores that part.
    """

    quality: float = 0.7
    latency: float = 0.15
    cost: float = 0.15
    latency_scale_ms: float = 2_000.0
    cost_scale_usd: float = 0.01

    def __post_init__(self) -> None:
        for name in ("quality", "latency", "cost"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} weight must be a finite number >= 0, got {value!r}")
        if self.quality + self.latency + self.cost <= 0:
            raise ValueError("RewardWeights: at least one weight must be > 0")
        for name in ("latency_scale_ms", "cost_scale_usd"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    def reward(self, *, quality: float, latency_ms: float, cost_usd: float) -> float:
        """The reward for one answer of `quality` (0..1) that took `latency_ms` and cost
        `cost_usd`."""
        quality = min(1.0, max(0.0, quality))
        latency_score = 1.0 / (1.0 + max(0.0, latency_ms) / self.latency_scale_ms)
        cost_score = 1.0 / (1.0 + max(0.0, cost_usd) / self.cost_scale_usd)
        total = self.quality + self.latency + self.cost
        return (
            self.quality * quality + self.latency * latency_score + self.cost * cost_score
        ) / total


@dataclass(frozen=True, slots=True, kw_only=True)
class ArmEstimate:
    """What the router believes about one arm in one context, now.

    `mean_reward` is the discounted mean reward (with the prior), `evidence` the discounted
    number of observations behind it, `updates_total` every update the arm ever had there.
    """

    arm: str
    context: str | None
    mean_reward: float
    evidence: float
    updates_total: int


class _ArmStats:
    """Discounted sums for one arm in one context, current as of the book's step `step`, and
    a short memory of the arm's own last few rewards for spotting an abrupt change."""

    __slots__ = (
        "recent_squares",
        "recent_total",
        "recent_weight",
        "squares",
        "step",
        "total",
        "updates",
        "weight",
    )

    def __init__(self) -> None:
        self.weight = 0.0  # discounted number of observations
        self.total = 0.0  # discounted sum of rewards
        self.squares = 0.0  # discounted sum of squared rewards
        self.step = 0
        self.updates = 0
        # The same sums over this arm's own recent rewards (discounted per observation of it).
        self.recent_weight = 0.0
        self.recent_total = 0.0
        self.recent_squares = 0.0

    def decayed(self, step: int, discount: float) -> tuple[float, float, float]:
        if step == self.step or discount == 1.0:
            return self.weight, self.total, self.squares
        factor = discount ** (step - self.step)
        return self.weight * factor, self.total * factor, self.squares * factor

    def values(self) -> list[float]:
        return [
            self.weight,
            self.total,
            self.squares,
            self.step,
            self.updates,
            self.recent_weight,
            self.recent_total,
            self.recent_squares,
        ]


class _Book:
    """The statistics of every arm in one context; `step` counts updates in this context."""

    __slots__ = ("arms", "step")

    def __init__(self, arms: Iterable[str]) -> None:
        self.step = 0
        self.arms = {arm: _ArmStats() for arm in arms}


class LearnedRouter:
    """A discounted multi-armed bandit choosing among `arms`, optionally per context.

    `seed` (or `rng`) makes every choice reproducible. `store` (an `AgentMemory`, or anything
    with `save_learner_state` / `load_learner_state`) restores the state saved under `name`
    at construction; `save()` writes it back. A saved state that cannot be restored is logged
    and ignored (the router starts fresh), so a bad row never stops a server.

    Thread-safe: choices, updates and `to_state()` take one lock.
    Raises `ValueError` naming the bad argument.
    """

    def __init__(
        self,
        arms: Sequence[str],
        *,
        policy: Policy | str = Policy.THOMPSON,
        discount: float = 0.998,
        epsilon: float = 0.05,
        ucb_c: float = 1.0,
        prior_weight: float = 1.0,
        weights: RewardWeights | None = None,
        seed: int | None = None,
        rng: random.Random | None = None,
        store: LearnerStore | None = None,
        name: str = "router",
    ) -> None:
        if isinstance(arms, str) or not isinstance(arms, Sequence):
            raise ValueError(f"arms must be a sequence of names, got {arms!r}")
        arms = tuple(arms)
        if not arms:
            raise ValueError("arms: a router needs at least one arm")
        if not all(isinstance(arm, str) and arm for arm in arms):
            raise ValueError(f"arms must be non-empty strings, got {list(arms)!r}")
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms must be unique, got {list(arms)!r}")
        try:
            self.policy = Policy(policy)
        except ValueError:
            allowed = ", ".join(p.value for p in Policy)
            raise ValueError(f"policy must be one of {allowed}; got {policy!r}") from None
        if not (isinstance(discount, int | float) and 0.0 < discount <= 1.0):
            raise ValueError(f"discount must be in (0, 1], got {discount!r}")
        if not (isinstance(epsilon, int | float) and 0.0 <= epsilon <= 1.0):
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
        if not (isinstance(ucb_c, int | float) and math.isfinite(ucb_c) and ucb_c >= 0):
            raise ValueError(f"ucb_c must be a finite number >= 0, got {ucb_c!r}")
        if not (isinstance(prior_weight, int | float) and 0.0 < prior_weight < math.inf):
            raise ValueError(f"prior_weight must be a finite number > 0, got {prior_weight!r}")
        if seed is not None and rng is not None:
            raise ValueError(f"pass seed or rng, not both (seed={seed!r})")
        if not name:
            raise ValueError(f"name must not be empty, got {name!r}")
        self.arms = arms
        self.discount = float(discount)
        self.epsilon = float(epsilon)
        self.ucb_c = float(ucb_c)
        self.prior_weight = float(prior_weight)
        self.weights = weights if weights is not None else RewardWeights()
        self.name = name
        self._rng = rng if rng is not None else random.Random(seed)
        self._store = store
        self._lock = threading.Lock()
        self._books: dict[str | None, _Book] = {None: _Book(arms)}
        self.changes_total = 0
        """How often an arm's evidence was cut back to its recent rewards (a change seen)."""
        if store is not None:
            self._restore(store)

    # -- the bandit --------------------------------------------------------------------------

    def choose(self, context: str | None = None) -> str:
        """The arm to use now in `context` (None: no context)."""
        return self.rank(context)[0]

    def rank(self, context: str | None = None) -> list[str]:
        """Every arm, the one the policy picks first, then the rest by estimated reward."""
        _check_context(context)
        with self._lock:
            means = self._means(context)
            if self.policy is Policy.EPSILON_GREEDY:
                if self._rng.random() < self.epsilon:
                    first = self._rng.choice(self.arms)
                else:
                    first = self._best({arm: m[0] for arm, m in means.items()})
            else:
                first = self._best(self._scores(context, means))
            rest = sorted((a for a in self.arms if a != first), key=lambda a: -means[a][0])
            return [first, *rest]

    def update(self, arm: str, reward: float, context: str | None = None) -> None:
        """Learn that `arm` earned `reward` (clipped to [0, 1]) in `context`."""
        if arm not in self._books[None].arms:
            raise UnknownArm(arm, self.arms)
        if isinstance(reward, bool) or not isinstance(reward, int | float):
            raise ValueError(f"reward must be a number in [0, 1], got {reward!r}")
        if math.isnan(reward):
            raise ValueError(f"reward must be a number in [0, 1], got {reward!r}")
        _check_context(context)
        reward = min(1.0, max(0.0, float(reward)))
        with self._lock:
            self._observe(self._books[None], arm, reward)
            if context is not None:
                book = self._books.get(context)
                if book is None:
                    book = self._books[context] = _Book(self.arms)
                self._observe(book, arm, reward)

    def estimates(self, context: str | None = None) -> tuple[ArmEstimate, ...]:
        """What the router believes about each arm in `context`, best first."""
        _check_context(context)
        with self._lock:
            means = self._means(context)
            book = self._books.get(context)
            out = [
                ArmEstimate(
                    arm=arm,
                    context=context,
                    mean_reward=mean,
                    evidence=weight,
                    updates_total=0 if book is None else book.arms[arm].updates,
                )
                for arm, (mean, weight, _) in means.items()
            ]
        return tuple(sorted(out, key=lambda e: -e.mean_reward))

    @property
    def updates_total(self) -> int:
        """Updates learned since the state began (restored ones included; 0 after `reset`)."""
        with self._lock:
            return self._books[None].step

    @property
    def contexts(self) -> tuple[str, ...]:
        """The contexts seen so far (not counting None)."""
        with self._lock:
            return tuple(sorted(c for c in self._books if c is not None))

    def reset(self) -> None:
        """Forget everything learned."""
        with self._lock:
            self._books = {None: _Book(self.arms)}

    # -- persistence -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The learned statistics as JSON-ready data (format `STATE_FORMAT`)."""
        with self._lock:
            return {
                "format": STATE_FORMAT,
                "policy": str(self.policy),
                "discount": self.discount,
                "books": [
                    {
                        "context": context,
                        "step": book.step,
                        "arms": {arm: s.values() for arm, s in book.arms.items()},
                    }
                    for context, book in self._books.items()
                ],
            }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace what was learned by `state` (from `to_state()`).

        Arms in the state that this router does not have are dropped; arms it has that the
        state lacks start fresh. Raises `LearnerStateError` (changing nothing) for a state
        that is malformed or of another format.
        """
        books = _parse_state(self.name, state, self.arms)
        with self._lock:
            self._books = books

    def save(self) -> None:
        """Write the state to the store given at construction (no store: nothing to do)."""
        if self._store is not None:
            self._store.save_learner_state(self.name, self.to_state())

    def _restore(self, store: LearnerStore) -> None:
        try:
            state = store.load_learner_state(self.name)
            if state is not None:
                self.load_state(state)
        except LearnerStateError as exc:
            log.warning("%s; starting with nothing learned", exc)

    # -- internals (called with the lock held) -----------------------------------------------

    def _observe(self, book: _Book, arm: str, reward: float) -> None:
        book.step += 1
        stats = book.arms[arm]
        weight, total, squares = stats.decayed(book.step, self.discount)
        weight, total, squares = weight + 1.0, total + reward, squares + reward * reward
        r = _RECENT_DISCOUNT
        recent_weight = stats.recent_weight * r + 1.0
        recent_total = stats.recent_total * r + reward
        recent_squares = stats.recent_squares * r + reward * reward
        if recent_weight >= _RECENT_MIN_WEIGHT and weight > recent_weight:
            # An abrupt change (an outage, a model swap) shows as the arm's recent rewards
            # leaving its long-run mean by more than chance allows. Then its older evidence
            # describes another provider: keep only the recent rewards, instead of waiting
            # for the discount to wash the old ones out.
            mean = total / weight
            variance = max(_MIN_VARIANCE, squares / weight - mean * mean)
            gap = abs(recent_total / recent_weight - mean)
            if gap > _CHANGE_Z * math.sqrt(variance * _RECENT_VARIANCE_FACTOR):
                weight, total, squares = recent_weight, recent_total, recent_squares
                stats_changed = True
            else:
                stats_changed = False
        else:
            stats_changed = False
        stats.weight, stats.total, stats.squares = weight, total, squares
        stats.recent_weight, stats.recent_total, stats.recent_squares = (
            recent_weight,
            recent_total,
            recent_squares,
        )
        stats.step = book.step
        stats.updates += 1
        if stats_changed:
            self.changes_total += 1

    def _means(self, context: str | None) -> dict[str, tuple[float, float, float]]:
        """Per arm: (posterior mean, discounted evidence, posterior variance of the mean)."""
        pooled = self._books[None]
        book = pooled if context is None else self._books.get(context)
        out: dict[str, tuple[float, float, float]] = {}
        m = self.prior_weight
        for arm in self.arms:
            prior_mean = _PRIOR_MEAN
            if book is not pooled:
                # A context starts from what every context together knows about the arm.
                pw, pt, _ = pooled.arms[arm].decayed(pooled.step, self.discount)
                if pw > 0:
                    prior_mean = pt / pw
            if book is None:
                weight = total = squares = 0.0
            else:
                weight, total, squares = book.arms[arm].decayed(book.step, self.discount)
            mean = (total + m * prior_mean) / (weight + m)
            spread = max(0.0, squares - total * total / weight) if weight > 0 else 0.0
            variance = (spread + _PRIOR_VARIANCE_WEIGHT * _PRIOR_VARIANCE) / (
                weight + _PRIOR_VARIANCE_WEIGHT
            )
            out[arm] = (mean, weight, variance / (weight + m))
        return out

    def _scores(
        self, context: str | None, means: dict[str, tuple[float, float, float]]
    ) -> dict[str, float]:
        if self.policy is Policy.THOMPSON:
            gauss = self._rng.gauss
            return {
                arm: mean + math.sqrt(var) * gauss(0.0, 1.0)
                for arm, (mean, _, var) in means.items()
            }
        # UCB1 over discounted counts, its bonus scaled by the rewards' own spread (as UCB1-Normal
        # does): rewards that vary little need little exploring. The prior's pseudo-observations
        # keep n_arm > 0.
        m = self.prior_weight
        n = sum(weight for _, weight, _ in means.values()) + m * len(means)
        log_n = math.log(max(n, math.e))
        return {
            arm: mean + self.ucb_c * math.sqrt(2.0 * log_n * var)
            for arm, (mean, _, var) in means.items()
        }

    def _best(self, scores: Mapping[str, float]) -> str:
        top = max(scores.values())
        tied = [arm for arm in self.arms if scores[arm] == top]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)


def _check_context(context: object) -> None:
    if context is not None and not (isinstance(context, str) and context):
        raise ValueError(f"context must be a non-empty str or None, got {context!r}")


def _parse_state(
    name: str, state: Mapping[str, Any], arms: tuple[str, ...]
) -> dict[str | None, _Book]:
    if not isinstance(state, Mapping):
        raise LearnerStateError(name, f"expected a mapping, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise LearnerStateError(
            name, f"format {state.get('format')!r}, this code reads format {STATE_FORMAT}"
        )
    raw_books = state.get("books")
    if not isinstance(raw_books, list):
        raise LearnerStateError(name, "'books' must be a list")
    books: dict[str | None, _Book] = {}
    for index, raw in enumerate(raw_books):
        where = f"books[{index}]"
        if not isinstance(raw, Mapping):
            raise LearnerStateError(name, f"{where} must be a mapping")
        context = raw.get("context")
        if context is not None and not (isinstance(context, str) and context):
            raise LearnerStateError(name, f"{where}.context must be a non-empty str or null")
        step = raw.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise LearnerStateError(name, f"{where}.step must be an int >= 0")
        raw_arms = raw.get("arms")
        if not isinstance(raw_arms, Mapping):
            raise LearnerStateError(name, f"{where}.arms must be a mapping")
        book = _Book(arms)
        book.step = step
        for arm, values in raw_arms.items():
            if arm not in book.arms:
                continue  # an arm this router no longer has
            if not _numbers(values, 8):
                raise LearnerStateError(name, f"{where}.arms[{arm!r}] must be 8 numbers")
            weight, total, squares, arm_step, updates, r_weight, r_total, r_squares = values
            if (
                weight < 0
                or r_weight < 0
                or arm_step > step
                or not 0 <= total <= weight + 1e-9
                or not 0 <= r_total <= r_weight + 1e-9
            ):
                raise LearnerStateError(name, f"{where}.arms[{arm!r}] is inconsistent")
            stats = book.arms[arm]
            stats.weight, stats.total, stats.squares = float(weight), float(total), float(squares)
            stats.step, stats.updates = int(arm_step), int(updates)
            stats.recent_weight, stats.recent_total = float(r_weight), float(r_total)
            stats.recent_squares = float(r_squares)
        books[context] = book
    if None not in books:
        books[None] = _Book(arms)
    return books


def _numbers(values: object, count: int) -> bool:
    return (
        isinstance(values, list | tuple)
        and len(values) == count
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
    )
