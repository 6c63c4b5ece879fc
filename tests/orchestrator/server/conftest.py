"""Fixtures for the HTTP server tests: a real uvicorn server on an ephemeral port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator import EchoWorker, Pipeline, PipelineConfig, Worker
from orchestrator.server import ServerThread, create_app


def echo_pipeline(*workers: Worker, **config: Any) -> Pipeline:
    """A pipeline over `workers` (default: one EchoWorker) with `config` overrides."""
    return Pipeline(PipelineConfig(**config), *(workers or (EchoWorker(),)))


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
