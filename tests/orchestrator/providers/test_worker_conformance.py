"""The contract every HTTP worker keeps, run against each real worker and its fake upstream."""

from __future__ import annotations

import asyncio
import email.utils
import time
import traceback

import pytest
from fakes import CutStream, Fail, Hang, KeepAlive, Malformed, StallStream, StreamError

from orchestrator.errors import ProviderError
from orchestrator.providers.base import Worker
from orchestrator.request import InferenceRequest, Message, StreamChunk

from .harness import API_KEY, Provider

REPLY = "Hello from the fake upstream."
PROMPT = "Explain backpressure in one sentence."  # five words: five input tokens


async def collect(worker: Worker, request: InferenceRequest, **kwargs: float) -> list[StreamChunk]:
    return [chunk async for chunk in worker.stream(request, timeout_s=kwargs.get("timeout_s", 5))]


async def stream_error(worker: Worker, request: InferenceRequest, **kwargs: float) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await collect(worker, request, **kwargs)
    return caught.value


async def complete_error(
    worker: Worker, request: InferenceRequest, *, timeout_s: float = 5
) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await worker.complete(request, timeout_s=timeout_s)
    return caught.value


# --- happy path ---------------------------------------------------------------------------------


async def test_worker_satisfies_the_worker_protocol(provider: Provider) -> None:
    """Each worker is a `Worker` and names itself after its provider."""
    worker = provider.worker()
    assert isinstance(worker, Worker)
    assert worker.name == provider.name


async def test_complete_returns_the_answer_text(provider: Provider) -> None:
    """`complete` returns the upstream's answer text with finish reason 'stop'."""
    completion = await provider.worker().complete(InferenceRequest(PROMPT), timeout_s=5)
    assert completion.text == REPLY
    assert completion.finish_reason == "stop"


async def test_complete_reports_token_usage(provider: Provider) -> None:
    """`complete` reports the input and output tokens the upstream counted."""
    completion = await provider.worker().complete(InferenceRequest(PROMPT), timeout_s=5)
    input_tokens = completion.usage.input_tokens
    # llama.cpp counts the whole templated prompt; the chat APIs count the message words.
    assert input_tokens == 5 if provider.name != "llamacpp" else input_tokens > 5
    assert completion.usage.output_tokens == 5


async def test_stream_yields_the_answer_in_order(provider: Provider) -> None:
    """Concatenating the streamed chunks gives the full answer; indexes count up from 0."""
    chunks = await collect(provider.worker(), InferenceRequest(PROMPT))
    assert "".join(c.text for c in chunks) == REPLY
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert len(chunks) == 6  # five words, then the closing chunk


async def test_stream_ends_with_finish_reason_and_usage(provider: Provider) -> None:
    """Only the last chunk carries the finish reason and the token usage."""
    chunks = await collect(provider.worker(), InferenceRequest(PROMPT))
    *body, last = chunks
    assert all(c.finish_reason is None and c.usage is None for c in body)
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.output_tokens == 5


async def test_token_limit_is_reported_as_length(provider: Provider) -> None:
    """An answer cut by `max_tokens` finishes with reason 'length', streamed or not."""
    worker = provider.worker()
    request = InferenceRequest(PROMPT, max_tokens=2)
    completion = await worker.complete(request, timeout_s=5)
    chunks = await collect(worker, request)
    assert (completion.text, completion.finish_reason) == ("Hello from ", "length")
    assert chunks[-1].finish_reason == "length"


async def test_message_history_reaches_the_upstream(provider: Provider) -> None:
    """Every turn of a conversation and the system prompt are sent upstream."""
    request = InferenceRequest(
        messages=(Message("user", "first question"), Message("assistant", "first answer")),
        prompt="second question",
        system="be brief",
    )
    await provider.worker().complete(request, timeout_s=5)
    sent = str(provider.upstream.requests[0].body)
    for text in ("first question", "first answer", "second question", "be brief"):
        assert text in sent


async def test_many_concurrent_calls_share_one_worker(provider: Provider) -> None:
    """200 calls in flight at once through one worker are all answered."""
    worker = provider.worker()
    provider.upstream.hold()
    calls = [
        asyncio.create_task(worker.complete(InferenceRequest(PROMPT), timeout_s=10))
        for _ in range(200)
    ]
    await provider.upstream.wait_for_requests(200)
    provider.upstream.release()
    completions = await asyncio.gather(*calls)
    assert {c.text for c in completions} == {REPLY}


async def test_sequential_calls_reuse_one_connection(provider: Provider) -> None:
    """Plain and streamed calls one after another all travel over one kept-alive connection."""
    worker = provider.worker()
    for _ in range(3):
        await worker.complete(InferenceRequest(PROMPT), timeout_s=5)
        await collect(worker, InferenceRequest(PROMPT))
    assert len({r.client_port for r in provider.upstream.requests}) == 1


