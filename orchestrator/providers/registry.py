"""The provider registry: each provider's name, the settings it needs, its default model and
its factory, in one entry. Adding a provider is one entry here (plus its settings fields).

    spec = PROVIDER_SPECS["anthropic"]
    spec.required(settings)            # ("anthropic_api_key",): the settings it cannot run without
    spec.default_model()               # its model when none is set (imports its module)
    worker = spec.build(settings, model)

Factories import their provider's module (and SDK) only when called, so importing the
registry stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.providers.base import Worker
    from orchestrator.settings import ServerSettings

__all__ = ["PROVIDER_SPECS", "ProviderSpec"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """One provider: `required(settings)` names the `ServerSettings` fields it needs (given
    the others, e.g. an OpenAI-compatible upstream needs no key), `default_model()` its model
    when none is configured, `build(settings, model)` its worker."""

    name: str
    required: Callable[[ServerSettings], tuple[str, ...]]
    default_model: Callable[[], str]
    build: Callable[[ServerSettings, str], Worker]


def _anthropic_model() -> str:
    from orchestrator.providers.anthropic import DEFAULT_MODEL

    return DEFAULT_MODEL


def _anthropic(settings: ServerSettings, model: str) -> Worker:
    from orchestrator.providers.anthropic import AnthropicWorker

    assert settings.anthropic_api_key is not None
    return AnthropicWorker(
        settings.anthropic_api_key.reveal(), model=model, base_url=settings.anthropic_base_url
    )


def _openai_model() -> str:
    from orchestrator.providers.openai import DEFAULT_MODEL

    return DEFAULT_MODEL


def _openai(settings: ServerSettings, model: str) -> Worker:
    from orchestrator.providers.openai import OpenAIWorker

    key = settings.openai_api_key
    return OpenAIWorker(
        key.reveal() if key else None, model=model, base_url=settings.openai_base_url
    )


def _llamacpp(settings: ServerSettings, model: str) -> Worker:
    from orchestrator.providers.llamacpp import LlamaCppWorker

    assert settings.llama_cpp_url is not None
    return LlamaCppWorker(settings.llama_cpp_url, model=model)


def _echo(settings: ServerSettings, model: str) -> Worker:
    from orchestrator.providers.echo import EchoWorker
    from orchestrator.providers.faults import FaultSchedule

    faults = FaultSchedule.parse(settings.echo_faults) if settings.echo_faults else None
    return EchoWorker(model=model, faults=faults)


PROVIDER_SPECS: Mapping[str, ProviderSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ProviderSpec(
                name="anthropic",
                required=lambda s: ("anthropic_api_key",),
                default_model=_anthropic_model,
                build=_anthropic,
            ),
            ProviderSpec(
                name="openai",
                # an OpenAI-compatible upstream (vLLM, llama.cpp's server) may need no key
                required=lambda s: () if s.openai_base_url else ("openai_api_key",),
                default_model=_openai_model,
                build=_openai,
            ),
            ProviderSpec(
                name="llamacpp",
                required=lambda s: ("llama_cpp_url",),
                default_model=lambda: "llama.cpp",
                build=_llamacpp,
            ),
            ProviderSpec(
                name="echo", required=lambda s: (), default_model=lambda: "echo", build=_echo
            ),
        )
    }
)
"""Every provider, by name, in the order the wizard offers them."""
