"""How the HTTP providers turn upstream failures and slow streams into `ProviderError`.

Shared by the Anthropic, OpenAI and llama.cpp workers so that all three classify a status,
read `Retry-After`, keep API keys out of messages and time out a stalled stream the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from orchestrator.errors import ProviderError

T = TypeVar("T")

HOP_HEADER = "x-orchestrator-hop"
"""Sent on every upstream call with `HOP_ID`, so a server that receives its own id knows the
request looped back into it (an upstream URL pointing at the server itself) and refuses it."""
HOP_ID = secrets.token_hex(8)
"""This process's id in `HOP_HEADER`: one per process, shared by its workers and its server."""
HOP_HEADERS = {HOP_HEADER: HOP_ID}

ANTHROPIC_API_URL = "https://api.anthropic.com"
OPENAI_API_URL = "https://api.openai.com/v1"
# Passed to the SDKs explicitly: given None they read ANTHROPIC_BASE_URL / OPENAI_BASE_URL from
# the environment, which on an agent's machine point *at this server*.

_RETRYABLE_4XX = frozenset({408, 409, 429})
_REDACTED = "[redacted]"
_MAX_DETAIL_CHARS = 500


def check_worker_args(
    *, model: str, name: str, stall_timeout_s: float, max_connections: int
) -> None:
    """The constructor checks every HTTP worker shares; raises ValueError naming the bad one."""
    if not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not stall_timeout_s > 0:
        raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s!r}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")


def is_retryable_status(status: int) -> bool:
    """True for statuses worth trying again: 408, 409, 429 and every 5xx (Anthropic's 529 too)."""
    return status in _RETRYABLE_4XX or status >= 500


def parse_retry_after(
    headers: Mapping[str, str], *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds the server asked us to wait, or None when it did not say.

    Reads `retry-after-ms` (sent by OpenAI and Anthropic) first, then `retry-after` as delta
    seconds or an HTTP date (compared against `now()`, Unix seconds). Never negative.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _finite_float(raw_ms)
        if seconds is not None:
            return max(0.0, seconds / 1000.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def _finite_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced by a marker, in any letter case (an
    upstream may echo a key back upper- or lower-cased)."""
    for secret in secrets:
        if secret:
            text = re.sub(re.escape(secret), _REDACTED, text, flags=re.IGNORECASE)
    return text


def describe_body(body: object) -> str:
    """A short human summary of an error body: `type: message` when the body has them."""
    error = body.get("error", body) if isinstance(body, Mapping) else body
    if isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
        parts = [str(p) for p in (kind, message) if p]
        text = ": ".join(parts) if parts else str(dict(error))
    elif error is None:
        text = ""
    else:
        text = str(error)
    return text[:_MAX_DETAIL_CHARS]


def status_error(
    provider: str,
    status: int,
    detail: str,
    headers: Mapping[str, str],
    *,
    secrets: Iterable[str | None] = (),
    now: Callable[[], float] = time.time,
) -> ProviderError:
    """The `ProviderError` for an HTTP error status, classified and carrying Retry-After.

    An explicit `x-should-retry: true|false` header from the server overrides the status rule.
    """
    retryable = is_retryable_status(status)
    should_retry = {k.lower(): v for k, v in headers.items()}.get("x-should-retry")
    if should_retry in ("true", "false"):
        retryable = should_retry == "true"
    retry_after_s = parse_retry_after(headers, now=now)
    message = redact(detail, secrets) or "upstream returned an error"
    if retry_after_s is not None:
        message += f" (retry after {retry_after_s:g}s)"
    return ProviderError(
        provider, message, status=status, retryable=retryable, retry_after_s=retry_after_s
    )


def connection_error(
    provider: str, what: str, exc: BaseException, *, secrets: Iterable[str | None] = ()
) -> ProviderError:
    """A retryable `ProviderError` for a failed connection or a broken response body."""
    # SDKs wrap the transport error in a generic one; the cause says what actually happened.
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    reason = " ".join(redact(f"{type(cause).__name__}: {cause}", secrets).split()).rstrip(":")
    return ProviderError(provider, f"{what}: {reason}"[:_MAX_DETAIL_CHARS], retryable=True)


def truncated_stream_error(provider: str, received_chunks: int) -> ProviderError:
    """A retryable `ProviderError` for a stream that ended before its end-of-answer marker."""
    return ProviderError(
        provider,
        f"stream ended before the answer was complete (after {received_chunks} text chunks)",
        retryable=True,
    )


def stalled_error(provider: str, stall_timeout_s: float) -> ProviderError:
    """A retryable `ProviderError` for a stream that sent no bytes for `stall_timeout_s`."""
    return ProviderError(
        provider, f"stream stalled: no data for {stall_timeout_s:g}s", retryable=True
    )


class CallTimer:
    """One upstream call's time budget: a whole-call deadline plus a limit on stream silence.

    Create it inside the running loop when the call starts. `within(awaitable)` awaits under
    the time left; `within(awaitable, stall=True)` also gives up after `stall_timeout_s`
    (use it around raw reads, where any byte counts). Either raises a retryable
    `ProviderError`. Only the timer's own expiry is translated: a `TimeoutError` raised by
    the awaitable itself propagates.
    """

    def __init__(self, provider: str, timeout_s: float, stall_timeout_s: float) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not stall_timeout_s > 0:
            raise ValueError(f"stall_timeout_s must be > 0, got {stall_timeout_s!r}")
        self._provider = provider
        self._timeout_s = timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout_s

    async def within(self, awaitable: Awaitable[T], *, stall: bool = False) -> T:
        """Await `awaitable` under the remaining budget (and the stall limit if `stall`)."""
        remaining = self._deadline - self._loop.time()
        stalled = stall and self._stall_timeout_s < remaining
        limit = self._stall_timeout_s if stalled else remaining
        if limit <= 0:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise self._expired()
        timeout = asyncio.timeout(limit)
        try:
            async with timeout:
                return await awaitable
        except TimeoutError:
            if not timeout.expired():
                raise
            if stalled:
                raise stalled_error(self._provider, self._stall_timeout_s) from None
            raise self._expired() from None

    def _expired(self) -> ProviderError:
        return ProviderError(
            self._provider,
            f"timed out: no complete answer within {self._timeout_s:g}s",
            retryable=True,
        )
