"""The intelligence package exports exactly its curated surface."""

from __future__ import annotations

import intelligence


def test_public_names_are_exactly_the_curated_surface() -> None:
    """intelligence exports exactly its public API, and every name resolves."""
    assert sorted(intelligence.__all__) == sorted(
        [
            "ArmEstimate",
            "Complexity",
            "ComplexityLevel",
            "IntelligenceError",
            "LearnedRouter",
            "LearnerStateError",
            "LearnerStore",
            "Policy",
            "RewardWeights",
            "UnknownArm",
            "score_complexity",
        ]
    )
    for name in intelligence.__all__:
        assert getattr(intelligence, name) is not None
