"""The REPL: prompts in, answers streamed out through the pipeline."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
from collections.abc import AsyncIterator

import httpx
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
from orchestrator.server.app import create_app
from orchestrator.server.runner import ServerTask
from orchestrator.settings import ServerSettings


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

    assert sorted(module.__all__) == ["EXIT_WORDS", "FEEDBACK_COMMANDS", "PROMPT", "run_repl"]


async def test_rating_commands_reach_the_feedback_log_the_server_reports() -> None:
    """/good, /wrong and /stale rate the last answer by its request id in the feedback log
    of the pipeline the web API serves: /v1/status counts them and the stale rate moves. A
    rating is not a prompt; before any answer there is nothing to rate."""
    async with Pipeline(PipelineConfig(), EchoWorker()) as pipeline:
        app = create_app(
            pipeline, settings=ServerSettings(provider="echo", port=0), start_pipeline=False
        )
        async with ServerTask(app) as url, httpx.AsyncClient(base_url=url) as http:
            before = (await http.get("/v1/status")).json()["feedback"]
            assert before["received_total"] == 0 and "stale_rate" not in before
            first = Recorder()
            await run_repl(
                pipeline,
                stdout=first,
                stdin=io.StringIO("/good\nthe capital of France\n/wrong   says Lyon\n/good\n"),
            )
            # a new session asks again: the exact cache answers, and it was out of date
            second = Recorder()
            answered = await run_repl(
                pipeline, stdout=second, stdin=io.StringIO("the capital of France\n/STALE moved\n")
            )
            after = (await http.get("/v1/status")).json()["feedback"]
    assert answered == 1
    lines = [line for line in first.getvalue().split("\n") if "[feedback]" in line]
    assert "no answer to rate" in lines[0]
    (request_id,) = set(re.findall(r"for (\S+):", "\n".join(lines[1:])))
    assert "recorded score -1, comment 'says Lyon' for" in lines[1]
    assert lines[1].endswith("answered by echo/echo") and "score +1" in lines[2]
    assert pipeline.feedback.get(request_id).score == 1.0  # the newer verdict replaced
    (stale_line,) = [line for line in second.getvalue().split("\n") if "[feedback]" in line]
    assert "recorded stale (out of date), comment 'moved'" in stale_line
    assert "cache or dedup" in stale_line
    assert after["received_total"] == 3 and after["attributed_total"] == 3
    assert after["stale_total"] == 1 and after["cache_served_total"] == 1
    assert after["stale_rate"] == 1.0
    assert pipeline.snapshot().completed_total == 2  # ratings never went to the provider


async def test_a_failed_answer_is_not_rated() -> None:
    """After an error, /wrong has no answer to rate (not the one before the error)."""
    refusal = ProviderError("scripted", "bad request", status=400, retryable=False)
    out = io.StringIO()
    async with Pipeline(PipelineConfig(), ScriptedWorker(script=[None, refusal])) as pipeline:
        await run_repl(pipeline, stdin=io.StringIO("one\ntwo\n/wrong\n"), stdout=out)
        assert pipeline.feedback.received_total == 0
    assert "[feedback] no answer to rate" in out.getvalue()
