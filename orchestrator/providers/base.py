"""The one interface every provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from orchestrator.request import Completion, InferenceRequest, StreamChunk


@runtime_checkable
class Worker(Protocol):
    """A provider: turns an assembled request into a completion or a stream of chunks.

    Implementations raise `ProviderError` (classified retryable or not) for upstream failures,
    honour `timeout_s` for the whole call, and stop work promptly when the awaiting task is
    cancelled. The last streamed chunk carries `finish_reason` and, when known, `usage`.

    A worker that can send provider-native request bodies (`InferenceRequest.native`) says so
    with an optional attribute `native_formats: frozenset[str]` (e.g. `{"anthropic"}`); it then
    returns the provider's answer in `Completion.native` and each raw stream event in
    `StreamChunk.native`. Without the attribute a worker takes no native requests.
    """

    name: str
    default_model: str

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion: ...

    def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]: ...

    async def aclose(self) -> None: ...
