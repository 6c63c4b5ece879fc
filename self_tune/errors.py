"""The self-tuning package's errors.

SelfTuneError                      root of everything raised here
├── ConfigUpdateRejected(ValueError)  the live config refused a change (names the field)
├── TelemetryUnavailable(RuntimeError) a snapshot source could not be read (names the source)
└── GateError(RuntimeError)          the validation gate could not work on the repository
                                     (not a git repository, no such branch, git failed)
"""

from __future__ import annotations

__all__ = ["ConfigUpdateRejected", "GateError", "SelfTuneError", "TelemetryUnavailable"]


class SelfTuneError(Exception):
    """Root of the self-tuning package's errors."""


class ConfigUpdateRejected(SelfTuneError, ValueError):
    """The live config refused a change; `field` names the parameter, `detail` says why."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"config change to {field!r} rejected: {detail}")
        self.field = field
        self.detail = detail


class TelemetryUnavailable(SelfTuneError, RuntimeError):
    """A snapshot source could not be read; `source` names it (a URL or 'pipeline')."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"telemetry source {source} unavailable: {detail}")
        self.source = source
        self.detail = detail


class GateError(SelfTuneError, RuntimeError):
    """The validation gate could not do what it was asked on the repository."""
