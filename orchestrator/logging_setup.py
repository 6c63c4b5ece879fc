"""Process-wide logging for the `orchestrator` command: text or JSON lines, keys masked.

    configure_logging(secrets=[settings.anthropic_api_key])   # once, in the CLI

`LOG_FORMAT=json` writes one JSON object per line (`time`, `level`, `logger`, `message`, then any
`extra=` fields, and `exception` when there is one); `LOG_LEVEL` sets the level (default INFO).
Every record passes a `SecretFilter` first, which masks the known key values it was given and
anything shaped like an API key or bearer token, in the message, its arguments, string extras
and the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "MASK",
    "MAX_PROMPT_LOG_CHARS",
    "PROMPT_LOGGER",
    "SECRET_ENV_VARS",
    "JsonFormatter",
    "LogFormat",
    "SecretFilter",
    "configure_logging",
    "mask_secrets",
    "prompt_log_text",
]

LogFormat = Literal["text", "json"]
MASK = "[REDACTED]"

PROMPT_LOGGER = "orchestrator.prompts"
"""The logger that records prompts and answers, at INFO, only when asked (`LOG_PROMPTS`)."""
MAX_PROMPT_LOG_CHARS = 2000
"""How much of one prompt or answer a log line keeps."""

SECRET_ENV_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "API_KEY", "ADMIN_API_KEY")
"""Environment variables whose values are always masked."""

_MIN_SECRET_CHARS = 4  # shorter "secrets" would mask ordinary words
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Key-shaped strings: provider keys, bearer tokens, and `api_key=...`-style assignments.
_KEY_PATTERNS = (
    re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{16,}"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    re.compile(
        r"(?i)(\b(?:x-)?api[_-]?key[\"']?\s*[:=]\s*[\"']?|"
        r"\b(?:access_|auth_)?token[\"']?\s*[:=]\s*[\"']?|"
        r"\bauthorization[\"']?\s*[:=]\s*[\"']?(?!bearer\b))[^\s\"',;&]{8,}"
    ),
)

# Terminal colour and cursor sequences (CSI), and the extras that only carry a coloured
# copy of the message (uvicorn's `color_message`).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_TERMINAL_EXTRAS = frozenset({"color_message"})

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` (in any letter case: an upstream may echo a key upper-
    or lower-cased) and every key-like string replaced by `MASK`."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = re.sub(re.escape(secret), MASK, text, flags=re.IGNORECASE)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def prompt_log_text(text: str, limit: int = MAX_PROMPT_LOG_CHARS) -> str:
    """`text` as a prompt log keeps it: key-like strings masked, at most `limit` characters
    (then marked with how many were cut)."""
    masked = mask_secrets(text)
    if len(masked) <= limit:
        return masked
    return f"{masked[:limit]}… [{len(masked) - limit} more chars]"


class SecretFilter(logging.Filter):
    """Masks known secret values and key-like strings in every record it sees (never drops one).

    Attach it to a handler, so records propagated from any logger pass through it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple({s for s in secrets if s and len(s) >= _MIN_SECRET_CHARS})

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self._mask
        record.msg = mask(record.getMessage())
        record.args = None
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and isinstance(value, str):
                record.__dict__[key] = mask(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True

    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in data and key not in _TERMINAL_EXTRAS:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = record.stack_info
        # A JSON line is read by machines: no terminal colour codes, whoever logged them.
        plain = {k: _ANSI.sub("", v) if isinstance(v, str) else v for k, v in data.items()}
        return json.dumps(plain, default=str, ensure_ascii=False)


def _level(value: str) -> int:
    level = logging.getLevelNamesMapping().get(value.strip().upper())
    if level is None:
        raise ValueError(
            f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got {value!r}"
        )
    return level


def _format(value: str) -> LogFormat:
    normalised = value.strip().lower()
    if normalised == "json":
        return "json"
    if normalised == "text":
        return "text"
    raise ValueError(f"LOG_FORMAT must be 'text' or 'json', got {value!r}")


def configure_logging(
    *,
    level: str | None = None,
    fmt: str | None = None,
    secrets: Iterable[str | None] = (),
    environ: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
    log_prompts: bool = False,
) -> logging.Handler:
    """Send all logging to `stream` (stderr) in the chosen format; return the handler.

    `level` and `fmt` default to `LOG_LEVEL` (INFO) and `LOG_FORMAT` (text) from `environ`.
    `log_prompts` lets the `PROMPT_LOGGER` records (INFO) through whatever the level; the
    pipeline writes them only when its `PipelineConfig.log_prompts` is on.
    `secrets` are masked along with the values of `SECRET_ENV_VARS`. Calling again replaces
    the handler installed before. Raises ValueError naming a bad LOG_LEVEL or LOG_FORMAT.
    """
    env = os.environ if environ is None else environ
    resolved_level = _level(level if level is not None else env.get("LOG_LEVEL", "INFO"))
    resolved_fmt = _format(fmt if fmt is not None else env.get("LOG_FORMAT", "text"))
    known = [s for s in secrets if s] + [env[v] for v in SECRET_ENV_VARS if env.get(v)]

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if resolved_fmt == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    handler.addFilter(SecretFilter(known))
    handler.set_name("orchestrator")

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "orchestrator"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(resolved_level)
    logging.getLogger(PROMPT_LOGGER).setLevel(logging.INFO if log_prompts else logging.NOTSET)
    return handler
