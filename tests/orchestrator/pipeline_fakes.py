"""Test doubles for the pipeline tests: scripted workers (and the shared fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from orchestrator.errors import ProviderError
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage


class ScriptedWorker:
    """A worker whose calls follow a script: each entry is an exception to raise or None to
    answer (echoing the last user message). After the script it answers. Counts calls."""

    def __init__(
        self,
        name: str = "scripted",
        script: list[BaseException | None] | None = None,
        *,
        model: str = "echo",
    ) -> None:
        self.name = name
        self.default_model = model
        self.script = list(script or [])
        self.calls = 0
        self.requests: list[InferenceRequest] = []
        self.closed = False

    def _next(self, request: InferenceRequest) -> str:
        self.calls += 1
        self.requests.append(request)
        if self.script:
            outcome = self.script.pop(0)
            if outcome is not None:
                raise outcome
        return request.messages_or_prompt[-1].content

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        text = self._next(request)
        return Completion(
            text=text, usage=Usage(input_tokens=100, output_tokens=10), model=self.default_model
        )

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        text = self._next(request)
        yield StreamChunk(text=text, index=0)
        yield StreamChunk(
            text="", index=1, finish_reason="stop", usage=Usage(input_tokens=100, output_tokens=10)
        )

    async def aclose(self) -> None:
        self.closed = True


class GatedWorker:
    """A worker whose calls wait until the test opens the gate; tracks how many run at once."""

    def __init__(self, name: str = "gated", *, chunks: int = 3) -> None:
        self.name = name
        self.default_model = "echo"
        self.gate = asyncio.Event()
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.started: list[str] = []
        self.chunks = chunks

    async def _enter(self, request: InferenceRequest, timeout_s: float) -> str:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        text = request.messages_or_prompt[-1].content
        self.started.append(text)
        try:
            async with asyncio.timeout(timeout_s):  # honour the call's timeout, as workers must
                await self.gate.wait()
        except TimeoutError:
            raise ProviderError(
                self.name, f"timed out after {timeout_s:.3g}s", retryable=True
            ) from None
        finally:
            self.active -= 1
        return text

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        text = await self._enter(request, timeout_s)
        return Completion(text=text, usage=Usage(input_tokens=1, output_tokens=1), model="echo")

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        text = await self._enter(request, timeout_s)
        for i in range(self.chunks):
            yield StreamChunk(text=f"{text}-{i} ", index=i)
            await asyncio.sleep(0)  # let subscribers interleave, as a network stream would
        yield StreamChunk(text="", index=self.chunks, finish_reason="stop")

    async def aclose(self) -> None:
        return None


async def settle(rounds: int = 20) -> None:
    """Let the event loop run every ready callback a few times over (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
