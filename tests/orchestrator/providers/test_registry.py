"""The provider registry: one entry per provider (name, required settings, default model,
factory), which settings, the composition root and the wizard all read."""

from __future__ import annotations

from typing import get_args

import pytest

from orchestrator import EchoWorker
from orchestrator.assembly import build_pipeline
from orchestrator.errors import SettingsError
from orchestrator.providers.registry import PROVIDER_SPECS
from orchestrator.settings import PROVIDERS, Provider, ServerSettings, default_model


def test_the_registry_is_the_list_of_providers() -> None:
    """`PROVIDERS` is the registry's names, and the `Provider` type names the same ones."""
    assert PROVIDERS == tuple(PROVIDER_SPECS) == get_args(Provider)
    for name, spec in PROVIDER_SPECS.items():
        assert spec.name == name


@pytest.mark.parametrize(
    ("provider", "settings", "needed"),
    [
        ("anthropic", {}, ("anthropic_api_key",)),
        ("openai", {}, ("openai_api_key",)),
        ("openai", {"openai_base_url": "http://127.0.0.1:9/v1"}, ()),
        ("llamacpp", {}, ("llama_cpp_url",)),
        ("echo", {}, ()),
    ],
)
def test_each_entry_names_the_settings_it_needs(
    provider: str, settings: dict[str, str], needed: tuple[str, ...]
) -> None:
    """`required(settings)` is what settings validation refuses to start without."""
    base = ServerSettings(provider="echo", **settings)  # type: ignore[arg-type]
    assert PROVIDER_SPECS[provider].required(base) == needed
    if needed:
        with pytest.raises(SettingsError, match=needed[0].upper()):
            ServerSettings(provider=provider, **settings)  # type: ignore[arg-type]


def test_default_models_come_from_the_registry() -> None:
    """`default_model` answers each entry's default."""
    for name, spec in PROVIDER_SPECS.items():
        assert default_model(name) == spec.default_model()  # type: ignore[arg-type]
    assert default_model("echo") == "echo"


async def test_the_composition_root_builds_every_worker_from_its_entry() -> None:
    """`build_pipeline` makes the primary with the configured model and each fallback with
    its own default, in that order, and passes the seams it is given to the pipeline."""
    from orchestrator.routing import FallbackRouter

    router = FallbackRouter()
    settings = ServerSettings(
        provider="echo", model="echo-large", fallback=("llamacpp",),
        llama_cpp_url="http://127.0.0.1:9",
    )
    pipeline = build_pipeline(settings, router=router, quality_hooks=[lambda q, r: None])
    primary, fallback = (route.worker for route in pipeline.routes)
    assert isinstance(primary, EchoWorker) and primary.default_model == "echo-large"
    assert fallback.name == "llamacpp" and fallback.default_model == "llama.cpp"
    assert pipeline.router is router and len(pipeline.postprocess.hooks) == 1
    async with pipeline:
        pass
