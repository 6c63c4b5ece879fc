"""Fixtures: fake upstream servers and the real workers pointed at them.

`provider` runs a test once per HTTP provider (the shared conformance suite); the named
fixtures (`fake_anthropic`, `fake_openai`, `fake_llamacpp`) serve provider-specific tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakes import FakeAnthropic, FakeLlamaCpp, FakeOpenAI

from orchestrator.providers.base import Worker

from .harness import PROVIDERS, Provider


@pytest.fixture(params=sorted(PROVIDERS))
async def provider(request: pytest.FixtureRequest) -> AsyncIterator[Provider]:
    fake_cls, factory = PROVIDERS[request.param]
    workers: list[Worker] = []
    async with fake_cls() as upstream:
        yield Provider(request.param, upstream, factory, workers)
        for worker in workers:
            await worker.aclose()


@pytest.fixture
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as upstream:
        yield upstream


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as upstream:
        yield upstream


@pytest.fixture
async def fake_llamacpp() -> AsyncIterator[FakeLlamaCpp]:
    async with FakeLlamaCpp() as upstream:
        yield upstream
