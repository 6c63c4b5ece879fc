"""Token estimates for text whose provider has not counted it yet."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CHARS_PER_TOKEN", "estimate_request_tokens", "estimate_tokens"]

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text and code with BPE tokenizers


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is: one per four characters, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_request_tokens(system: str | None, contents: Iterable[str]) -> int:
    """Input tokens of a system prompt plus message contents, with a few per message of framing."""
    total = estimate_tokens(system) if system else 0
    for content in contents:
        total += estimate_tokens(content) + 4
    return total