# --- error classification ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(provider: Provider, status: int) -> None:
    """A 5xx answer becomes a retryable ProviderError carrying the status."""
    provider.upstream.fail_next(Fail(status=status))
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert (error.status, error.retryable, error.provider) == (status, True, provider.name)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retryable(provider: Provider, status: int) -> None:
    """A 400/401/403/404 answer becomes a ProviderError that must not be retried."""
    provider.upstream.fail_next(Fail(status=status))
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert (error.status, error.retryable) == (status, False)


async def test_rate_limit_is_retryable_with_retry_after_seconds(provider: Provider) -> None:
    """A 429 with `Retry-After: 7` is retryable and carries `retry_after_s == 7`."""
    provider.upstream.fail_next(Fail(status=429, retry_after="7"))
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert (error.status, error.retryable, error.retry_after_s) == (429, True, 7.0)


async def test_retry_after_http_date_is_parsed(provider: Provider) -> None:
    """A `Retry-After` HTTP date becomes the seconds from now (by the injected wall clock)."""
    now = 1_800_000_000.0
    when = email.utils.formatdate(now + 120, usegmt=True)
    provider.upstream.fail_next(Fail(status=503, retry_after=when))
    worker = provider.worker(wall_clock=lambda: now)
    error = await complete_error(worker, InferenceRequest(PROMPT))
    assert error.retry_after_s == 120.0


async def test_stream_request_errors_are_classified_too(provider: Provider) -> None:
    """An error status on a streaming request is classified like on a plain one."""
    provider.upstream.fail_next(Fail(status=429, retry_after="3"), Fail(status=400))
    worker = provider.worker()
    limited = await stream_error(worker, InferenceRequest(PROMPT))
    rejected = await stream_error(worker, InferenceRequest(PROMPT))
    assert (limited.retryable, limited.retry_after_s) == (True, 3.0)
    assert (rejected.status, rejected.retryable) == (400, False)


async def test_a_failure_costs_exactly_one_upstream_call(provider: Provider) -> None:
    """The SDKs' own retries are off: a retryable failure reaches the upstream once."""
    provider.upstream.fail_next(Fail(status=503), Fail(status=429, retry_after="0"))
    worker = provider.worker()
    await complete_error(worker, InferenceRequest(PROMPT))
    await stream_error(worker, InferenceRequest(PROMPT))
    assert provider.upstream.request_count == 2


async def test_error_names_provider_and_status(provider: Provider) -> None:
    """The error text says which provider failed and with which HTTP status."""
    provider.upstream.fail_next(Fail(status=503, message="upstream is overloaded"))
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert str(error).startswith(f"{provider.name} (HTTP 503)")
    assert "upstream is overloaded" in str(error)


async def test_api_key_never_appears_in_errors(provider: Provider) -> None:
    """Even when the upstream echoes the key back, the error text and its chain hide it."""
    provider.upstream.fail_next(
        Fail(status=401, message=f"Incorrect API key provided: {API_KEY}"),
        Fail(status=400, message=f"bad request from {API_KEY}"),
    )
    worker = provider.worker()
    errors = [
        await complete_error(worker, InferenceRequest(PROMPT)),
        await stream_error(worker, InferenceRequest(PROMPT)),
    ]
    for error in errors:
        shown = "".join(traceback.format_exception(error)) + repr(error)
        assert API_KEY not in shown
    assert "Incorrect API key" in str(errors[0])
    assert API_KEY not in repr(worker)


@pytest.mark.parametrize(("status", "retryable"), [(529, True), (500, True), (400, False)])
async def test_error_inside_an_open_stream_is_classified(
    provider: Provider, status: int, retryable: bool
) -> None:
    """An error event sent mid-stream (HTTP 200) is classified by the status it stands for."""
    provider.upstream.fail_next(StreamError(after_chunks=2, status=status))
    error = await stream_error(provider.worker(), InferenceRequest(PROMPT))
    assert (error.status, error.retryable) == (status, retryable)


# --- time -------------------------------------------------------------------------------------


async def test_hung_upstream_times_out_within_timeout(provider: Provider) -> None:
    """An upstream that never answers yields a retryable timeout error after `timeout_s`."""
    provider.upstream.fail_next(Hang())
    started = time.monotonic()
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT), timeout_s=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert error.retryable and "timed out" in str(error)


async def test_stalled_stream_times_out(provider: Provider) -> None:
    """A stream that goes silent for `stall_timeout_s` fails retryably, well before `timeout_s`."""
    provider.upstream.fail_next(StallStream(after_chunks=2))
    worker = provider.worker(stall_timeout_s=0.2)
    started = time.monotonic()
    error = await stream_error(worker, InferenceRequest(PROMPT), timeout_s=5)
    assert time.monotonic() - started < 1.0
    assert error.retryable and "stalled" in str(error)


