"""Semantic dedup through the pipeline's `DedupHook` seam: a match joins the flight in the air
or gets the stored answer, only within its scope, only for eligible requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from fakeclock import FakeClock
from gatedembedder import GatedEmbedder
from pipeline_fakes import GatedWorker, ScriptedWorker, settle

from intelligence.dedup import SemanticDedup
from intelligence.semantic_hook import SemanticDedupHook
from orchestrator import InferenceRequest, Message, Pipeline, PipelineConfig
from orchestrator.resilience.coalesce import DedupHook, semantic_query


@dataclass(frozen=True)
class Match:
    flight_key: str | None
    answer: Any
    similarity: float


class CaseInsensitiveHook:
    """A real (if simple) semantic matcher: texts equal ignoring case ask the same thing
    (byte-identical ones are left to the exact cache, as `SemanticDedupHook` does). It waits
    a loop turn in `match`, as a hook that embeds in a thread does."""

    def __init__(self) -> None:
        self.flights: dict[tuple[str, str], str] = {}
        self.answers: dict[tuple[str, str], Any] = {}
        self.texts: dict[str, tuple[str, str]] = {}
        self.originals: dict[tuple[str, str], str] = {}
        self.served_ids: list[str] = []
        self.lookups = 0

    async def match(self, text: str, scope: str) -> Match | None:
        self.lookups += 1
        await asyncio.sleep(0)
        key = (text.lower(), scope)
        if self.originals.get(key) == text:
            return None
        if key in self.answers:
            return Match(None, self.answers[key], 0.97)
        if key in self.flights:
            return Match(self.flights[key], None, 0.98)
        return None

    def started(self, flight_key: str, text: str, scope: str) -> None:
        self.flights[(text.lower(), scope)] = flight_key
        self.originals[(text.lower(), scope)] = text
        self.texts[flight_key] = (text.lower(), scope)

    def answered(self, flight_key: str, answer: Any, ttl_s: float) -> None:
        self.answers[self.texts[flight_key]] = answer

    def finished(self, flight_key: str) -> None:
        key = self.texts.pop(flight_key, None)
        self.flights.pop(key, None)  # type: ignore[arg-type]

    def served(self, request_id: str, match: Any, task_id: str | None = None) -> None:
        self.served_ids.append(request_id)


def test_the_hook_implements_the_protocol() -> None:
    """The test's hook is a `DedupHook` (the protocol is what the pipeline calls)."""
    assert isinstance(CaseInsensitiveHook(), DedupHook)


async def test_a_near_identical_prompt_joins_the_running_request() -> None:
    """A match on a flight in the air makes one upstream call for both, marked semantic."""
    worker, hook = GatedWorker(), CaseInsensitiveHook()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        first = asyncio.create_task(pipeline.infer(InferenceRequest("Hello")))
        await settle()
        second = asyncio.create_task(pipeline.infer(InferenceRequest("HELLO")))
        await settle()
        worker.gate.set()
        a, b = await asyncio.gather(first, second)
        snapshot = pipeline.snapshot()
    assert worker.calls == 1
    assert (a.text, b.text) == ("Hello", "Hello")
    assert a.cache_kind is None and not a.deduped
    assert b.deduped and b.cache_kind == "semantic" and b.similarity == 0.98
    assert b.cost_usd == 0.0
    assert hook.served_ids == [b.request_id]
    assert snapshot.semantic_dedup is not None and snapshot.semantic_dedup["hits"] == 1
    assert snapshot.semantic_dedup["recent_hits"][0]["served_from"] == "flight"


async def test_a_near_identical_prompt_later_gets_the_stored_answer() -> None:
    """After the first answer landed, a match is answered from the store: cached, semantic."""
    worker, hook = ScriptedWorker(), CaseInsensitiveHook()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        first = await pipeline.infer(InferenceRequest("Hello"))
        second = await pipeline.infer(InferenceRequest("hello"))
        chunks = [c async for c in pipeline.stream(InferenceRequest("HeLLo"))]
    assert len(worker.requests) == 1
    assert second.text == first.text and "".join(c.text for c in chunks) == first.text
    assert second.cached and second.cache_kind == "semantic" and second.similarity == 0.97
    assert (chunks[0].cache_kind, chunks[0].similarity) == ("semantic", 0.97)


async def test_another_conversation_never_gets_the_answer() -> None:
    """The same last turn after a different history is another scope: no hit."""
    worker, hook = ScriptedWorker(), CaseInsensitiveHook()

    def turn(history: str) -> InferenceRequest:
        return InferenceRequest(
            messages=(
                Message("user", history), Message("assistant", "ok"), Message("user", "And then?")
            )
        )

    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        await pipeline.infer(turn("Tell me about Rome"))
        other = await pipeline.infer(turn("Tell me about Oslo"))
        again = await pipeline.infer(
            InferenceRequest(
                messages=(Message("user", "Tell me about Rome"), Message("assistant", "ok"),
                          Message("user", "AND THEN?"))
            )
        )
    assert len(worker.requests) == 2
    assert not other.cached and other.cache_kind is None
    assert again.cache_kind == "semantic"


