"""How errors leave the HTTP server: the status for each pipeline error, and the three JSON
shapes (ours, Anthropic's, OpenAI's), chosen by the path the client called.

Every error a client can cause answers 4xx naming the field; the pipeline's own refusals map to
the status a client of that API expects (`Overloaded` → 503, or 529 `overloaded_error` on the
Anthropic path; `BudgetExceeded` → 402; `DeadlineExceeded` → 504; an upstream 429 → 429 and
an upstream 529 → 529 (503 to OpenAI clients), each with its Retry-After; other upstream
failures → 502).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError

from orchestrator.errors import (
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    InvalidRequest,
    InvalidTunable,
    OrchestratorError,
    Overloaded,
    PipelineClosed,
    ProviderError,
)
from orchestrator.server.responses import JsonResponse

__all__ = [
    "ApiError",
    "Dialect",
    "RequestRejected",
    "bad_request",
    "dialect_of",
    "error_response",
    "field_path",
    "from_exception",
    "validation_error",
]

Dialect = Literal["native", "anthropic", "openai"]

log = logging.getLogger(__name__)

_ANTHROPIC_PATHS = ("/v1/messages",)
_OPENAI_PATHS = (
    "/v1/chat/completions",
    "/v1/models",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
)


def dialect_of(path: str) -> Dialect:
    """Which API's error shape a client calling `path` understands."""
    if path.startswith(_ANTHROPIC_PATHS):
        return "anthropic"
    if path.startswith(_OPENAI_PATHS):
        return "openai"
    return "native"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiError:
    """One error, ready to render in any dialect.

    `kind` is our own error type; `anthropic_type` / `openai_type` are the names those APIs use
    for it; `field` names the offending request field when there is one.
    """

    status: int
    kind: str
    message: str
    field: str | None = None
    anthropic_type: str = "invalid_request_error"
    anthropic_status: int | None = None
    openai_type: str = "invalid_request_error"
    openai_code: str | None = None
    openai_status: int | None = None
    retry_after_s: float | None = None

    def status_for(self, dialect: Dialect) -> int:
        if dialect == "anthropic" and self.anthropic_status is not None:
            return self.anthropic_status
        if dialect == "openai" and self.openai_status is not None:
            return self.openai_status
        return self.status

    def body_for(self, dialect: Dialect) -> dict[str, Any]:
        if dialect == "anthropic":
            return {
                "type": "error",
                "error": {"type": self.anthropic_type, "message": self.message},
            }
        if dialect == "openai":
            return {
                "error": {
                    "message": self.message,
                    "type": self.openai_type,
                    "param": self.field,
                    "code": self.openai_code,
                }
            }
        body: dict[str, Any] = {"type": self.kind, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {"error": body}


class RequestRejected(OrchestratorError):
    """Raised by a router for a request it will not serve; rendered as `error`."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        super().__init__(error.message)


def bad_request(message: str, *, field: str | None = None) -> ApiError:
    """A 400 the client caused."""
    return ApiError(status=400, kind="invalid_request", message=message, field=field)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "messages", 0, "content")` → `"messages[0].content"`."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def validation_error(exc: RequestValidationError) -> ApiError:
    """A 400 naming the first invalid field (`messages[0].content: Field required`)."""
    errors = exc.errors()
    if not errors:
        return bad_request("invalid request body", field="body")
    first = errors[0]
    field = field_path(first.get("loc", ()))
    message = f"{field}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return bad_request(message, field=field)


def from_exception(exc: BaseException) -> ApiError:
    """The `ApiError` for an exception the pipeline (or request validation) raised."""
    if isinstance(exc, RequestRejected):
        return exc.error
    if isinstance(exc, Overloaded):
        return ApiError(
            status=503,
            kind="overloaded",
            message=str(exc),
            anthropic_type="overloaded_error",
            anthropic_status=529,
            openai_type="server_error",
            openai_code="overloaded",
            retry_after_s=1.0,
        )
    if isinstance(exc, BudgetExceeded):
        return ApiError(
            status=402,
            kind="budget_exceeded",
            message=str(exc),
            anthropic_type="billing_error",
            openai_type="insufficient_quota",
            openai_code="insufficient_quota",
            openai_status=429,
        )
    if isinstance(exc, DeadlineExceeded):
        return ApiError(
            status=504,
            kind="deadline_exceeded",
            message=str(exc),
            anthropic_type="timeout_error",
            openai_type="timeout",
            openai_code="timeout",
        )
    if isinstance(exc, PipelineClosed):
        return ApiError(
            status=503,
            kind="unavailable",
            message="the server is shutting down",
            anthropic_type="api_error",
            openai_type="server_error",
        )
    if isinstance(exc, CircuitOpen):
        return ApiError(
            status=503,
            kind="provider_unavailable",
            message=str(exc),
            anthropic_type="overloaded_error",
            anthropic_status=529,
            openai_type="server_error",
            openai_code="provider_unavailable",
            retry_after_s=max(exc.retry_in_s, 1.0),
        )
    if isinstance(exc, ProviderError):
        return _provider_error(exc)
    if isinstance(exc, InvalidRequest | InvalidTunable):
        return bad_request(str(exc), field=getattr(exc, "field", None))
    return ApiError(
        status=500,
        kind="internal_error",
        message="internal error",
        anthropic_type="api_error",
        openai_type="server_error",
    )


def _logged(exc: ProviderError, what: str = "failed") -> str:
    """A generic client message for an upstream failure whose text is the operator's business
    (our key refused, the upstream's own errors): the details go to the log under an error id
    the message names, so the operator can find them."""
    if exc.client_message is not None:
        return exc.client_message  # ours, already logged where it was raised
    error_id = "err_" + uuid.uuid4().hex[:16]
    log.warning("upstream failure %s: %s", error_id, exc)
    status = f"HTTP {exc.status}" if exc.status is not None else "no answer"
    return (
        f"the upstream provider {exc.provider!r} {what} ({status}); "
        f"the server log has the details under {error_id}"
    )


def _provider_error(exc: ProviderError) -> ApiError:
    # The upstream refused what we sent: a 400/404 is about the client's request (a bad model,
    # too many tokens), and its text is what the client needs. Anything else (401/403 about
    # *our* key, 5xx, rate limits, timeouts) is not the client's to read: a generic message.
    if exc.status in (400, 404, 413, 422):
        return ApiError(status=exc.status, kind="upstream_rejected", message=str(exc))
    if exc.status == 529:  # Anthropic's "overloaded": the client's SDK knows to back off
        return ApiError(
            status=529,
            kind="upstream_overloaded",
            message=_logged(exc, "is overloaded"),
            anthropic_type="overloaded_error",
            openai_type="server_error",
            openai_code="overloaded",
            openai_status=503,
            retry_after_s=exc.retry_after_s,
        )
    if exc.status == 429:
        return ApiError(
            status=429,
            kind="rate_limited",
            message=_logged(exc, "is rate limiting"),
            anthropic_type="rate_limit_error",
            openai_type="rate_limit_exceeded",
            openai_code="rate_limit_exceeded",
            retry_after_s=exc.retry_after_s,
        )
    return ApiError(
        status=502,
        kind="upstream_error",
        message=_logged(exc),
        anthropic_type="api_error",
        openai_type="server_error",
        openai_code="upstream_error",
        retry_after_s=exc.retry_after_s,
    )


def error_response(error: ApiError, dialect: Dialect) -> JsonResponse:
    """The JSON response for `error` in `dialect`, with Retry-After when there is a hint."""
    headers = None
    if error.retry_after_s is not None:
        headers = {"retry-after": str(max(1, round(error.retry_after_s)))}
    return JsonResponse(
        error.body_for(dialect), status_code=error.status_for(dialect), headers=headers
    )
