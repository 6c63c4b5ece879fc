"""Exact in-flight dedup: identical concurrent requests share one upstream call.

`request_key` fingerprints what determines an answer (model, system prompt, messages, sampling
parameters) after normalising whitespace and line endings. `Coalescer` maps a key to the flight
serving it while that flight is in the air; `Broadcast` fans a streamed answer out, chunk by
chunk, to every subscriber (late subscribers replay from the first chunk). A `DedupHook` may
match a request to an in-flight or answered one that is not byte-identical, within the scope
`semantic_query` gives (semantic dedup plugs in here).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from orchestrator.request import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    NATIVE_ANTHROPIC,
    NATIVE_OPENAI_RESPONSES,
    InferenceRequest,
    StreamChunk,
)

__all__ = [
    "BILLING_LINE_PREFIX",
    "Broadcast",
    "Coalescer",
    "DedupHook",
    "DedupMatch",
    "keyed_body",
    "keyed_responses_body",
    "normalise_text",
    "request_key",
    "semantic_query",
]

BILLING_LINE_PREFIX = "x-anthropic-billing-header:"
"""How Claude Code's per-build billing line starts: its first system block is
`x-anthropic-billing-header: cc_version=<version>.<build>; cc_entrypoint=<entrypoint>;`."""

F = TypeVar("F")


def normalise_text(text: str) -> str:
    """Line endings to \\n, trailing spaces off every line, outer blank space off."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if " \n" in text or "\t\n" in text:
        text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip()


def request_key(request: InferenceRequest) -> str:
    """A stable fingerprint of everything that determines the answer to `request`.

    Session, tenant, priority, deadline, metadata and request id are not part of it; a native
    body is, as canonical JSON (sorted keys), with its format and the client's
    `anthropic-beta` / `anthropic-version` headers, minus the fields `keyed_body` leaves out
    because they cannot change the answer.
    Every field is length-prefixed, so no choice of text can make two requests collide.
    """
    native_format = request.native_format
    if request.native is not None and native_format is not None:
        # The body is the whole question (the text fields only render it for estimates).
        body = (
            keyed_body(request.native)
            if native_format == NATIVE_ANTHROPIC
            else keyed_responses_body(request.native)
            if native_format == NATIVE_OPENAI_RESPONSES
            else request.native
        )
        parts = [
            "6:native",
            _field(request.model),
            _field(native_format),
            _field(json.dumps(body, sort_keys=True, separators=(",", ":"))),
            _field(request.metadata.get(ANTHROPIC_BETA)),
            _field(request.metadata.get(ANTHROPIC_VERSION)),
        ]
        return hashlib.blake2b("".join(parts).encode(), digest_size=16).hexdigest()
    parts = [
        _field(request.model),
        _field(normalise_text(request.system) if request.system else None),
        _field(str(request.max_tokens)),
        _field(repr(request.temperature)),
    ]
    for message in request.messages:
        parts.append(_field(message.role))
        parts.append(_field(normalise_text(message.content)))
    if request.prompt is not None:
        parts.append("4:user")
        parts.append(_field(normalise_text(request.prompt)))
    return hashlib.blake2b("".join(parts).encode(), digest_size=16).hexdigest()