async def test_sampled_and_opted_out_requests_are_never_served_semantically() -> None:
    """temperature > 0 and `semantic_dedup=False` skip the hook (unless configured)."""
    worker, hook = ScriptedWorker(), CaseInsensitiveHook()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        await pipeline.infer(InferenceRequest("Hello", temperature=0.0))
        hot = await pipeline.infer(InferenceRequest("HELLO", temperature=0.0 + 0.7))
        out = await pipeline.infer(InferenceRequest("hello", temperature=0.0, semantic_dedup=False))
    assert not hot.cached and not out.cached and len(worker.requests) == 3
    assert hook.lookups == 1
    worker, hook = ScriptedWorker(), CaseInsensitiveHook()
    config = PipelineConfig(semantic_dedup_sampled=True)
    async with Pipeline(config, worker, dedup_hooks=[hook]) as pipeline:
        await pipeline.infer(InferenceRequest("Hello", temperature=0.7))
        hot = await pipeline.infer(InferenceRequest("HELLO", temperature=0.7))
    assert hot.cache_kind == "semantic"


async def test_a_failing_hook_is_a_miss() -> None:
    """A hook that raises never fails the request; the error is counted."""

    class Broken(CaseInsensitiveHook):
        async def match(self, text: str, scope: str) -> Match | None:
            raise RuntimeError("index corrupt")

    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[Broken()]) as pipeline:
        response = await pipeline.infer(InferenceRequest("Hello"))
        snapshot = pipeline.snapshot()
    assert response.text and len(worker.requests) == 1
    assert snapshot.semantic_dedup is not None and snapshot.semantic_dedup["errors"] == 1


def test_the_scope_holds_everything_but_the_last_user_turn() -> None:
    """Model, system, sampling, tenant, cache prefix and history are in the scope; the last
    user turn is the text."""
    base = InferenceRequest(messages=(Message("user", "a"), Message("assistant", "b"),
                                      Message("user", "  q  ")), system="s", model="m")
    text, scope = semantic_query(base) or ("", "")
    assert text == "q"
    variants = [
        InferenceRequest(messages=base.messages, system="t", model="m"),
        InferenceRequest(messages=base.messages, system="s", model="n"),
        InferenceRequest(messages=base.messages, system="s", model="m", max_tokens=5),
        InferenceRequest(messages=base.messages, system="s", model="m", temperature=0.0),
        InferenceRequest(messages=base.messages, system="s", model="m", tenant="x"),
        InferenceRequest(messages=(Message("user", "z"), *base.messages[1:]), system="s",
                         model="m"),
    ]
    assert all((semantic_query(v) or ("", ""))[1] != scope for v in variants)
    assert (semantic_query(base, "t:x:") or ("", ""))[1] != scope
    same = InferenceRequest(messages=(*base.messages[:2], Message("user", "other")),
                            system="s", model="m")
    assert (semantic_query(same) or ("", ""))[1] == scope


async def test_money_saved_is_priced_like_the_call_it_avoided() -> None:
    """An exact cache hit, a coalesced follower and a semantic hit each count the cost the
    upstream call would have had, under their own kind."""
    worker, hook = ScriptedWorker(model="claude-sonnet-5"), CaseInsensitiveHook()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        first = await pipeline.infer(InferenceRequest("Hello"))
        await pipeline.infer(InferenceRequest("Hello"))  # exact cache
        await pipeline.infer(InferenceRequest("HELLO"))  # semantic, stored
        saved = pipeline.snapshot().saved_usd
    assert first.cost_usd > 0
    assert saved["cache"] == first.cost_usd and saved["semantic"] == first.cost_usd
    assert saved["dedup"] == 0.0 and saved["total"] == 2 * first.cost_usd


async def test_a_lookup_over_the_wait_budget_goes_upstream_and_is_counted_in_status() -> None:
    """While the real hook's embedder is held with a backlog beyond `max_wait_s`, a new request
    is not held: it skips semantic dedup, is answered upstream at once, and `skipped_busy`
    counts it in the pipeline's semantic dedup status (what /v1/status shows)."""
    clock = FakeClock(0.0)
    embedder = GatedEmbedder(clock, cost_s=0.010)
    dedup = SemanticDedup(embedder, verify=False, max_wait_s=0.015, timer=clock)
    hook = SemanticDedupHook(dedup)
    embedder.gate.set()
    assert await asyncio.to_thread(hook.wait_ready, 60)
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker, dedup_hooks=[hook]) as pipeline:
        await pipeline.infer(InferenceRequest("timed"))  # the embedder's cost: 10 ms a prompt
        embedder.gate.clear()
        embedder.entered.clear()
        held = asyncio.create_task(pipeline.infer(InferenceRequest("held")))
        assert await asyncio.to_thread(embedder.entered.wait, 60)
        queued = asyncio.create_task(pipeline.infer(InferenceRequest("queued")))
        for _ in range(1000):  # loop turns until "queued" waits behind "held": 20 ms
            if dedup.expected_wait_s() > 0.019:
                break
            await asyncio.sleep(0)
        assert dedup.expected_wait_s() == pytest.approx(0.020)
        calls = worker.calls
        late = await asyncio.wait_for(pipeline.infer(InferenceRequest("late")), 30)
        assert late.cache_kind is None and worker.calls == calls + 1
        status = pipeline.snapshot().semantic_dedup
        assert status is not None
        assert status["skipped_busy"] == 1 and status["max_wait_ms"] == 15.0
        embedder.gate.set()
        await asyncio.gather(held, queued)
    assert ["late"] not in embedder.calls
