"""Providers: the `Worker` protocol, the offline `EchoWorker`, and the HTTP workers.

The HTTP workers (`AnthropicWorker`, `OpenAIWorker`, `LlamaCppWorker`) import their SDKs, so
they load on first access: `import orchestrator.providers` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.providers.base import Worker
from orchestrator.providers.echo import EchoWorker

if TYPE_CHECKING:
    from orchestrator.providers.anthropic import AnthropicWorker
    from orchestrator.providers.llamacpp import LlamaCppWorker
    from orchestrator.providers.openai import OpenAIWorker

__all__ = ["AnthropicWorker", "EchoWorker", "LlamaCppWorker", "OpenAIWorker", "Worker"]

_LAZY = {
    "AnthropicWorker": "orchestrator.providers.anthropic",
    "OpenAIWorker": "orchestrator.providers.openai",
    "LlamaCppWorker": "orchestrator.providers.llamacpp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