async def test_keep_alives_keep_a_slow_stream_from_stalling(provider: Provider) -> None:
    """A pause longer than the stall limit is no stall while keep-alive bytes arrive."""
    provider.upstream.fail_next(KeepAlive(after_chunks=1, pause_s=0.5, every_s=0.05))
    worker = provider.worker(stall_timeout_s=0.2)
    chunks = await collect(worker, InferenceRequest(PROMPT), timeout_s=5)
    assert "".join(c.text for c in chunks) == REPLY


async def test_stream_deadline_covers_the_whole_stream(provider: Provider) -> None:
    """`timeout_s` bounds the whole stream, even when the stall limit is longer."""
    provider.upstream.fail_next(StallStream(after_chunks=1))
    worker = provider.worker(stall_timeout_s=30)
    started = time.monotonic()
    error = await stream_error(worker, InferenceRequest(PROMPT), timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    assert error.retryable and "timed out" in str(error)


async def test_stalled_body_of_a_plain_request_times_out(provider: Provider) -> None:
    """A plain answer whose body stops arriving fails at `timeout_s`."""
    provider.upstream.fail_next(StallStream())
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT), timeout_s=0.2)
    assert error.retryable


# --- broken streams and connections ------------------------------------------------------------


async def test_stream_cut_mid_answer_raises(provider: Provider) -> None:
    """A connection dropped mid-stream raises a retryable error, never a short 'complete' answer."""
    provider.upstream.fail_next(CutStream(after_chunks=2))
    received: list[StreamChunk] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider.worker().stream(InferenceRequest(PROMPT), timeout_s=5):
            received.append(chunk)
    assert caught.value.retryable
    assert [c.finish_reason for c in received] == [None, None]


async def test_stream_ended_without_end_marker_raises(provider: Provider) -> None:
    """A cleanly closed body that lacks the end-of-answer marker is still a cut answer."""
    provider.upstream.fail_next(CutStream(after_chunks=3, abrupt=False))
    error = await stream_error(provider.worker(), InferenceRequest(PROMPT))
    assert error.retryable and "before the answer was complete" in str(error)


async def test_plain_answer_cut_mid_body_raises(provider: Provider) -> None:
    """A plain answer whose body is cut halfway raises a retryable error."""
    provider.upstream.fail_next(CutStream())
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert error.retryable


async def test_malformed_stream_event_is_a_retryable_provider_error(provider: Provider) -> None:
    """An event whose JSON does not parse fails as a retryable ProviderError, not a raw one."""
    provider.upstream.fail_next(Malformed(after_chunks=2))
    error = await stream_error(provider.worker(), InferenceRequest(PROMPT))
    assert error.retryable


async def test_malformed_answer_is_a_retryable_provider_error(provider: Provider) -> None:
    """A plain answer whose JSON does not parse fails as a retryable ProviderError."""
    provider.upstream.fail_next(Malformed())
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert error.retryable


async def test_dead_upstream_is_a_retryable_connection_error(provider: Provider) -> None:
    """With the upstream down, a call fails fast and retryably, without an HTTP status."""
    await provider.upstream.stop()
    error = await complete_error(provider.worker(), InferenceRequest(PROMPT))
    assert error.retryable and error.status is None
    assert API_KEY not in str(error)


async def test_upstream_that_dies_and_comes_back_is_served_again(provider: Provider) -> None:
    """After the upstream restarts on its port, the same worker is served again."""
    worker = provider.worker()
    await worker.complete(InferenceRequest(PROMPT), timeout_s=5)
    await provider.upstream.stop()
    await complete_error(worker, InferenceRequest(PROMPT))
    await provider.upstream.restart()
    completion = await worker.complete(InferenceRequest(PROMPT), timeout_s=5)
    assert completion.text == REPLY


# --- cancellation --------------------------------------------------------------------------------


async def test_cancelling_complete_hangs_up_on_the_upstream(provider: Provider) -> None:
    """Cancelling the awaiting task closes the upstream request promptly."""
    provider.upstream.fail_next(Hang())
    call = asyncio.create_task(provider.worker().complete(InferenceRequest(PROMPT), timeout_s=30))
    await provider.upstream.wait_for_requests(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await provider.upstream.wait_for_disconnects(1, timeout_s=2)


async def test_closing_a_stream_early_hangs_up_on_the_upstream(provider: Provider) -> None:
    """A consumer that stops reading and closes the stream releases the upstream request."""
    provider.upstream.fail_next(StallStream(after_chunks=1))
    chunks = provider.worker().stream(InferenceRequest(PROMPT), timeout_s=30)
    first = await anext(chunks)
    await chunks.aclose()
    assert first.text == "Hello "
    await provider.upstream.wait_for_disconnects(1, timeout_s=2)


async def test_cancelling_a_stream_consumer_hangs_up_on_the_upstream(provider: Provider) -> None:
    """Cancelling a task that is reading a stream closes the upstream request."""
    provider.upstream.fail_next(StallStream(after_chunks=1))
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.worker().stream(InferenceRequest(PROMPT), timeout_s=30):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.upstream.wait_for_disconnects(1, timeout_s=2)
