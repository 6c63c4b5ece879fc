"""LearnedRouter: a seeded, discounted bandit that follows providers as they drift."""

from __future__ import annotations

import random

import pytest

from intelligence import (
    LearnedRouter,
    LearnerStateError,
    Policy,
    RewardWeights,
    UnknownArm,
)
from memory_db import AgentMemory

ARMS = ["anthropic:claude-sonnet-4-6", "openai:gpt-4o-mini", "llamacpp:local"]
STRONG, MID, LOCAL = ARMS


def _serve(
    router: LearnedRouter,
    means: dict[str, float],
    requests: int,
    rng: random.Random,
    context: str | None = None,
) -> dict[str, int]:
    """Route `requests` requests to arms whose rewards are noisy around `means`."""
    picks = dict.fromkeys(means, 0)
    for _ in range(requests):
        arm = router.choose(context)
        picks[arm] += 1
        router.update(arm, min(1.0, max(0.0, means[arm] + rng.gauss(0, 0.1))), context)
    return picks


def test_the_public_api_runs_as_the_issue_spells_it() -> None:
    """choose() returns one of the arms and update() takes it back with a reward."""
    router = LearnedRouter(ARMS, seed=7)
    arm = router.choose(context=None)
    assert arm in ARMS
    router.update(arm, 0.8, context=None)
    assert router.estimates()[0].updates_total + router.estimates()[1].updates_total >= 0


@pytest.mark.parametrize("policy", list(Policy))
def test_every_policy_finds_the_best_arm(policy: Policy) -> None:
    """On stationary providers, each policy sends most late traffic to the best one."""
    router = LearnedRouter(ARMS, policy=policy, seed=1)
    rng = random.Random(1)
    means = {STRONG: 0.85, MID: 0.65, LOCAL: 0.45}
    _serve(router, means, 600, rng)
    late = _serve(router, means, 400, rng)
    assert late[STRONG] >= 0.85 * 400


@pytest.mark.parametrize("policy", list(Policy))
def test_same_seed_same_choices(policy: Policy) -> None:
    """Two routers with the same seed and the same rewards make the same choices."""
    runs = []
    for _ in range(2):
        router = LearnedRouter(ARMS, policy=policy, seed=42)
        rng = random.Random(3)
        choices = []
        for _ in range(200):
            arm = router.choose()
            choices.append(arm)
            router.update(arm, rng.random())
        runs.append(choices)
    assert runs[0] == runs[1]


def test_default_policy_follows_a_provider_that_degrades_and_recovers() -> None:
    """Traffic leaves the strong arm within a few dozen requests of it degrading, and comes
    back after it recovers."""
    router = LearnedRouter(ARMS, seed=7)
    rng = random.Random(7)
    healthy = {STRONG: 0.85, MID: 0.7, LOCAL: 0.5}
    degraded = {STRONG: 0.3, MID: 0.7, LOCAL: 0.5}
    _serve(router, healthy, 1000, rng)
    assert router.choose() == STRONG
    first = _serve(router, degraded, 50, rng)
    assert first[STRONG] <= 20  # the change detector drops the stale evidence at once
    after = _serve(router, degraded, 500, rng)
    assert after[MID] >= 0.9 * 500
    _serve(router, healthy, 1500, rng)  # evidence fades until the strong arm is tried again
    recovered = _serve(router, healthy, 500, rng)
    assert recovered[STRONG] >= 0.85 * 500


def test_without_discounting_a_recovered_provider_is_never_found_again() -> None:
    """The stationary bandit (discount 1) does not come back to an arm that recovered while
    it was not looking; the default does."""
    late = {}
    for discount in (1.0, 0.998):
        router = LearnedRouter([STRONG, MID], discount=discount, seed=5)
        rng = random.Random(5)
        _serve(router, {STRONG: 0.9, MID: 0.7}, 1000, rng)
        _serve(router, {STRONG: 0.3, MID: 0.7}, 1000, rng)
        _serve(router, {STRONG: 0.9, MID: 0.7}, 2000, rng)
        late[discount] = _serve(router, {STRONG: 0.9, MID: 0.7}, 500, rng)[STRONG]
    assert late[0.998] >= 0.85 * 500
    assert late[1.0] <= 0.5 * 500


