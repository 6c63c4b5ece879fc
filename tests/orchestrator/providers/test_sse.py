"""`SseDecoder`: events from arbitrary byte chunks, as the event-stream format defines them."""

from __future__ import annotations

import anthropic._constants
import pytest

from orchestrator.providers.anthropic import API_VERSION
from orchestrator.providers.sse import SseDecoder

STREAM = (
    b"event: message_start\ndata: {\"a\": 1}\n\n"
    b": a comment\n"
    b"event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
    b"data: first\ndata: second\n\n"
    b"event: message_stop\rdata:{}\r\r\n"
)
EVENTS = [
    ("message_start", '{"a": 1}'),
    ("ping", '{"type": "ping"}'),
    (None, "first\nsecond"),
    ("message_stop", "{}"),
]


def _decode(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    decoder = SseDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_a_whole_stream_in_one_chunk_gives_every_event() -> None:
    """Names, multi-line data, comments, and LF, CRLF and CR line ends."""
    assert _decode([STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_any_split_of_the_bytes_gives_the_same_events(size: int) -> None:
    """Chunk borders anywhere (inside a CRLF, inside a UTF-8 character) change nothing."""
    stream = STREAM + "event: x\ndata: é€\n\n".encode()
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert _decode(chunks) == [*EVENTS, ("x", "é€")]


def test_an_event_waits_for_its_blank_line() -> None:
    """An event is yielded only once the blank line that ends it has arrived."""
    decoder = SseDecoder()
    assert list(decoder.feed(b"event: a\ndata: 1\n")) == []
    assert list(decoder.feed(b"\n")) == [("a", "1")]


def test_the_api_version_is_the_one_the_sdk_sends() -> None:
    """The worker sends the `anthropic-version` of the SDK clients are tested with."""
    assert API_VERSION == anthropic._constants.ANTHROPIC_API_VERSION
