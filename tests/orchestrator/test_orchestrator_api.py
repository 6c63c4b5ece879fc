"""The package's public surface."""

from __future__ import annotations

import subprocess
import sys

import orchestrator


def test_all_is_the_intended_public_api() -> None:
    """`orchestrator.__all__` lists exactly what we mean to export."""
    assert sorted(orchestrator.__all__) == sorted(
        [
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
    )


def test_every_eager_name_resolves() -> None:
    """Each exported name other than the lazy HTTP workers is importable right away."""
    lazy = {"AnthropicWorker", "OpenAIWorker", "LlamaCppWorker"}
    for name in set(orchestrator.__all__) - lazy:
        assert getattr(orchestrator, name) is not None


def test_importing_the_package_loads_no_provider_sdk() -> None:
    """`import orchestrator` stays light: neither anthropic nor openai is imported."""
    code = (
        "import sys, orchestrator; "
        "print(','.join(m for m in ('anthropic', 'openai', 'redis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_resilience_and_stages_export_their_names() -> None:
    """The subpackages' `__all__` lists resolve."""
    from orchestrator import resilience, stages

    for package in (resilience, stages):
        for name in package.__all__:
            assert getattr(package, name) is not None
