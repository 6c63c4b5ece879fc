"""The REPL: prompts in, answers streamed out through the pipeline."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import AsyncIterator

from pipeline_fakes import ScriptedWorker

from orchestrator import (
    Completion,
    EchoWorker,
    InferenceRequest,
    Pipeline,
    PipelineConfig,
    ProviderError,
    StreamChunk,
    Usage,
)
from orchestrator.repl import PROMPT, run_repl


class Recorder(io.StringIO):
    """A stdout that remembers each write, so a test can see the answer arrive in pieces."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_answer_is_streamed_from_the_echo_provider() -> None:
    """A typed prompt comes back from the echo provider, written chunk by chunk."""
    out = Recorder()
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        answered = await run_repl(
            pipeline, stdin=io.StringIO("tell me about backpressure\nexit\n"), stdout=out
        )
    assert answered == 1
    assert "tell me about backpressure\n" in out.getvalue()
    assert out.writes[1:5] == ["tell ", "me ", "about ", "backpressure"]
    assert pipeline.snapshot().completed_total == 1


async def test_exit_words_and_end_of_input_leave() -> None:
    """`quit` stops reading; input after it is never sent; end of input also leaves."""
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        out = io.StringIO()
        assert await run_repl(pipeline, stdin=io.StringIO("one\nquit\ntwo\n"), stdout=out) == 1
        assert "two" not in out.getvalue()
        assert await run_repl(pipeline, stdin=io.StringIO("three\n"), stdout=io.StringIO()) == 1
        assert await run_repl(pipeline, stdin=io.StringIO(""), stdout=io.StringIO()) == 0


async def test_blank_lines_are_skipped() -> None:
    """An empty line just shows the prompt again."""
    out = io.StringIO()
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        assert await run_repl(pipeline, stdin=io.StringIO("\n  \nhi\n"), stdout=out) == 1
    assert out.getvalue().count(PROMPT) == 4  # three lines read, then end of input


async def test_pipeline_error_is_shown_and_the_repl_goes_on() -> None:
    """A failed answer prints the error; the next prompt is still answered."""
    out = io.StringIO()
    refusal = ProviderError("scripted", "bad request", status=400, retryable=False)
    async with Pipeline(PipelineConfig(), ScriptedWorker(script=[refusal])) as pipeline:
        answered = await run_repl(pipeline, stdin=io.StringIO("first\nsecond\n"), stdout=out)
    assert answered == 1
    assert "[error] scripted (HTTP 400): bad request" in out.getvalue()
    assert f"{PROMPT}second\n" in out.getvalue()


async def test_the_conversation_goes_with_each_prompt() -> None:
    """The second prompt carries the first exchange as history."""
    worker = ScriptedWorker()
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        await run_repl(pipeline, stdin=io.StringIO("one\ntwo\n"), stdout=io.StringIO())
    contents = [m.content for m in worker.requests[1].messages_or_prompt]
    assert contents == ["one", "one", "two"]


class StuckOnce:
    """A worker whose first stream never finishes (after one chunk); later calls echo."""

    name = "stuck"
    default_model = "echo"

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.calls = 0

    async def complete(self, request: InferenceRequest, *, timeout_s: float) -> Completion:
        raise NotImplementedError

    async def stream(
        self, request: InferenceRequest, *, timeout_s: float
    ) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        text = request.messages_or_prompt[-1].content
        if self.calls == 1:
            yield StreamChunk(text="partial ", index=0)
            self.entered.set()
            await asyncio.Event().wait()  # never set: only a cancellation ends this answer
        yield StreamChunk(text=text, index=0, finish_reason="stop", usage=Usage())

    async def aclose(self) -> None:
        return None


async def test_ctrl_c_stops_the_answer_not_the_repl() -> None:
    """Ctrl-C (SIGINT) while an answer streams stops that answer; the next prompt is answered
    and the program's own Ctrl-C handling is back afterwards."""
    worker = StuckOnce()
    out = io.StringIO()
    before = signal.getsignal(signal.SIGINT)
    async with Pipeline(PipelineConfig(), worker) as pipeline:
        repl = asyncio.create_task(
            run_repl(pipeline, stdin=io.StringIO("hang\nafter\n"), stdout=out)
        )
        await worker.entered.wait()
        os.kill(os.getpid(), signal.SIGINT)
        answered = await repl
    assert answered == 1
    assert "partial \n[interrupted]\n" in out.getvalue()
    assert f"{PROMPT}after\n" in out.getvalue()
    assert signal.getsignal(signal.SIGINT) is before


def test_public_surface() -> None:
    """The REPL module exports exactly its documented names."""
    from orchestrator import repl as module

    assert sorted(module.__all__) == ["EXIT_WORDS", "PROMPT", "run_repl"]
