"""A client that leaves mid-stream: the upstream stream it was reading is closed at once
(nobody waits for its tokens any more), through every streaming door."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from orchestrator import Pipeline, PipelineConfig
from orchestrator.request import Completion, InferenceRequest, StreamChunk


class EndlessWorker:
    """Streams a chunk every loop turn for ever; `closed` is set when its stream is closed."""

    name = "endless"
    default_model = "echo"

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.started = threading.Event()

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise NotImplementedError

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        self.started.set()
        try:
            index = 0
            while True:
                yield StreamChunk(text="tok ", index=index)
                index += 1
                await asyncio.sleep(0.01)
        finally:
            self.closed.set()

    async def aclose(self) -> None:
        return None


BODIES: dict[str, dict[str, Any]] = {
    "/v1/prompt": {"input": "go", "stream": True},
    "/v1/messages": {"model": "echo", "max_tokens": 64, "stream": True,
                     "messages": [{"role": "user", "content": "go"}]},
    "/v1/chat/completions": {"model": "echo", "stream": True,
                             "messages": [{"role": "user", "content": "go"}]},
    "/v1/completions": {"model": "echo", "stream": True, "prompt": "go"},
    "/v1/responses": {"model": "echo", "stream": True, "input": "go"},
}


@pytest.mark.parametrize("path", list(BODIES))
def test_leaving_mid_stream_closes_the_upstream_stream(
    start_server: Callable[..., str], path: str
) -> None:
    worker = EndlessWorker()
    pipeline = Pipeline(PipelineConfig(), worker)
    url = start_server(pipeline)
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", url + path, json=BODIES[path]) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(3):
            next(lines)
    # The client has gone; the server must stop the upstream stream (no time-based wait:
    # an event the worker sets when its stream is closed).
    assert worker.closed.wait(10), "the upstream stream kept running after the client left"


class CountedWorker:
    """Streams `count` chunks, one per loop turn; counts its calls."""

    name = "counted"
    default_model = "echo"

    def __init__(self, count: int) -> None:
        self.count = count
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise NotImplementedError

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        for index in range(self.count):
            last = index == self.count - 1
            yield StreamChunk(text=f"{index} ", index=index, finish_reason="stop" if last else None)
            await asyncio.sleep(0)

    async def aclose(self) -> None:
        return None


async def test_a_coalesced_stream_keeps_running_while_a_follower_listens() -> None:
    """Two callers of one coalesced stream: the first leaving does not cut the second."""
    worker = CountedWorker(200)
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        first = pipeline.stream(InferenceRequest(prompt="same"))
        second = pipeline.stream(InferenceRequest(prompt="same"))
        _, head = await asyncio.gather(anext(first), anext(second))
        await first.aclose()  # type: ignore[attr-defined]
        texts = [head.text] + [chunk.text async for chunk in second]
    assert worker.calls == 1
    assert "".join(texts) == "".join(f"{i} " for i in range(200))
