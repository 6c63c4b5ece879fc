"""The values that flow through the pipeline: requests, responses, stream chunks."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

NATIVE_ANTHROPIC = "anthropic"
"""The one native format so far: an Anthropic Messages API request body (see `native`)."""

ANTHROPIC_BETA = "anthropic-beta"
"""The `metadata` key of a native request's `anthropic-beta` header, forwarded with the body."""


class Priority(StrEnum):
    """Request priority; lower `rank` is served first and shed last."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn."""

    role: Literal["user", "assistant"]
    content: str


def _new_request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A request for one completion.

    Give either `prompt` (one user turn) or `messages`; `messages_or_prompt` reconciles them.
    `timeout_s` is the request's deadline, relative to when the pipeline accepts it.

    `native`, when given, is a provider-native request body that the text fields cannot carry
    (for now only an Anthropic Messages API body, `NATIVE_ANTHROPIC`: tools, content blocks of
    any type, thinking…, without `stream`). It is sent as given (except `model`, which follows
    `model` as for any request) and only to workers whose `native_formats` include it; the
    configured system prompt, template and retrieved context are not added to it. `prompt` /
    `messages` / `system` then hold a text rendering of it, used for token estimates.
    `metadata[ANTHROPIC_BETA]` is the beta header to send with it (part of its dedup key).
    """

    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    system: str | None = None
    model: str | None = None
    max_tokens: int = 1024
    temperature: float | None = None
    session_id: str | None = None
    tenant: str | None = None
    priority: Priority = Priority.NORMAL
    timeout_s: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=_new_request_id)
    native: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.prompt is None and not self.messages:
            raise ValueError("InferenceRequest needs a prompt or messages")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not isinstance(self.priority, Priority):
            object.__setattr__(self, "priority", Priority(self.priority))

    @property
    def messages_or_prompt(self) -> tuple[Message, ...]:
        """The conversation: `messages`, with `prompt` appended as a final user turn if given."""
        if self.prompt is None:
            return self.messages
        return (*self.messages, Message("user", self.prompt))


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts as reported by the provider."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Completion:
    """What a provider returns for one request, before the pipeline prices and stamps it."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = "stop"
    native: Mapping[str, Any] | None = None
    """For a native request: the provider's whole answer as it sent it (an Anthropic message)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamChunk:
    """A piece of a streamed answer; the last chunk has `finish_reason` (and `usage` if known).

    For a native request each chunk carries one raw provider stream event in `native` (for
    Anthropic: message_start, content_block_start, content_block_delta…, message_stop) and the
    text it adds, if any, in `text`.
    """

    text: str
    index: int
    finish_reason: str | None = None
    usage: Usage | None = None
    native: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InferenceResponse:
    """The answer the pipeline gives a caller."""

    text: str
    usage: Usage
    cost_usd: float
    provider: str
    model: str
    latency_ms: float
    request_id: str
    deduped: bool = False
    cached: bool = False
    finish_reason: str | None = "stop"
    native: Mapping[str, Any] | None = None
    """For a native request: the provider's whole answer as it sent it."""
