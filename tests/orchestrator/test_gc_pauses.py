"""What the server keeps per request stays out of the way of Python's cyclic GC, whose full
collections stop the event loop for as long as they walk the tracked objects: answered
requests leave no reference cycles behind (they are freed at once, by reference counting), and
the structures that remember answers (the response cache, the feedback log, semantic dedup's
entries) hold them in forms the GC does not track, so a full cache does not lengthen those
pauses."""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator

import pytest

from orchestrator import (
    EchoWorker,
    FeedbackLog,
    InferenceRequest,
    InferenceResponse,
    Pipeline,
    PipelineConfig,
    Usage,
)
from orchestrator.resilience.cache import CachedAnswer, MemoryCache


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """Collections only when the test asks: what one finds is what the test's code left."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _tracked() -> int:
    gc.collect()  # also stops tracking the tuples and dicts that hold only untracked values
    return len(gc.get_objects())


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
async def test_answered_requests_leave_no_reference_cycles(
    stream: bool, no_automatic_gc: None
) -> None:
    """Fifty answered requests, plain or streamed, leave nothing for the cyclic GC to find:
    every object of theirs was freed by reference counting. (A stream's broadcast kept a
    callback that referred back to its job: nineteen objects per stream waited for a full
    collection.)"""
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:

        async def ask(i: int) -> None:
            request = InferenceRequest(f"question {i}")
            if stream:
                [c async for c in pipeline.stream(request)]
            else:
                await pipeline.infer(request)

        for i in range(5):  # first uses create what lives on (lazy state, caches)
            await ask(-i)
        gc.collect()
        for i in range(50):
            await ask(i)
        assert gc.collect() == 0


async def test_a_full_memory_cache_adds_nothing_for_the_gc_to_walk() -> None:
    """A thousand cached answers, native ones included, add only a handful of objects the GC
    tracks; each comes back equal to what was put, every token count kept."""
    cache = MemoryCache()
    native = {"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3}}

    def answer(i: int) -> CachedAnswer:
        return CachedAnswer(
            text=f"answer {i}",
            usage=Usage(
                input_tokens=i,
                output_tokens=2,
                cache_read_input_tokens=3,
                cache_creation_input_tokens=4,
            ),
            provider="anthropic",
            model="claude",
            finish_reason="end_turn",
            native={**native, "id": f"msg_{i}"},
        )

    before = _tracked()
    for i in range(1000):
        await cache.put(f"key-{i}", answer(i), ttl_s=60)
    assert _tracked() - before < 50
    assert await cache.get("key-7") == answer(7)


def test_the_feedback_log_remembers_answers_in_untracked_records() -> None:
    """The feedback log remembers its last `max_entries` producers without adding objects for
    the GC to walk, and still attributes feedback to them."""
    log = FeedbackLog()
    before = _tracked()
    for i in range(1000):
        log.answered(
            InferenceResponse(
                text="a",
                usage=Usage(),
                cost_usd=0.0,
                provider="anthropic",
                model="claude",
                latency_ms=1.0,
                request_id=f"req-{i}",
                cached=i % 2 == 0,
            )
        )
    assert _tracked() - before < 50
    feedback = log.record("req-4", 1)
    assert (feedback.provider, feedback.model, feedback.cached) == ("anthropic", "claude", True)


async def test_semantic_dedup_entries_keep_their_answers_out_of_the_gcs_way() -> None:
    """A thousand answered semantic-dedup entries add two tracked objects each (the entry and
    its slot; the answer is kept pickled), not five; a hit still serves the whole answer."""
    from intelligence.dedup import SemanticDedup
    from intelligence.embed import LexicalEmbedder
    from intelligence.semantic_hook import SemanticDedupHook

    hook = SemanticDedupHook(SemanticDedup(LexicalEmbedder(), verify=False))
    assert hook.wait_ready(60), hook.status()
    scope = ("claude", "be brief", None)

    def answer(i: int) -> CachedAnswer:
        return CachedAnswer(text=f"answer {i}", usage=Usage(input_tokens=3, output_tokens=i),
                            provider="anthropic", model="claude")

    def question(i: int) -> str:  # words of its own: no two of them alike
        words = hashlib.sha256(str(i).encode()).hexdigest()
        return f"question {words[:8]} on {words[8:16]} and {words[16:24]}"

    async def answered(i: int) -> None:
        text = question(i)
        assert await hook.match(text, scope) is None
        hook.started(f"flight-{i}", text, scope)
        hook.answered(f"flight-{i}", answer(i), 300)
        hook.finished(f"flight-{i}")

    for i in range(20):  # the index and its first lists exist before counting
        await answered(i)
    before = _tracked()
    for i in range(20, 1020):
        await answered(i)
    assert (_tracked() - before) / 1000 <= 2.1
    match = await hook.match(question(77).upper() + " ", scope)  # case and spaces differ
    assert match is not None and match.answer == answer(77)
