"""The values that flow through the pipeline: requests, responses, stream chunks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from orchestrator.errors import InvalidRequest

NATIVE_ANTHROPIC = "anthropic"
"""Native format: an Anthropic Messages API request body (see `InferenceRequest.native`)."""

NATIVE_OPENAI_CHAT = "openai-chat"
"""Native format: an OpenAI Chat Completions request body (tools, tool messages, …)."""

NATIVE_OPENAI_RESPONSES = "openai-responses"
"""Native format: an OpenAI Responses API request body (`POST /v1/responses`)."""

ANTHROPIC_BETA = "anthropic-beta"
"""The `metadata` key of a native request's `anthropic-beta` header, forwarded with the body."""

ANTHROPIC_VERSION = "anthropic-version"
"""The `metadata` key of the client's `anthropic-version` header, forwarded with the body."""

OPENAI_CLIENT_HEADERS = "openai-client-headers"
"""The `metadata` key of the client's `openai-beta` and `x-openai-*` headers (a JSON object),
forwarded with a native OpenAI body."""

TASK_ID = "task_id"
"""The `metadata` key naming the fleet task the request was made for (the server's doors set
it from the `x-orchestrator-task` header); the intelligence layer attributes the answer to that
task, whose outcome credits it (`intelligence.feedback.TASK_ID`, the same key). Not part of any
dedup or cache key, and never sent upstream."""

NATIVE_FORMAT = "native-format"
"""The `metadata` key naming the format of `InferenceRequest.native` (default
`NATIVE_ANTHROPIC`)."""


class Priority(StrEnum):
    """Priority of a request and of a fleet task: lower `rank` is served (claimed) first and
    shed last."""

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
    """One chat turn; a `system` turn is an instruction in the middle of the conversation (the
    Messages API and Chat Completions both take them; Claude Code sends them)."""

    role: Literal["user", "assistant", "system"]
    content: str


def _new_request_id() -> str:
    return "req_" + os.urandom(12).hex()  # 24 hex digits, without building a UUID


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A request for one completion.

    Give either `prompt` (one user turn) or `messages`; `messages_or_prompt` reconciles them.
    `timeout_s` is the request's deadline, relative to when the pipeline accepts it.

    `native`, when given, is a provider-native request body that the text fields cannot carry,
    in the format `native_format` names (`metadata[NATIVE_FORMAT]`, default `NATIVE_ANTHROPIC`:
    an Anthropic Messages API body with tools, content blocks of any type, thinking…; or an
    OpenAI Chat Completions or Responses body), without `stream`. It is sent as given (except
    `model`, which follows `model` as for any request) and only to workers whose
    `native_formats` include its format; the configured system prompt, template and retrieved
    context are not added to it. `prompt` / `messages` / `system` then hold a text rendering
    of it, used for token estimates. `metadata[ANTHROPIC_BETA]` / `metadata[ANTHROPIC_VERSION]`
    are the client's headers to send with it (part of its dedup key).

    `max_tokens` None lets the provider decide (OpenAI's APIs have no required limit; the
    Anthropic worker then sends its own default). `client_retries` says the client retries by
    itself (its SDK announced `x-stainless-retry-count`): the pipeline then tries each provider
    once instead of stacking its own retry rounds on top of the client's. `semantic_dedup`
    False opts the request out of semantic dedup (exact dedup and the cache still apply).
    `client` labels who asked in the usage ledger (`orchestrator.usage`): an agent name or an
    auth role, never a token; it is not part of any dedup or cache key.
    """

    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    system: str | None = None
    model: str | None = None
    max_tokens: int | None = 1024
    temperature: float | None = None
    session_id: str | None = None
    tenant: str | None = None
    priority: Priority = Priority.NORMAL
    timeout_s: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=_new_request_id)
    native: Mapping[str, Any] | None = None
    client_retries: bool = False
    semantic_dedup: bool = True
    client: str | None = None

    def __post_init__(self) -> None:
        if self.prompt is None and not self.messages:
            raise InvalidRequest("InferenceRequest needs a prompt or messages")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidRequest(f"timeout_s must be > 0, got {self.timeout_s}")
        if not isinstance(self.priority, Priority):
            object.__setattr__(self, "priority", Priority(self.priority))

    @property
    def native_format(self) -> str | None:
        """The format of `native` (None for a text request)."""
        if self.native is None:
            return None
        return self.metadata.get(NATIVE_FORMAT, NATIVE_ANTHROPIC)

    @property
    def messages_or_prompt(self) -> tuple[Message, ...]:
        """The conversation: `messages`, with `prompt` appended as a final user turn if given."""
        if self.prompt is None:
            return self.messages
        return (*self.messages, Message("user", self.prompt))


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts as reported by the provider, each billed at its own price.

    `input_tokens` are the input tokens read fresh; `cache_read_input_tokens` were read from
    the provider's prompt cache, `cache_creation_input_tokens` written to it (Anthropic's
    convention: the three add up to the whole prompt; OpenAI's `prompt_tokens` include the
    cached ones, so its worker splits them).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Every input token, cached or not (what OpenAI reports as `prompt_tokens`)."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


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

    The first chunk a caller reads of an answer not made for it says how it was reused, as
    `InferenceResponse` does: `cache_kind` "exact" (the response cache, or a stream it
    joined) or "semantic" (with the match's `similarity`); None on every other chunk.
    """

    text: str
    index: int
    finish_reason: str | None = None
    usage: Usage | None = None
    native: Mapping[str, Any] | None = None
    cache_kind: str | None = None
    similarity: float | None = None


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
    cache_kind: Literal["exact", "semantic"] | None = None
    """How an answer that made no upstream call of its own (`cached` or `deduped`) was
    matched: the same request, or a semantic match (then `similarity` is the cosine)."""
    similarity: float | None = None