def test_contexts_learn_their_own_best_arm() -> None:
    """A cheap arm wins the simple context while the strong one wins the complex one."""
    router = LearnedRouter([STRONG, LOCAL], seed=3)
    rng = random.Random(3)
    for _ in range(1500):
        for context, means in (
            ("simple", {STRONG: 0.7, LOCAL: 0.9}),
            ("complex", {STRONG: 0.85, LOCAL: 0.4}),
        ):
            arm = router.choose(context)
            router.update(arm, min(1.0, max(0.0, means[arm] + rng.gauss(0, 0.1))), context)
    assert router.estimates("simple")[0].arm == LOCAL
    assert router.estimates("complex")[0].arm == STRONG
    assert router.contexts == ("complex", "simple")


def test_a_new_context_starts_from_what_all_contexts_know() -> None:
    """Before any update in a context, its estimates are the pooled ones, not the blank prior."""
    router = LearnedRouter([STRONG, LOCAL], seed=3)
    for _ in range(50):
        router.update(STRONG, 0.9, "complex")
        router.update(LOCAL, 0.2, "complex")
    fresh = {e.arm: e.mean_reward for e in router.estimates("never-seen")}
    assert fresh[STRONG] > 0.85 and fresh[LOCAL] < 0.25


def test_rank_puts_the_choice_first_then_the_rest_by_estimate() -> None:
    """rank() orders every arm once: a fallback order after the chosen one."""
    router = LearnedRouter(ARMS, policy="epsilon-greedy", epsilon=0.0, seed=1)
    for arm, reward in ((STRONG, 0.9), (MID, 0.6), (LOCAL, 0.3)):
        for _ in range(20):
            router.update(arm, reward)
    assert router.rank() == [STRONG, MID, LOCAL]


def test_rewards_are_clipped_to_the_unit_interval() -> None:
    """A reward above 1 counts as 1, below 0 as 0."""
    router = LearnedRouter([STRONG], seed=1)
    for _ in range(200):
        router.update(STRONG, 5.0)
    assert router.estimates()[0].mean_reward == pytest.approx(1.0, abs=0.01)


def test_unknown_arm_is_refused_naming_the_arms() -> None:
    """update() with an arm the router was not built with raises UnknownArm."""
    router = LearnedRouter(ARMS, seed=1)
    with pytest.raises(UnknownArm, match="anthropic:claude-sonnet-4-6") as caught:
        router.update("mistral:large", 0.5)
    assert isinstance(caught.value, KeyError)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"arms": []}, "arms"),
        ({"arms": "abc"}, "arms"),
        ({"arms": ["a", "a"]}, "arms"),
        ({"policy": "softmax"}, "policy"),
        ({"discount": 0.0}, "discount"),
        ({"discount": 1.5}, "discount"),
        ({"epsilon": -0.1}, "epsilon"),
        ({"ucb_c": -1}, "ucb_c"),
        ({"prior_weight": 0}, "prior_weight"),
        ({"seed": 1, "rng": random.Random(1)}, "seed"),
    ],
)
def test_bad_constructor_arguments_are_refused_naming_them(kwargs: dict, name: str) -> None:
    """The constructor raises ValueError naming the bad parameter."""
    arguments = {"arms": ARMS, **kwargs}
    with pytest.raises(ValueError, match=name):
        LearnedRouter(**arguments)


def test_bad_reward_and_context_are_refused() -> None:
    """A NaN or non-number reward, or a non-string context, raises ValueError."""
    router = LearnedRouter(ARMS, seed=1)
    for bad in (float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="reward"):
            router.update(STRONG, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="context"):
        router.choose(context=3)  # type: ignore[arg-type]


def test_reset_forgets_everything() -> None:
    """After reset() every estimate is back at the prior."""
    router = LearnedRouter(ARMS, seed=1)
    for _ in range(30):
        router.update(STRONG, 1.0, "simple")
    router.reset()
    assert {e.mean_reward for e in router.estimates()} == {0.5}
    assert router.contexts == ()


# -- persistence -----------------------------------------------------------------------------


