"""Scrubbing API keys and tokens out of text before it is stored.

The memory holds prompts, failure reasons and evidence pasted from logs; any of them may
carry a credential. Everything free-text passes through `redact_secrets` on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact_json", "redact_secrets"]

REDACTED = "[REDACTED]"

_SECRET_NAME = (
    r"[A-Za-z0-9_-]*(?:api[_-]?key|access[_-]?token|auth[_-]?token|secret|password)"
    r"|authorization|x-api-key"
)
_SECRET_NAME_RE = re.compile(rf"^(?:{_SECRET_NAME})$", re.IGNORECASE)

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # `x-api-key: abc`, `Authorization: Bearer abc`, `ANTHROPIC_API_KEY=abc`, `"api_key": "abc"`
    (
        re.compile(
            rf"\b({_SECRET_NAME})([\"']?\s*[:=]\s*[\"']?)(?:bearer\s+)?"
            rf"(?!\[REDACTED\])[^\s\"',;]+",
            re.IGNORECASE,
        ),
        rf"\1\2{REDACTED}",
    ),
    (
        re.compile(r"\b(bearer)\s+(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
        rf"\1 {REDACTED}",
    ),
    # Keys recognisable by their shape alone.
    (re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{10,}"), REDACTED),  # Anthropic, OpenAI
    (re.compile(r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{20,}"), REDACTED),  # GitHub
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),  # AWS access key id
)


def redact_secrets(text: str) -> str:
    """Return `text` with anything that looks like an API key or bearer token replaced."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def redact_json(value: Any) -> Any:
    """Redact every string inside a JSON-like value; values under secret-named keys go whole."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_NAME_RE.match(key) and item is not None
            else redact_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_json(item) for item in value]
    return value
