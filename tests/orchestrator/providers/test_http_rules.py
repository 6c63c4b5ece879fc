"""The rules the HTTP workers share: status classification, Retry-After, redaction, call timing."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from orchestrator.errors import ProviderError
from orchestrator.providers._http import (
    CallTimer,
    connection_error,
    describe_body,
    is_retryable_status,
    parse_retry_after,
    redact,
    status_error,
)

NOW = 1_800_000_000.0


def fixed_now() -> float:
    return NOW


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_rate_limits_timeouts_and_server_errors_are_retryable(status: int) -> None:
    """408, 409, 429 and every 5xx (Anthropic's 529 included) are worth retrying."""
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_other_client_errors_are_not_retryable(status: int) -> None:
    """Requests the server rejected as wrong will be rejected again."""
    assert not is_retryable_status(status)


def test_retry_after_in_seconds() -> None:
    """`Retry-After: 12` means twelve seconds."""
    assert parse_retry_after({"Retry-After": "12"}) == 12.0


def test_retry_after_as_http_date() -> None:
    """An HTTP-date `Retry-After` is measured from the injected wall clock."""
    header = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=fixed_now) == 30.0


def test_retry_after_in_the_past_is_zero() -> None:
    """A date already passed means retry now, never a negative wait."""
    header = email.utils.formatdate(NOW - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=fixed_now) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    """The finer `retry-after-ms` header, when sent, takes precedence."""
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25


@pytest.mark.parametrize("value", ["soon", "", "nan", "inf"])
def test_unreadable_retry_after_is_ignored(value: str) -> None:
    """A Retry-After we cannot read is treated as absent."""
    assert parse_retry_after({"Retry-After": value}) is None


def test_missing_retry_after_is_none() -> None:
    """No header, no hint."""
    assert parse_retry_after({}) is None


def test_status_error_carries_classification_and_hint() -> None:
    """A 429 becomes a retryable ProviderError naming provider, status and the wait."""
    error = status_error("acme", 429, "slow down", {"Retry-After": "4"})
    assert isinstance(error, ProviderError)
    assert (error.provider, error.status, error.retryable, error.retry_after_s) == (
        "acme",
        429,
        True,
        4.0,
    )
    assert str(error) == "acme (HTTP 429): slow down (retry after 4s)"


def test_server_can_forbid_a_retry() -> None:
    """`x-should-retry: false` overrides the status rule (and `true` the other way)."""
    assert not status_error("acme", 503, "down", {"x-should-retry": "false"}).retryable
    assert status_error("acme", 400, "odd", {"x-should-retry": "true"}).retryable


def test_status_error_redacts_secrets() -> None:
    """A secret echoed in the upstream's message is replaced before it reaches the error."""
    error = status_error("acme", 401, "bad key sk-123456", {}, secrets=("sk-123456",))
    assert "sk-123456" not in str(error)


def test_connection_error_is_retryable_and_redacted() -> None:
    """A transport failure is retryable and names its cause without the secret."""
    cause = OSError("connect to http://u:sk-123456@host failed")
    error = connection_error("acme", "connection failed", cause, secrets=("sk-123456",))
    assert error.retryable and error.status is None
    assert "sk-123456" not in str(error) and "OSError" in str(error)


def test_redact_ignores_empty_secrets() -> None:
    """An empty or missing secret redacts nothing."""
    assert redact("plain text", ("", None)) == "plain text"


def test_describe_body_reads_provider_error_shapes() -> None:
    """Anthropic, OpenAI and llama.cpp error bodies all summarise as `type: message`."""
    assert describe_body({"type": "error", "error": {"type": "x", "message": "y"}}) == "x: y"
    assert describe_body({"type": "x", "message": "y"}) == "x: y"
    assert describe_body("plain") == "plain"
    assert describe_body(None) == ""


async def test_timer_lets_a_fast_call_through() -> None:
    """An awaitable that finishes in time returns its value."""
    timer = CallTimer("acme", 1.0, 1.0)
    assert await timer.within(asyncio.sleep(0, result=42)) == 42


async def test_timer_turns_its_deadline_into_a_retryable_error() -> None:
    """The whole-call deadline raises a retryable ProviderError saying it timed out."""
    timer = CallTimer("acme", 0.05, 10.0)
    with pytest.raises(ProviderError, match="timed out") as caught:
        await timer.within(asyncio.Event().wait())
    assert caught.value.retryable


async def test_timer_reports_a_stall_separately() -> None:
    """Silence longer than the stall limit raises a 'stalled' error before the deadline."""
    timer = CallTimer("acme", 10.0, 0.05)
    with pytest.raises(ProviderError, match="stalled"):
        await timer.within(asyncio.Event().wait(), stall=True)


async def test_timer_does_not_swallow_foreign_timeouts() -> None:
    """A TimeoutError raised by the awaited call itself is not mistaken for ours."""

    async def fails() -> None:
        raise TimeoutError("from below")

    timer = CallTimer("acme", 10.0, 10.0)
    with pytest.raises(TimeoutError, match="from below"):
        await timer.within(fails())


@pytest.mark.parametrize(("name", "args"), [("timeout_s", (0, 1)), ("stall_timeout_s", (1, -1))])
async def test_timer_rejects_non_positive_limits(name: str, args: tuple[float, float]) -> None:
    """Limits must be positive; the error names the parameter."""
    with pytest.raises(ValueError, match=name):
        CallTimer("acme", *args)
