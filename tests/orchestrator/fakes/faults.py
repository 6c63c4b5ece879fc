"""What a fake upstream can be told to do wrong, one request at a time or until told otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """Answer with HTTP `status` and the provider's error body.

    `retry_after` is the raw `Retry-After` header value (delta seconds or an HTTP date);
    `message` goes into the error body verbatim (a test may put a secret in it).
    """

    status: int
    retry_after: str | None = None
    message: str = "injected failure"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hang:
    """Accept the request and never answer (until the client gives up or the server stops)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CutStream:
    """Send `after_chunks` text chunks, then end the answer without its end-of-answer marker.

    `abrupt=True` drops the TCP connection mid-body; `abrupt=False` ends the HTTP body cleanly,
    which only the missing marker (`message_stop`, a finish reason, `stop: true`) betrays.
    A non-streaming answer is cut halfway through its JSON body.
    """

    after_chunks: int = 1
    abrupt: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class StallStream:
    """Send `after_chunks` text chunks, then go silent with the connection open."""

    after_chunks: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamError:
    """Send `after_chunks` text chunks, then the provider's in-stream error event for `status`.

    The HTTP status stays 200: the error arrives inside the open stream, as providers do when
    they fail mid-answer (Anthropic's `event: error` with `overloaded_error`, for one).
    A non-streaming request gets `status` as its HTTP status instead.
    """

    after_chunks: int = 1
    status: int = 529
    message: str = "injected mid-stream failure"


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed:
    """Answer 200 with JSON that does not parse: after `after_chunks` chunks of a stream, or
    as the whole body of a plain answer."""

    after_chunks: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepAlive:
    """After `after_chunks` text chunks, pause `pause_s` sending only keep-alives (Anthropic's
    `ping` event, an SSE comment elsewhere) every `every_s`, then finish the answer normally.

    A stream like this is slow but not stalled: bytes keep arriving.
    """

    after_chunks: int = 1
    pause_s: float = 0.5
    every_s: float = 0.05


Fault = Fail | Hang | CutStream | StallStream | StreamError | Malformed | KeepAlive
