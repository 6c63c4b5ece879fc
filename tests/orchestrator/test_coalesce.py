"""Coalescing primitives: request fingerprints, the in-flight table, stream fan-out."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.request import InferenceRequest, Message, StreamChunk
from orchestrator.resilience.coalesce import Broadcast, Coalescer, request_key


def test_identical_after_normalisation_share_a_key() -> None:
    """Whitespace, line endings and prompt-vs-messages spelling do not change the key."""
    a = InferenceRequest("Explain  this\r\n", system="be brief ", session_id="s1")
    b = InferenceRequest(messages=(Message("user", "Explain  this"),), system="be brief")
    assert request_key(a) == request_key(b)


@pytest.mark.parametrize(
    "other",
    [
        InferenceRequest("hi", model="m2"),
        InferenceRequest("hi", system="s"),
        InferenceRequest("hi", max_tokens=5),
        InferenceRequest("hi", temperature=0.5),
        InferenceRequest("hi!"),
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(other: InferenceRequest) -> None:
    """Model, system, messages and sampling parameters are part of the key."""
    assert request_key(InferenceRequest("hi")) != request_key(other)


def test_bookkeeping_fields_are_not_part_of_the_key() -> None:
    """Session, tenant, priority, deadline and metadata do not split a flight."""
    a = InferenceRequest("hi")
    b = InferenceRequest(
        "hi", session_id="x", tenant="t", priority="low", timeout_s=3, metadata={"a": "b"}
    )
    assert request_key(a) == request_key(b)


def test_a_native_body_is_part_of_the_key_whatever_its_key_order() -> None:
    """Native bodies key by content: reordered keys match, a different tool does not."""
    tools = [{"name": "ls", "input_schema": {"type": "object"}}]
    body = {"max_tokens": 8, "tools": tools, "messages": [{"role": "user", "content": "hi"}]}
    same = dict(reversed(body.items()))
    other = {**body, "tools": [{"name": "cat", "input_schema": {"type": "object"}}]}
    key = request_key(InferenceRequest(prompt="hi", native=body))
    assert key == request_key(InferenceRequest(prompt="hi", native=same))
    assert key != request_key(InferenceRequest(prompt="hi", native=other))
    assert key != request_key(InferenceRequest(prompt="hi"))
    beta = {"anthropic-beta": "context-management-2025-06-27"}
    assert key != request_key(InferenceRequest(prompt="hi", native=body, metadata=beta))


def test_coalescer_finds_the_flight_in_the_air_until_it_lands() -> None:
    """`find` returns the leader while in flight and nothing after `finish`."""
    coalescer: Coalescer[str] = Coalescer()
    request = InferenceRequest("hi")
    key = request_key(request)
    assert coalescer.find(key) is None
    coalescer.lead(key, "flight-1")
    assert coalescer.find(key) == "flight-1"
    coalescer.finish(key, "flight-1")
    assert coalescer.find(key) is None
    assert (coalescer.leads, coalescer.hits) == (1, 1)


async def _collect(broadcast: Broadcast) -> list[str]:
    return [chunk.text async for chunk in broadcast.subscribe()]


async def test_broadcast_fans_every_chunk_to_every_subscriber() -> None:
    """Early and late subscribers all receive the whole stream in order."""
    broadcast = Broadcast()
    early = asyncio.create_task(_collect(broadcast))
    await asyncio.sleep(0)
    broadcast.publish(StreamChunk(text="a ", index=0))
    await asyncio.sleep(0)
    late = asyncio.create_task(_collect(broadcast))
    broadcast.publish(StreamChunk(text="b", index=1, finish_reason="stop"))
    broadcast.close()
    assert await early == await late == ["a ", "b"]


async def test_broadcast_error_reaches_subscribers_after_the_chunks() -> None:
    """A stream cut mid-answer delivers what arrived, then raises."""
    broadcast = Broadcast()
    broadcast.publish(StreamChunk(text="part", index=0))
    broadcast.close(ConnectionError("cut"))
    received = []
    with pytest.raises(ConnectionError):
        async for chunk in broadcast.subscribe():
            received.append(chunk.text)
    assert received == ["part"]
