"""The intelligence package exports exactly its curated surface."""

from __future__ import annotations

import intelligence


def test_public_names_are_exactly_the_curated_surface() -> None:
    """intelligence exports exactly its public API, and every name resolves."""
    assert sorted(intelligence.__all__) == sorted(
        [
            "ArmEstimate",
            "Attribution",
            "Complexity",
            "ComplexityLevel",
            "DedupStats",
            "Defect",
            "DefaultEmbedder",
            "Embedder",
            "EmbedderKind",
            "EmbedderUnavailable",
            "FeedbackCollector",
            "Hit",
            "IndexFileError",
            "IntelligenceError",
            "LLMJudge",
            "LearnedRouter",
            "LearnedRouting",
            "LearnerStateError",
            "LearnerStore",
            "LexicalEmbedder",
            "Optimized",
            "PairVerifier",
            "Policy",
            "PromptOptimizer",
            "QualityEstimator",
            "QualityScore",
            "RewardWeights",
            "IntelligenceBridge",
            "DemandForecaster",
            "TelemetryForecast",
            "SemanticDedup",
            "SemanticDedupHook",
            "SemanticMatch",
            "TaskVerdict",
            "TransformerEmbedder",
            "UnknownArm",
            "score_complexity",
        ]
    )
    for name in intelligence.__all__:
        assert getattr(intelligence, name) is not None
