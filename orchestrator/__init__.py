"""The inference pipeline: bounded async stages, providers, resilience, dedup, cost, live config.

    from orchestrator import Pipeline, PipelineConfig, EchoWorker, InferenceRequest

    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(InferenceRequest("Explain backpressure."))

Importing this package loads no provider SDK; the HTTP workers load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.config import CacheScope, LiveConfig, PipelineConfig, Tunables
from orchestrator.errors import (
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    OrchestratorError,
    Overloaded,
    PipelineClosed,
    ProviderError,
)
from orchestrator.metrics import MetricsSnapshot, ProviderSnapshot, StageSnapshot
from orchestrator.pipeline import Pipeline
from orchestrator.providers.base import Worker
from orchestrator.providers.echo import EchoWorker
from orchestrator.request import (
    Completion,
    InferenceRequest,
    InferenceResponse,
    Message,
    Priority,
    StreamChunk,
    Usage,
)
from orchestrator.resilience.coalesce import DedupHook
from orchestrator.stages.postprocess import QualityHook

if TYPE_CHECKING:
    from orchestrator.providers.anthropic import AnthropicWorker
    from orchestrator.providers.llamacpp import LlamaCppWorker
    from orchestrator.providers.openai import OpenAIWorker

__all__ = [
    "AnthropicWorker",
    "BudgetExceeded",
    "CacheScope",
    "CircuitOpen",
    "Completion",
    "DeadlineExceeded",
    "DedupHook",
    "EchoWorker",
    "InferenceRequest",
    "InferenceResponse",
    "LiveConfig",
    "LlamaCppWorker",
    "Message",
    "MetricsSnapshot",
    "OpenAIWorker",
    "OrchestratorError",
    "Overloaded",
    "Pipeline",
    "PipelineClosed",
    "PipelineConfig",
    "Priority",
    "ProviderError",
    "ProviderSnapshot",
    "QualityHook",
    "StageSnapshot",
    "StreamChunk",
    "Tunables",
    "Usage",
    "Worker",
]

_LAZY = {"AnthropicWorker", "OpenAIWorker", "LlamaCppWorker"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("orchestrator.providers"), name)
    globals()[name] = value
    return value
