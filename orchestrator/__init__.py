"""The inference pipeline: bounded async stages, providers, resilience, dedup, cost, live config.

    from orchestrator import Pipeline, PipelineConfig, EchoWorker, InferenceRequest

    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(InferenceRequest("Explain backpressure."))

Every name loads on first access, so `import orchestrator.config` (a leaf the fleet and the
self-tuning loop use) does not load the pipeline, and no provider SDK loads until its worker
is asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from orchestrator.feedback import Feedback, FeedbackLog
    from orchestrator.metrics import (
        MetricsSnapshot,
        PrioritySnapshot,
        ProviderSnapshot,
        StageSnapshot,
    )
    from orchestrator.pipeline import Pipeline
    from orchestrator.providers.anthropic import AnthropicWorker
    from orchestrator.providers.base import Worker
    from orchestrator.providers.echo import EchoWorker
    from orchestrator.providers.llamacpp import LlamaCppWorker
    from orchestrator.providers.openai import OpenAIWorker
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
    from orchestrator.routing import FallbackRouter, Route, RouteOutcome, Router
    from orchestrator.stages.postprocess import QualityHook

# Where each public name lives; `__getattr__` imports it on first access.
_HOMES: dict[str, str] = {
    "AnthropicWorker": "orchestrator.providers",
    "BudgetExceeded": "orchestrator.errors",
    "CacheScope": "orchestrator.config",
    "CircuitOpen": "orchestrator.errors",
    "Completion": "orchestrator.request",
    "DeadlineExceeded": "orchestrator.errors",
    "DedupHook": "orchestrator.resilience.coalesce",
    "EchoWorker": "orchestrator.providers.echo",
    "FallbackRouter": "orchestrator.routing",
    "Feedback": "orchestrator.feedback",
    "FeedbackLog": "orchestrator.feedback",
    "InferenceRequest": "orchestrator.request",
    "InferenceResponse": "orchestrator.request",
    "LiveConfig": "orchestrator.config",
    "LlamaCppWorker": "orchestrator.providers",
    "Message": "orchestrator.request",
    "MetricsSnapshot": "orchestrator.metrics",
    "OpenAIWorker": "orchestrator.providers",
    "OrchestratorError": "orchestrator.errors",
    "Overloaded": "orchestrator.errors",
    "Pipeline": "orchestrator.pipeline",
    "PipelineClosed": "orchestrator.errors",
    "PipelineConfig": "orchestrator.config",
    "Priority": "orchestrator.request",
    "ProviderError": "orchestrator.errors",
    "PrioritySnapshot": "orchestrator.metrics",
    "ProviderSnapshot": "orchestrator.metrics",
    "QualityHook": "orchestrator.stages.postprocess",
    "Route": "orchestrator.routing",
    "RouteOutcome": "orchestrator.routing",
    "Router": "orchestrator.routing",
    "StageSnapshot": "orchestrator.metrics",
    "StreamChunk": "orchestrator.request",
    "Tunables": "orchestrator.config",
    "Usage": "orchestrator.request",
    "Worker": "orchestrator.providers.base",
}

__all__ = [
    "AnthropicWorker",
    "BudgetExceeded",
    "CacheScope",
    "CircuitOpen",
    "Completion",
    "DeadlineExceeded",
    "DedupHook",
    "EchoWorker",
    "FallbackRouter",
    "Feedback",
    "FeedbackLog",
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
    "PrioritySnapshot",
    "ProviderError",
    "ProviderSnapshot",
    "QualityHook",
    "Route",
    "RouteOutcome",
    "Router",
    "StageSnapshot",
    "StreamChunk",
    "Tunables",
    "Usage",
    "Worker",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
