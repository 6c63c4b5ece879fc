"""`EchoWorker`: an offline provider that answers with the last user message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from orchestrator.errors import ProviderError
from orchestrator.providers.faults import FaultSchedule
from orchestrator.request import Completion, InferenceRequest, StreamChunk, Usage
from orchestrator.tokens import CHARS_PER_TOKEN, estimate_request_tokens, estimate_tokens

__all__ = ["EchoWorker"]


class EchoWorker:
    """Answers every request with its last user message, after `latency_s` seconds.

    Streams the answer word by word, giving the event loop its turn between words (so a
    long answer to a slow client never holds up the others); an answer is cut at the
    request's `max_tokens` (finish reason `length`). Usage is estimated (four characters a
    token). If
    `latency_s` exceeds the call's `timeout_s` it waits `timeout_s` and raises a retryable
    `ProviderError`, like a real provider timing out. `sleep` is injectable so tests need not
    wait; `calls` counts the calls received. It is `free`: it costs nothing whatever model a
    request names. `faults` (a `FaultSchedule`, `ECHO_FAULTS` in the server's settings) makes
    a share of the calls fail as an overloaded upstream would, for rehearsing failures.
    """

    free = True

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        name: str = "echo",
        model: str = "echo",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        faults: FaultSchedule | None = None,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s!r}")
        self.name = name
        self.default_model = model
        self.latency_s = latency_s
        self._sleep = sleep
        self.faults = faults
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        self.calls += 1
        await self._wait(timeout_s)
        text, usage, finish = self._answer(request)
        return Completion(
            text=text, usage=usage, model=request.model or self.default_model,
            finish_reason=finish,
        )

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        await self._wait(timeout_s)
        text, usage, finish = self._answer(request)
        words = text.split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            yield StreamChunk(
                text=word if last else word + " ",
                index=index,
                finish_reason=finish if last else None,
                usage=usage if last else None,
            )
            await asyncio.sleep(0)  # a turn for the loop: not a wait

    async def aclose(self) -> None:
        return None

    async def _wait(self, timeout_s: float) -> None:
        if self.faults is not None:
            self.faults.check(self.name)
        if self.latency_s <= 0:
            return
        if self.latency_s > timeout_s:
            await self._sleep(timeout_s)
            raise ProviderError(self.name, f"timed out after {timeout_s:g}s", retryable=True)
        await self._sleep(self.latency_s)

    def _answer(self, request: InferenceRequest) -> tuple[str, Usage, str]:
        messages = request.messages_or_prompt
        text = next((m.content for m in reversed(messages) if m.role == "user"), "")
        finish = "stop"
        if request.max_tokens is not None and estimate_tokens(text) > request.max_tokens:
            text, finish = text[: request.max_tokens * CHARS_PER_TOKEN], "length"
        usage = Usage(
            input_tokens=estimate_request_tokens(request.system, (m.content for m in messages)),
            output_tokens=estimate_tokens(text),
        )
        return text, usage, finish