def keyed_body(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A native Anthropic body without the two things that differ between identical prompts
    from different Claude Code runs and cannot change the answer, and nothing else:

    - `metadata.user_id` (a per-run id: device, account, session), and
    - Claude Code's billing line when it is the first system block: a text block that starts
      with `BILLING_LINE_PREFIX` and has no other fields (it names the CLI's build).

    The body sent upstream keeps both; only the dedup and cache key leaves them out.
    """
    metadata = body.get("metadata")
    system = body.get("system")
    strip_user = isinstance(metadata, Mapping) and "user_id" in metadata
    strip_billing = (
        isinstance(system, list)
        and bool(system)
        and isinstance(system[0], Mapping)
        and set(system[0]) == {"type", "text"}
        and system[0].get("type") == "text"
        and isinstance(system[0].get("text"), str)
        and system[0]["text"].startswith(BILLING_LINE_PREFIX)
    )
    if not (strip_user or strip_billing):
        return body
    keyed = dict(body)
    if strip_user:
        assert isinstance(metadata, Mapping)
        rest = {k: v for k, v in metadata.items() if k != "user_id"}
        if rest:
            keyed["metadata"] = rest
        else:
            del keyed["metadata"]
    if strip_billing:
        assert isinstance(system, list)
        keyed["system"] = system[1:]
    return keyed


_PER_RUN_RESPONSES_FIELDS = ("client_metadata", "prompt_cache_key")


def keyed_responses_body(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """A native Responses API body without what differs between identical questions from
    different Codex runs and cannot change the answer, and nothing else:

    - `client_metadata` (the client's own labels: its installation and session ids),
    - `prompt_cache_key` (the thread id Codex names for the provider's prompt cache), and
    - the `id` of each `input` item that carries its content with it (a message, a function
      call, a reasoning item: ids a previous response gave them, new on every run); an
      `item_reference`, which is nothing but an id, keeps it.

    The body sent upstream keeps them all; only the dedup and cache key leaves them out.
    """
    items = body.get("input")
    strip_ids = isinstance(items, list) and any(_content_item_with_id(i) for i in items)
    strip_fields = any(name in body for name in _PER_RUN_RESPONSES_FIELDS)
    if not (strip_ids or strip_fields):
        return body
    keyed = {k: v for k, v in body.items() if k not in _PER_RUN_RESPONSES_FIELDS}
    if strip_ids:
        assert isinstance(items, list)
        keyed["input"] = [
            {k: v for k, v in item.items() if k != "id"} if _content_item_with_id(item) else item
            for item in items
        ]
    return keyed


def _content_item_with_id(item: object) -> bool:
    return (
        isinstance(item, Mapping)
        and "id" in item
        and item.get("type") != "item_reference"
        and len(item) > 2
    )  # more than its type and its id: it carries content


def _field(value: str | None) -> str:
    return "-" if value is None else f"{len(value)}:{value}"


def semantic_query(request: InferenceRequest, prefix: str = "") -> tuple[str, str] | None:
    """What semantic dedup compares for `request`: `(text, scope)`, or None when the request
    has no user turn.

    `text` is the last user turn. `scope` fingerprints everything else that must be equal for
    an answer to be reusable: `prefix` (the cache scope: tenant or session), the tenant, the
    model, the system prompt, the sampling parameters, and the whole conversation around the
    last user turn, so one conversation never gets another's answer. A native body is in the
    scope whole except for its last user message (tools included).
    """
    turns = request.messages_or_prompt
    last = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "user"), None)
    if last is None:
        return None
    text = normalise_text(turns[last].content)
    parts = [
        _field(prefix),
        _field(request.tenant),
        _field(request.model),
        _field(normalise_text(request.system) if request.system else None),
        _field(str(request.max_tokens)),
        _field(repr(request.temperature)),
    ]
    for i, message in enumerate(turns):
        parts.append(_field(message.role))
        parts.append(_field(None if i == last else normalise_text(message.content)))
    if request.native is not None:
        body = dict(keyed_body(request.native))
        messages = body.get("messages")
        if isinstance(messages, list) and messages:
            body["messages"] = messages[:-1]
        parts.append(_field(request.native_format))
        parts.append(_field(json.dumps(body, sort_keys=True, separators=(",", ":"))))
        parts.append(_field(request.metadata.get(ANTHROPIC_BETA)))
    return text, hashlib.blake2b("".join(parts).encode(), digest_size=16).hexdigest()


@runtime_checkable
class DedupMatch(Protocol):
    """What a `DedupHook` found for a request: the flight in the air that asks the same
    (`flight_key`), or a stored answer (`answer`, a `CachedAnswer`); `similarity` is the
    cosine of the two prompts."""

    @property
    def flight_key(self) -> str | None: ...

    @property
    def answer(self) -> Any: ...

    @property
    def similarity(self) -> float: ...


@runtime_checkable
class DedupHook(Protocol):
    """Semantic dedup: matches a request to an equivalent one that is not byte-identical.

    The pipeline asks only when no identical request is in flight, and only for requests
    the config allows (see `PipelineConfig.semantic_dedup_tools`/`_sampled`). Every call
    gets the request's `text` and `scope` (`semantic_query`): a match may only come from an
    equal scope. `match` is awaited, so the hook embeds off the event loop; the other
    methods are called on the loop and must not block. After a miss the request leads its
    own flight: `started`, then `answered` with its answer (to serve later requests, for
    `ttl_s` seconds), then `finished` when the flight lands (answered or not). `served`
    says a match was used to answer `request_id` (for feedback on it), with the fleet task
    the request was made for when it names one (`task_id`, passed only then).
    """

    async def match(self, text: str, scope: str) -> DedupMatch | None: ...

    def started(self, flight_key: str, text: str, scope: str) -> None: ...

    def answered(self, flight_key: str, answer: Any, ttl_s: float) -> None: ...

    def finished(self, flight_key: str) -> None: ...

    def served(self, request_id: str, match: DedupMatch, task_id: str | None = None) -> None: ...


class Coalescer(Generic[F]):
    """The table of flights in the air, keyed by `request_key`."""

    __slots__ = ("_inflight", "hits", "leads")

    def __init__(self) -> None:
        self._inflight: dict[str, F] = {}
        self.hits = 0
        self.leads = 0

    def __len__(self) -> int:
        return len(self._inflight)

    def find(self, key: str) -> F | None:
        """The flight already serving `key`, counting a hit; else None."""
        flight = self._inflight.get(key)
        if flight is not None:
            self.hits += 1
        return flight

    def get(self, key: str) -> F | None:
        """The flight serving `key` now, if any (not counted)."""
        return self._inflight.get(key)

    def lead(self, key: str, flight: F) -> None:
        """Register `flight` as the one serving `key` from now until `finish`."""
        self._inflight[key] = flight
        self.leads += 1

    def finish(self, key: str, flight: F) -> None:
        """`flight` has landed; later requests for `key` start a new one."""
        if self._inflight.get(key) is flight:
            del self._inflight[key]


class Broadcast:
    """One streamed answer, delivered to any number of subscribers chunk by chunk."""

    __slots__ = (
        "_changed", "_error", "_loop", "_subscribers", "cached", "chunks", "closed",
        "on_abandoned", "similarity",
    )

    def __init__(self, *, cached: bool = False, similarity: float | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # A stored answer replayed (`cached`; `similarity` when a semantic match found it):
        # what the callers who join it are told.
        self.cached = cached
        self.similarity = similarity
        self._changed: asyncio.Future[None] = self._loop.create_future()
        self.chunks: list[StreamChunk] = []
        self.closed = False
        self._error: BaseException | None = None
        self._subscribers = 0
        # Called when the last subscriber leaves before the stream ended: nobody reads the
        # rest, so its producer may stop (the upstream call's tokens are paid for).
        self.on_abandoned: Callable[[], None] | None = None

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def error(self) -> BaseException | None:
        return self._error

    def publish(self, chunk: StreamChunk) -> None:
        if self.closed:
            raise RuntimeError("publish on a closed Broadcast")
        self.chunks.append(chunk)
        self._notify()

    def close(self, error: BaseException | None = None) -> None:
        """End the stream; subscribers finish normally, or raise `error` after the last chunk."""
        if self.closed:
            return
        self.closed, self._error = True, error
        # An ended stream has nothing left to stop; its producer's callback refers back to
        # the job that refers to this broadcast, so dropping it lets the request be freed by
        # reference counting instead of waiting, as a cycle, for a full GC pass.
        self.on_abandoned = None
        self._notify()

    async def subscribe(self) -> AsyncIterator[StreamChunk]:
        """Every chunk from the first, then those still to come. Close it (`aclosing`) when
        leaving early: the last subscriber to leave an unfinished stream calls
        `on_abandoned`."""
        index = 0
        self._subscribers += 1
        try:
            while True:
                if index < len(self.chunks):
                    chunk = self.chunks[index]
                    index += 1
                    yield chunk
                elif self.closed:
                    if self._error is not None:
                        raise self._error
                    return
                else:
                    await asyncio.shield(self._changed)
        finally:
            self._subscribers -= 1
            if not self._subscribers and not self.closed and self.on_abandoned is not None:
                self.on_abandoned()

    def _notify(self) -> None:
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)
