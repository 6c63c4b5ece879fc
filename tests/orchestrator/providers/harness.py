"""A fake upstream paired with real workers pointed at it, for the worker test suites."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes import FakeAnthropic, FakeLlamaCpp, FakeOpenAI, FakeUpstream

from orchestrator.providers.anthropic import AnthropicWorker
from orchestrator.providers.base import Worker
from orchestrator.providers.llamacpp import LlamaCppWorker
from orchestrator.providers.openai import OpenAIWorker

API_KEY = "sk-test-4f1c9a7e2b6d8035-SECRET"


def _anthropic(upstream: FakeUpstream, **kwargs: Any) -> Worker:
    return AnthropicWorker(API_KEY, base_url=upstream.url, **kwargs)


def _openai(upstream: FakeUpstream, **kwargs: Any) -> Worker:
    return OpenAIWorker(API_KEY, base_url=upstream.url + "/v1", **kwargs)


def _llamacpp(upstream: FakeUpstream, **kwargs: Any) -> Worker:
    return LlamaCppWorker(upstream.url, api_key=API_KEY, **kwargs)


PROVIDERS: dict[str, tuple[type[FakeUpstream], Callable[..., Worker]]] = {
    "anthropic": (FakeAnthropic, _anthropic),
    "openai": (FakeOpenAI, _openai),
    "llamacpp": (FakeLlamaCpp, _llamacpp),
}


@dataclass
class Provider:
    """A fake upstream and a factory for real workers pointed at it (closed after the test)."""

    name: str
    upstream: FakeUpstream
    _factory: Callable[..., Worker]
    _workers: list[Worker]

    def worker(self, **kwargs: Any) -> Worker:
        worker = self._factory(self.upstream, **kwargs)
        self._workers.append(worker)
        return worker
