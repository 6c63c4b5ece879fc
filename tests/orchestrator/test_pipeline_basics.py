"""Pipeline front door: the issue's example, responses, streams, lifecycle, validation."""

from __future__ import annotations

import pytest
from pipeline_fakes import ScriptedWorker

from orchestrator import (
    EchoWorker,
    InferenceRequest,
    InferenceResponse,
    Pipeline,
    PipelineClosed,
    PipelineConfig,
)


async def test_the_issue_example_runs() -> None:
    """`async with Pipeline(PipelineConfig(), EchoWorker())` answers and streams."""
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(InferenceRequest("Explain backpressure in one sentence."))
        chunks = [c async for c in pipeline.stream(InferenceRequest("one two three"))]
    assert response.text == "Explain backpressure in one sentence."
    assert "".join(c.text for c in chunks) == "one two three"
    assert chunks[-1].finish_reason == "stop"


async def test_response_says_who_answered_and_what_it_cost() -> None:
    """Provider, model, usage, request id and a measured latency come back."""
    request = InferenceRequest("hello")
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(request)
    assert (response.provider, response.model) == ("echo", "echo")
    assert response.request_id == request.request_id
    assert response.usage.output_tokens == 2
    assert response.latency_ms > 0
    assert not response.deduped and not response.cached


async def test_answers_are_normalised() -> None:
    """Post-process turns CRLF into LF and trims trailing blanks."""
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        response = await pipeline.infer(InferenceRequest("line one  \r\nline two\r\n"))
    assert response.text == "line one\nline two"


async def test_quality_hooks_see_every_final_answer() -> None:
    """Hooks get completions and finished streams; a failing hook does not fail the request."""
    seen: list[str] = []

    def record(request: InferenceRequest, response: InferenceResponse) -> None:
        seen.append(response.text)

    def broken(request: InferenceRequest, response: InferenceResponse) -> None:
        raise RuntimeError("hook bug")

    async with Pipeline(PipelineConfig(), EchoWorker(), quality_hooks=[record, broken]) as pipeline:
        await pipeline.infer(InferenceRequest("a b"))
        [c async for c in pipeline.stream(InferenceRequest("c d"))]
        assert pipeline.postprocess.hook_errors == 2
    assert seen == ["a b", "c d"]


async def test_quality_hooks_get_the_whole_response_for_plain_and_streamed_answers() -> None:
    """A hook sees the same `InferenceResponse` fields (provider, model, usage, cost,
    latency, request id) whether the answer was a completion or a stream."""
    seen: list[InferenceResponse] = []
    async with Pipeline(
        PipelineConfig(), EchoWorker(), quality_hooks=[lambda q, r: seen.append(r)]
    ) as pipeline:
        plain = await pipeline.infer(InferenceRequest("plain answer", request_id="r-plain"))
        [c async for c in pipeline.stream(InferenceRequest("streamed one", request_id="r-s"))]
    assert [r.request_id for r in seen] == ["r-plain", "r-s"]
    assert seen[0] == plain
    streamed = seen[1]
    assert streamed.text == "streamed one"
    assert (streamed.provider, streamed.model) == ("echo", "echo")
    assert streamed.usage.output_tokens > 0 and streamed.latency_ms >= 0
    assert streamed.cost_usd == 0.0 and not streamed.cached and not streamed.deduped


async def test_template_and_system_prompt_are_assembled() -> None:
    """The configured system prompt comes before the request's; the template wraps the prompt."""
    worker = ScriptedWorker()
    config = PipelineConfig(system_prompt="You are terse.", prompt_template="Q: {prompt}")
    async with Pipeline(config, worker) as pipeline:
        await pipeline.infer(InferenceRequest("why?", system="Answer in French."))
    sent = worker.requests[0]
    assert sent.system == "You are terse.\n\nAnswer in French."
    assert sent.messages_or_prompt[-1].content == "Q: why?"


async def test_requests_before_start_are_refused() -> None:
    """Using a pipeline outside `async with` raises RuntimeError."""
    pipeline = Pipeline(PipelineConfig(), EchoWorker())
    with pytest.raises(RuntimeError, match="async with"):
        await pipeline.infer(InferenceRequest("hi"))


async def test_closing_fails_pending_requests_and_closes_workers() -> None:
    """On exit, requests still waiting fail with PipelineClosed and workers are closed."""
    worker = ScriptedWorker()
    pipeline = Pipeline(PipelineConfig(), worker)
    await pipeline.start()
    job = pipeline._submit(InferenceRequest("never answered"), stream=False)
    await pipeline.aclose()
    with pytest.raises(PipelineClosed):
        await job.future
    assert worker.closed


def test_constructor_validates_workers() -> None:
    """No workers, duplicate names, or an unknown fallback name are errors naming the problem."""
    with pytest.raises(ValueError, match="workers"):
        Pipeline(PipelineConfig())
    with pytest.raises(ValueError, match="unique"):
        Pipeline(PipelineConfig(), EchoWorker(), EchoWorker())
    with pytest.raises(ValueError, match="fallback_order"):
        Pipeline(PipelineConfig(fallback_order=("nope",)), EchoWorker())
