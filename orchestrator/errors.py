"""The pipeline's error tree.

    OrchestratorError
    ├── Overloaded            a stage queue was full; the request was shed
    ├── BudgetExceeded        a session or global spend limit would be crossed
    ├── DeadlineExceeded      (also TimeoutError) the request's deadline passed
    ├── PipelineClosed        the pipeline shut down before the request was answered
    ├── InvalidRequest        (also ValueError) the request itself is malformed (a 400)
    ├── InvalidTunable        (also ValueError) a live value is unknown or out of its bounds
    ├── SettingsError         (also ValueError) settings are missing or invalid
    ├── WizardAborted         the user left the setup wizard; nothing was saved
    └── ProviderError         an upstream call failed; `retryable` says whether to try again
        └── CircuitOpen       the provider's breaker is open; nothing was sent
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error the pipeline raises on purpose."""


class Overloaded(OrchestratorError):
    """A bounded stage queue was full and this request was shed."""

    def __init__(self, stage: str, priority: str, depth: int, capacity: int) -> None:
        self.stage, self.priority, self.depth, self.capacity = stage, priority, depth, capacity
        super().__init__(
            f"overloaded: stage {stage!r} queue is at {depth}/{capacity}; "
            f"{priority} request shed"
        )


class BudgetExceeded(OrchestratorError):
    """Serving the request would cross a spend limit (`scope` is 'session:<id>' or 'global')."""

    def __init__(self, scope: str, spent_usd: float, limit_usd: float) -> None:
        self.scope, self.spent_usd, self.limit_usd = scope, spent_usd, limit_usd
        super().__init__(
            f"budget exceeded for {scope}: spent ${spent_usd:.4f} of ${limit_usd:.4f}"
        )


class DeadlineExceeded(OrchestratorError, TimeoutError):
    """The request's deadline passed before an answer arrived."""

    def __init__(self, request_id: str, timeout_s: float, where: str) -> None:
        self.request_id, self.timeout_s, self.where = request_id, timeout_s, where
        super().__init__(f"request {request_id} missed its {timeout_s:g}s deadline in {where}")


class PipelineClosed(OrchestratorError):
    """The pipeline shut down before the request was answered."""


class InvalidRequest(OrchestratorError, ValueError):
    """The request itself is malformed (no prompt, `max_tokens` < 1, …): the client's fault.

    The front doors answer it with a 400 showing its message; any other `ValueError` that
    escapes a request is a bug in this program and is answered with a logged 500.
    """


class SettingsError(OrchestratorError, ValueError):
    """Settings are missing or invalid; `names` lists the settings (env names) at fault."""

    def __init__(self, message: str, *, names: tuple[str, ...] = ()) -> None:
        self.names = names
        super().__init__(message)


class WizardAborted(OrchestratorError):
    """The user left the wizard (end of input or Ctrl-C); nothing was saved."""


class InvalidTunable(OrchestratorError, ValueError):
    """A live-config change names an unknown tunable or a value outside its bounds.

    `field` is the tunable at fault (the first one, when several are); nothing was applied.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class ProviderError(OrchestratorError):
    """An upstream provider call failed.

    `retryable` is True for 429, 5xx, timeouts and connection errors; False for 400/401/403/404.
    `retry_after_s` carries the provider's Retry-After hint when it sent one.
    `client_message`, when set, is what clients may be told (it names no upstream text);
    without it the front doors tell clients of a 401/403/429/5xx only which provider failed.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool,
        retry_after_s: float | None = None,
        client_message: str | None = None,
    ) -> None:
        self.provider, self.status = provider, status
        self.client_message = client_message
        self.retryable, self.retry_after_s = retryable, retry_after_s
        where = f"{provider} (HTTP {status})" if status is not None else provider
        super().__init__(f"{where}: {message}")


class CircuitOpen(ProviderError):
    """The provider's circuit breaker is open; the call was not attempted."""

    def __init__(self, provider: str, retry_in_s: float) -> None:
        self.retry_in_s = retry_in_s
        super().__init__(
            provider, f"circuit open, next probe in {retry_in_s:.1f}s", retryable=True
        )
