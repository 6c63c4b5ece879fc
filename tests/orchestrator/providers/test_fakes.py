"""The fake upstreams' controls behave as the pipeline tests will rely on them."""

from __future__ import annotations

import asyncio

from fakes import Fail, FakeOpenAI

from orchestrator.errors import ProviderError
from orchestrator.providers.openai import OpenAIWorker
from orchestrator.request import InferenceRequest


async def outcome(worker: OpenAIWorker) -> int | str:
    """The HTTP status of a failed call, or 'ok'."""
    try:
        await worker.complete(InferenceRequest("hi"), timeout_s=5)
    except ProviderError as error:
        return error.status or 0
    return "ok"


async def test_queued_faults_are_used_once_each_in_order(fake_openai: FakeOpenAI) -> None:
    """`fail_next` faults apply to the next requests, one each, then the server is healthy."""
    fake_openai.fail_next(Fail(status=500), Fail(status=429))
    worker = OpenAIWorker(base_url=fake_openai.api_url)
    try:
        results = [await outcome(worker) for _ in range(3)]
    finally:
        await worker.aclose()
    assert results == [500, 429, "ok"]


async def test_persistent_fault_lasts_until_healed(fake_openai: FakeOpenAI) -> None:
    """`fail_always` fails every request until `fail_always(None)`."""
    fake_openai.fail_always(Fail(status=503))
    worker = OpenAIWorker(base_url=fake_openai.api_url)
    try:
        failing = [await outcome(worker) for _ in range(2)]
        fake_openai.fail_always(None)
        healed = await outcome(worker)
    finally:
        await worker.aclose()
    assert (failing, healed) == ([503, 503], "ok")


async def test_held_requests_are_counted_before_release(fake_openai: FakeOpenAI) -> None:
    """Held requests are counted on arrival and answered only after `release()`."""
    fake_openai.hold()
    worker = OpenAIWorker(base_url=fake_openai.api_url)
    try:
        calls = [asyncio.create_task(outcome(worker)) for _ in range(3)]
        await fake_openai.wait_for_requests(3)
        assert not any(call.done() for call in calls)
        fake_openai.release()
        assert await asyncio.gather(*calls) == ["ok", "ok", "ok"]
    finally:
        await worker.aclose()
    assert fake_openai.request_count == 3


async def test_restart_keeps_the_url(fake_openai: FakeOpenAI) -> None:
    """A fake that dies and comes back listens at the same URL."""
    url = fake_openai.url
    await fake_openai.stop()
    await fake_openai.restart()
    assert fake_openai.url == url
