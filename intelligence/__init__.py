"""Learned parts of the system: embeddings, semantic dedup, the learned router, quality,
feedback and the prompt optimizer.

    from intelligence import SemanticDedup

    dedup = SemanticDedup()          # the packaged all-MiniLM-L6-v2, FAISS, learned verification
    dedup.insert("How do I reverse a list in Python?", answer, scope="tenant-a/conv-1")
    hit = dedup.lookup("What's the way to reverse a Python list?", scope="tenant-a/conv-1")

Importing this package is cheap: each public name loads its module on first access, and the
heavy libraries (torch, sentence-transformers, faiss, scikit-learn) load only on first use.
To export a new name, add it to `_EXPORTS` (name -> module); `__all__` follows.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # errors
    "IntelligenceError": "intelligence.errors",
    "EmbedderUnavailable": "intelligence.errors",
    "IndexFileError": "intelligence.errors",
    "LearnerStateError": "intelligence.errors",
    "UnknownArm": "intelligence.errors",
    # embeddings
    "Embedder": "intelligence.embed",
    "EmbedderKind": "intelligence.embed",
    "TransformerEmbedder": "intelligence.embed",
    "LexicalEmbedder": "intelligence.embed",
    "DefaultEmbedder": "intelligence.embed",
    # semantic dedup
    "SemanticDedup": "intelligence.dedup",
    "Hit": "intelligence.dedup",
    "DedupStats": "intelligence.dedup",
    "PairVerifier": "intelligence.verify",
    "SemanticDedupHook": "intelligence.semantic_hook",
    "SemanticMatch": "intelligence.semantic_hook",
    # the learned router
    "LearnedRouter": "intelligence.router",
    "ArmEstimate": "intelligence.router",
    "LearnerStore": "intelligence.router",
    "Policy": "intelligence.router",
    "RewardWeights": "intelligence.router",
    "LearnedRouting": "intelligence.routing",
    "Complexity": "intelligence.complexity",
    "ComplexityLevel": "intelligence.complexity",
    "score_complexity": "intelligence.complexity",
    # quality, feedback, prompt optimizer
    "QualityEstimator": "intelligence.quality",
    "QualityScore": "intelligence.quality",
    "Defect": "intelligence.quality",
    "TaskVerdict": "intelligence.quality",
    "LLMJudge": "intelligence.quality",
    "FeedbackCollector": "intelligence.feedback",
    "Attribution": "intelligence.feedback",
    "PromptOptimizer": "intelligence.optimize",
    "IntelligenceBridge": "intelligence.bridge",
    "DemandForecaster": "intelligence.forecast",
    "TelemetryForecast": "intelligence.forecast",
    "Optimized": "intelligence.optimize",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; `X as X` marks a re-export
    from intelligence.bridge import IntelligenceBridge as IntelligenceBridge
    from intelligence.complexity import Complexity as Complexity
    from intelligence.complexity import ComplexityLevel as ComplexityLevel
    from intelligence.complexity import score_complexity as score_complexity
    from intelligence.dedup import DedupStats as DedupStats
    from intelligence.dedup import Hit as Hit
    from intelligence.dedup import SemanticDedup as SemanticDedup
    from intelligence.embed import DefaultEmbedder as DefaultEmbedder
    from intelligence.embed import Embedder as Embedder
    from intelligence.embed import EmbedderKind as EmbedderKind
    from intelligence.embed import LexicalEmbedder as LexicalEmbedder
    from intelligence.embed import TransformerEmbedder as TransformerEmbedder
    from intelligence.errors import EmbedderUnavailable as EmbedderUnavailable
    from intelligence.errors import IndexFileError as IndexFileError
    from intelligence.errors import IntelligenceError as IntelligenceError
    from intelligence.errors import LearnerStateError as LearnerStateError
    from intelligence.errors import UnknownArm as UnknownArm
    from intelligence.feedback import Attribution as Attribution
    from intelligence.feedback import FeedbackCollector as FeedbackCollector
    from intelligence.forecast import DemandForecaster as DemandForecaster
    from intelligence.forecast import TelemetryForecast as TelemetryForecast
    from intelligence.optimize import Optimized as Optimized
    from intelligence.optimize import PromptOptimizer as PromptOptimizer
    from intelligence.quality import Defect as Defect
    from intelligence.quality import LLMJudge as LLMJudge
    from intelligence.quality import QualityEstimator as QualityEstimator
    from intelligence.quality import QualityScore as QualityScore
    from intelligence.quality import TaskVerdict as TaskVerdict
    from intelligence.router import ArmEstimate as ArmEstimate
    from intelligence.router import LearnedRouter as LearnedRouter
    from intelligence.router import LearnerStore as LearnerStore
    from intelligence.router import Policy as Policy
    from intelligence.router import RewardWeights as RewardWeights
    from intelligence.routing import LearnedRouting as LearnedRouting
    from intelligence.semantic_hook import SemanticDedupHook as SemanticDedupHook
    from intelligence.semantic_hook import SemanticMatch as SemanticMatch
    from intelligence.verify import PairVerifier as PairVerifier


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'intelligence' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