def test_state_round_trips_through_to_state_and_load_state() -> None:
    """A router loaded from another's state estimates exactly what the other does."""
    source = LearnedRouter(ARMS, seed=1)
    rng = random.Random(2)
    _serve(source, {STRONG: 0.8, MID: 0.5, LOCAL: 0.3}, 300, rng, context="simple")
    target = LearnedRouter(ARMS, seed=9)
    target.load_state(source.to_state())
    for context in (None, "simple"):
        assert target.estimates(context) == source.estimates(context)


def test_state_is_saved_to_and_restored_from_the_agent_memory(tmp_path) -> None:
    """A router built on the memory restores what the previous one saved there."""
    url = f"sqlite:///{tmp_path / 'memory.db'}"
    with AgentMemory(url) as memory:
        router = LearnedRouter(ARMS, seed=1, store=memory)
        _serve(router, {STRONG: 0.3, MID: 0.9, LOCAL: 0.2}, 200, random.Random(4))
        router.save()
        before = router.estimates()
    with AgentMemory(url) as memory:
        restored = LearnedRouter(ARMS, seed=2, store=memory)
        assert restored.estimates() == before
        assert restored.estimates()[0].arm == MID


def test_a_state_with_other_arms_keeps_the_shared_ones() -> None:
    """Arms the state knows but the router lacks are dropped; new arms start fresh."""
    old = LearnedRouter([STRONG, "retired:model"], seed=1)
    for _ in range(40):
        old.update(STRONG, 0.9)
        old.update("retired:model", 0.1)
    new = LearnedRouter([STRONG, LOCAL], seed=1)
    new.load_state(old.to_state())
    estimates = {e.arm: e for e in new.estimates()}
    assert estimates[STRONG].mean_reward > 0.85
    assert estimates[LOCAL].evidence == 0.0


@pytest.mark.parametrize(
    "state",
    [
        {"format": 99, "books": []},
        {"format": 1, "books": "nope"},
        {"format": 1, "books": [{"context": None, "step": -1, "arms": {}}]},
        {"format": 1, "books": [{"context": None, "step": 1, "arms": {STRONG: [1, 2]}}]},
        {
            "format": 1,
            "books": [{"context": None, "step": 1, "arms": {STRONG: [1, 5, 1, 1, 1, 1, 1, 1]}}],
        },
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(state: dict) -> None:
    """load_state() raises LearnerStateError for a bad state and keeps what it had."""
    router = LearnedRouter(ARMS, seed=1)
    router.update(STRONG, 1.0)
    before = router.estimates()
    with pytest.raises(LearnerStateError):
        router.load_state(state)
    assert router.estimates() == before


def test_a_bad_saved_state_is_logged_and_the_router_starts_fresh(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state row of another format does not stop the router: it warns and starts fresh."""
    with AgentMemory(f"sqlite:///{tmp_path / 'memory.db'}") as memory:
        memory.save_learner_state("router", {"format": 0})
        router = LearnedRouter(ARMS, seed=1, store=memory)
    assert {e.evidence for e in router.estimates()} == {0.0}
    assert "cannot be restored" in caplog.text


# -- rewards ---------------------------------------------------------------------------------


def test_reward_weights_combine_quality_latency_and_cost() -> None:
    """A perfect, instant, free answer earns 1; the scales are where a score halves."""
    weights = RewardWeights(quality=1, latency=1, cost=1, latency_scale_ms=100, cost_scale_usd=1)
    assert weights.reward(quality=1, latency_ms=0, cost_usd=0) == 1.0
    assert weights.reward(quality=0, latency_ms=100, cost_usd=1) == pytest.approx(1 / 3)


def test_a_zero_weight_ignores_that_part_of_the_reward() -> None:
    """With only quality weighted, latency and cost do not move the reward."""
    weights = RewardWeights(quality=1, latency=0, cost=0)
    assert weights.reward(quality=0.4, latency_ms=1e6, cost_usd=100) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"quality": -1}, "quality"),
        ({"quality": 0, "latency": 0, "cost": 0}, "at least one"),
        ({"latency_scale_ms": 0}, "latency_scale_ms"),
        ({"cost_scale_usd": float("inf")}, "cost_scale_usd"),
    ],
)
def test_bad_reward_weights_are_refused_naming_them(kwargs: dict, name: str) -> None:
    """RewardWeights raises ValueError naming the bad field."""
    with pytest.raises(ValueError, match=name):
        RewardWeights(**kwargs)
