"""What the front doors ask the pipeline instead of reaching into its routes: each provider's
capabilities, and token counting through the counting provider's breaker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from pipeline_fakes import ScriptedWorker

from orchestrator import Pipeline, PipelineConfig
from orchestrator.errors import ProviderError
from orchestrator.routing import ProviderCapabilities


class Counting(ScriptedWorker):
    """A scripted worker that takes native Anthropic bodies and counts their tokens."""

    native_formats = frozenset({"anthropic"})

    def __init__(self, name: str, *, fail: ProviderError | None = None) -> None:
        super().__init__(name)
        self.counted: list[Mapping[str, Any]] = []
        self.fail = fail

    async def count_tokens(
        self,
        body: Mapping[str, Any],
        *,
        timeout_s: float,
        beta: str | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        self.counted.append(body)
        if self.fail is not None:
            raise self.fail
        return {"input_tokens": 7}


def test_capabilities_describe_each_provider_in_order() -> None:
    """`capabilities()` names each provider with its default model, native formats and
    whether it counts tokens; `takes_native` answers from them."""
    pipeline = Pipeline(PipelineConfig(), ScriptedWorker("plain"), Counting("counter"))
    assert pipeline.capabilities() == (
        ProviderCapabilities(
            name="plain", default_model="echo", native_formats=frozenset(), counts_tokens=False
        ),
        ProviderCapabilities(
            name="counter",
            default_model="echo",
            native_formats=frozenset({"anthropic"}),
            counts_tokens=True,
        ),
    )
    assert pipeline.takes_native("anthropic") and not pipeline.takes_native("openai")


async def test_count_tokens_asks_the_first_counting_provider_and_meters_it() -> None:
    """The count comes from the first provider that counts, and shows among its calls."""
    counter = Counting("counter")
    async with Pipeline(PipelineConfig(), ScriptedWorker("plain"), counter) as pipeline:
        counted = await pipeline.count_tokens({"model": "m", "messages": []})
        calls = {p.name: p.calls_total for p in pipeline.snapshot().providers}
    assert counted == {"input_tokens": 7}
    assert counter.counted == [{"model": "m", "messages": []}]
    assert calls == {"plain": 0, "counter": 1}


async def test_count_tokens_without_a_counting_provider_is_none() -> None:
    """With no provider that counts, the door gets None (and estimates)."""
    async with Pipeline(PipelineConfig(), ScriptedWorker("plain")) as pipeline:
        assert await pipeline.count_tokens({"messages": []}) is None


async def test_count_tokens_goes_through_the_breaker() -> None:
    """Counting failures count against the provider's breaker; once it is open, counting is
    not attempted and the door gets None."""
    broken = Counting("counter", fail=ProviderError("counter", "down", status=503,
                                                    retryable=True))
    config = PipelineConfig()
    async with Pipeline(config, broken) as pipeline:
        pipeline.live.set(breaker_failure_threshold=2)
        for _ in range(2):
            with pytest.raises(ProviderError):
                await pipeline.count_tokens({"messages": []})
        assert await pipeline.count_tokens({"messages": []}) is None
    assert len(broken.counted) == 2


def test_serving_echo_never_imports_the_anthropic_sdk() -> None:
    """A server over the echo provider loads no Anthropic SDK: the doors ask the pipeline
    what its providers can do instead of checking for the Anthropic worker's class."""
    code = (
        "import sys\n"
        "from orchestrator import EchoWorker, Pipeline, PipelineConfig\n"
        "from orchestrator.server.app import create_app\n"
        "create_app(Pipeline(PipelineConfig(), EchoWorker()))\n"
        "print('anthropic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
