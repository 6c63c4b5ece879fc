"""Exact dedup through the pipeline: one upstream call per distinct in-flight request."""

from __future__ import annotations

import asyncio

from pipeline_fakes import GatedWorker, ScriptedWorker, settle

from orchestrator import CacheScope, InferenceRequest, Pipeline, PipelineConfig


async def test_identical_concurrent_requests_make_one_upstream_call() -> None:
    """Fifty identical requests in flight together cause exactly one call; all get the answer."""
    worker = GatedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        calls = [
            asyncio.create_task(
                pipeline.infer(InferenceRequest("same question", session_id=f"s{i}"))
            )
            for i in range(50)
        ]
        await settle()
        worker.gate.set()
        responses = await asyncio.gather(*calls)
        snapshot = pipeline.snapshot()
    assert worker.calls == 1
    assert {r.text for r in responses} == {"same question"}
    assert sum(r.deduped for r in responses) == 49
    assert len({r.request_id for r in responses}) == 50
    assert snapshot.dedup_hits == 49 and snapshot.upstream_calls == 1


async def test_only_the_leader_is_billed() -> None:
    """Coalesced followers report cost 0: the one call is billed once."""
    worker = GatedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(InferenceRequest("q"))) for _ in range(3)]
        await settle()
        worker.gate.set()
        responses = await asyncio.gather(*calls)
    assert [r.deduped for r in responses].count(False) == 1


async def test_different_requests_are_not_merged() -> None:
    """Requests differing in prompt, system or parameters each get their own call."""
    worker = GatedWorker()
    requests = [
        InferenceRequest("a"),
        InferenceRequest("b"),
        InferenceRequest("a", system="s"),
        InferenceRequest("a", temperature=0.3),
    ]
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        calls = [asyncio.create_task(pipeline.infer(r)) for r in requests]
        await settle()
        worker.gate.set()
        await asyncio.gather(*calls)
    assert worker.calls == 4


async def test_identical_streams_fan_out_chunk_by_chunk() -> None:
    """Ten identical streams share one upstream stream; each reader gets every chunk in order."""
    worker = GatedWorker(chunks=4)

    async def read() -> list[str]:
        return [c.text async for c in pipeline.stream(InferenceRequest("s"))]

    async with Pipeline(PipelineConfig(), worker) as pipeline:
        readers = [asyncio.create_task(read()) for _ in range(10)]
        await settle()
        worker.gate.set()
        results = await asyncio.gather(*readers)
    assert worker.calls == 1
    assert all(r == ["s-0 ", "s-1 ", "s-2 ", "s-3 ", ""] for r in results)


async def test_a_joined_stream_says_so_on_its_first_chunk_only() -> None:
    """Of identical streams, the one that made the call reads unmarked chunks; each that
    joined it reads `cache_kind` "exact" on its first chunk and nothing on the rest."""
    worker = GatedWorker(chunks=3)

    async def kinds() -> list[str | None]:
        return [c.cache_kind async for c in pipeline.stream(InferenceRequest("s"))]

    async with Pipeline(PipelineConfig(), worker) as pipeline:
        readers = [asyncio.create_task(kinds()) for _ in range(3)]
        await settle()
        worker.gate.set()
        results = await asyncio.gather(*readers)
    assert worker.calls == 1
    assert sorted(results, key=lambda r: r[0] or "") == [
        [None, None, None, None],
        ["exact", None, None, None],
        ["exact", None, None, None],
    ]


async def test_a_stream_joined_midway_replays_from_the_start() -> None:
    """A reader arriving while the shared stream is flowing still gets all of it."""
    worker = GatedWorker(chunks=200)
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        first = pipeline.stream(InferenceRequest("s"))
        head = asyncio.create_task(anext(first))
        await settle()
        worker.gate.set()
        first_chunk = await head
        late = asyncio.create_task(_collect(pipeline.stream(InferenceRequest("s"))))
        rest = [c.text async for c in first]
        assert worker.calls == 1
        assert await late == [first_chunk.text, *rest]
        assert len(rest) == 200


async def _collect(stream) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.text async for c in stream]


async def test_repeats_after_landing_are_served_from_cache() -> None:
    """An identical request after the first has landed is a cache hit: no upstream call."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        first = await pipeline.infer(InferenceRequest("q"))
        second = await pipeline.infer(InferenceRequest("q"))
        chunks = [c async for c in pipeline.stream(InferenceRequest("q"))]
        snapshot = pipeline.snapshot()
    assert worker.calls == 1
    assert not first.cached and second.cached and second.cost_usd == 0.0
    assert "".join(c.text for c in chunks) == "q"
    assert chunks[0].cache_kind == "exact" and chunks[0].similarity is None
    assert snapshot.cache_hits == 2 and snapshot.cache_hit_rate == 2 / 3


async def test_session_scoped_cache_does_not_cross_sessions() -> None:
    """With cache_scope=session, another session's identical request is not served its answer."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(cache_scope=CacheScope.SESSION), worker) as pipeline:
        await pipeline.infer(InferenceRequest("q", session_id="a"))
        await pipeline.infer(InferenceRequest("q", session_id="b"))
        again = await pipeline.infer(InferenceRequest("q", session_id="a"))
    assert worker.calls == 2
    assert again.cached


async def test_a_cancelled_leader_still_answers_its_followers() -> None:
    """If the first caller gives up, callers that joined its flight still get the answer."""
    worker = GatedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        leader = asyncio.create_task(pipeline.infer(InferenceRequest("q")))
        await settle()
        follower = asyncio.create_task(pipeline.infer(InferenceRequest("q")))
        await settle()
        leader.cancel()
        await settle()
        worker.gate.set()
        response = await follower
        snapshot = pipeline.snapshot()
    assert response.text == "q" and response.deduped
    assert worker.calls == 1
    assert snapshot.cancelled_total == 1 and snapshot.in_flight == 0
