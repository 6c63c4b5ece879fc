"""Fixtures for the HTTP server tests: a real uvicorn server on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from orchestrator import EchoWorker, Pipeline, PipelineConfig, Worker
from orchestrator.errors import ProviderError
from orchestrator.request import Completion, InferenceRequest, StreamChunk
from orchestrator.server import ServerThread, create_app


class PricedEcho(EchoWorker):
    """The echo worker billed like a real provider (echo itself is free), for budget tests."""

    free = False


def echo_pipeline(*workers: Worker, **config: Any) -> Pipeline:
    """A pipeline over `workers` (default: one EchoWorker) with `config` overrides."""
    return Pipeline(PipelineConfig(**config), *(workers or (EchoWorker(),)))


class FailsMidStream:
    """A worker whose stream sends one chunk, then fails (not retryable)."""

    name = "midstream"
    default_model = "echo"

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise ProviderError(self.name, "not used", retryable=False)

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(text="partial ", index=0)
        raise ProviderError(self.name, "upstream cut the stream", status=500, retryable=False)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def start_server() -> Iterator[Callable[..., str]]:
    """`start_server(pipeline=None, **create_app_kwargs) -> url`: serve in a background thread
    (uvloop + httptools, as in production); every server started is stopped after the test."""
    servers: list[ServerThread] = []

    def start(pipeline: Pipeline | None = None, **app_kwargs: Any) -> str:
        server = ServerThread(create_app(pipeline or echo_pipeline(), **app_kwargs))
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
