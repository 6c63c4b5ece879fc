"""`PromptOptimizer`: fewer input tokens for the same request, opt-in per request.

    result = PromptOptimizer().optimize([("user", text), ("assistant", reply), ("user", text2)],
                                        system=system_prompt)
    result.messages, result.system, result.tokens_saved

Three rewrites, each of which leaves code and facts alone:
- a context block (a paragraph of at least `min_block_chars`) repeated word for word in a later
  message is replaced there by a one-line note naming the message that has it (agents paste
  the same file or instructions into every turn);
- boilerplate whitespace: runs of spaces inside a line, trailing blanks, more than one blank
  line in a row (leading indentation is kept: it may be structure);
- a system prompt longer than `max_system_chars` keeps its sentences, in order, up to that
  budget; later ones are dropped whole, at sentence boundaries (text is handled as code
  points, so no multi-byte character is ever cut).
Fenced code blocks (```…```) and inline code (`…`) are never changed, moved or dropped, by any
of the three; no rewrite edits inside a word, so numbers and identifiers stay as written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["OPTIMIZE_PROMPT", "Optimized", "PromptOptimizer", "PromptRewriter"]

OPTIMIZE_PROMPT = "optimize_prompt"
"""The request `metadata` key that opts a request in ("1", "true", "on")."""

Turn = tuple[str, str]  # (role, content)

_PROTECTED_RE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]+`", re.DOTALL)
_INNER_SPACES_RE = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_TRAILING_RE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_LINES_RE = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
# A sentence ends at . ! ? (or their CJK forms) followed by white space, or at a newline; the
# split keeps the separators, so joining the pieces gives back exactly the text.
_SENTENCE_END_RE = re.compile(r"((?<=[.!?。！？])[ \t]+|\n)")
_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_RE = re.compile("\x00(\\d+)\x00")


def _estimate_tokens(text: str) -> int:
    return -(-len(text) // 4)  # the pipeline's own estimate: one token per four characters


@dataclass(frozen=True, slots=True, kw_only=True)
class Optimized:
    """The rewritten request and what it saved (token counts by `token_counter`)."""

    system: str | None
    messages: tuple[Turn, ...]
    tokens_before: int
    tokens_after: int
    repeated_blocks_removed: int
    system_sentences_dropped: int

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


class PromptOptimizer:
    """Rewrites a request's messages and system prompt to spend fewer tokens (see module doc).

    Raises `ValueError` naming a bad parameter.
    """

    def __init__(
        self,
        *,
        max_system_chars: int = 8_000,
        min_block_chars: int = 200,
        token_counter: Callable[[str], int] = _estimate_tokens,
    ) -> None:
        if max_system_chars < 1:
            raise ValueError(f"max_system_chars must be >= 1, got {max_system_chars!r}")
        if min_block_chars < 1:
            raise ValueError(f"min_block_chars must be >= 1, got {min_block_chars!r}")
        self.max_system_chars = max_system_chars
        self.min_block_chars = min_block_chars
        self._count = token_counter

    def optimize(self, messages: Sequence[Turn], *, system: str | None = None) -> Optimized:
        """The optimized form of `messages` ((role, content) pairs) and `system`."""
        turns = [(str(role), str(content)) for role, content in messages]
        before = self._tokens(system, turns)
        seen: dict[str, int] = {}  # normalised block -> the 1-based message that has it
        removed = 0
        out: list[Turn] = []
        for number, (role, content) in enumerate(turns, start=1):
            content, dropped = self._drop_repeats(content, number, seen)
            removed += dropped
            out.append((role, _collapse_whitespace(content)))
        new_system = None if system is None else _collapse_whitespace(system)
        sentences_dropped = 0
        if new_system is not None and len(new_system) > self.max_system_chars:
            new_system, sentences_dropped = _trim_sentences(new_system, self.max_system_chars)
        return Optimized(
            system=new_system,
            messages=tuple(out),
            tokens_before=before,
            tokens_after=self._tokens(new_system, out),
            repeated_blocks_removed=removed,
            system_sentences_dropped=sentences_dropped,
        )

    def _tokens(self, system: str | None, turns: Sequence[Turn]) -> int:
        total = self._count(system) if system else 0
        return total + sum(self._count(content) for _, content in turns)

    def _drop_repeats(self, content: str, number: int, seen: dict[str, int]) -> tuple[str, int]:
        text, protected = _shield(content)
        blocks = re.split(r"(\n[ \t]*\n)", text)  # keep the separators
        dropped = 0
        for index in range(0, len(blocks), 2):
            block = blocks[index]
            if _PLACEHOLDER_RE.search(block):
                continue  # holds code: never touched
            key = " ".join(block.split())
            if len(key) < self.min_block_chars:
                continue
            first = seen.get(key)
            if first is None:
                seen[key] = number
            elif first != number:
                blocks[index] = f"[repeated context omitted: the same text is in message {first}]"
                dropped += 1
        return _unshield("".join(blocks), protected), dropped


def _shield(text: str) -> tuple[str, list[str]]:
    """`text` with every code span replaced by a placeholder, and the spans."""
    protected: list[str] = []

    def hide(match: re.Match[str]) -> str:
        protected.append(match.group(0))
        return _PLACEHOLDER.format(len(protected) - 1)

    return _PROTECTED_RE.sub(hide, text), protected


def _unshield(text: str, protected: list[str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: protected[int(m.group(1))], text)


def _collapse_whitespace(text: str) -> str:
    shielded, protected = _shield(text)
    shielded = _INNER_SPACES_RE.sub(" ", shielded)
    shielded = _TRAILING_RE.sub("", shielded)
    shielded = _BLANK_LINES_RE.sub("\n\n", shielded)
    return _unshield(shielded, protected)


def _trim_sentences(text: str, budget: int) -> tuple[str, int]:
    """Keep whole sentences, in order, while they fit in `budget` characters; code spans are
    always kept (they do not count against the budget). Returns the text and how many
    sentences were dropped."""
    shielded, protected = _shield(text)
    kept: list[str] = []
    used = 0
    dropped = 0
    pieces = _SENTENCE_END_RE.split(shielded)
    sentences = [
        pieces[i] + (pieces[i + 1] if i + 1 < len(pieces) else "") for i in range(0, len(pieces), 2)
    ]
    for sentence in sentences:
        if not sentence:
            continue
        code_only = _PLACEHOLDER_RE.sub("", sentence).strip() == ""
        has_code = _PLACEHOLDER_RE.search(sentence) is not None
        prose_chars = len(_PLACEHOLDER_RE.sub("", sentence))
        if code_only or used + prose_chars <= budget:
            kept.append(sentence)
            used += prose_chars
        elif has_code:
            kept.append("".join(m.group(0) for m in _PLACEHOLDER_RE.finditer(sentence)) + "\n")
            dropped += 1
        elif sentence.strip():
            dropped += 1
    return _unshield("".join(kept).rstrip(), protected), dropped


class PromptRewriter:
    """The optimizer as the pipeline's front-door rewrite (`Pipeline(rewriters=[...])`; the
    composition root plugs it in with `settings.prompt_optimizer`): a text request whose
    `metadata[OPTIMIZE_PROMPT]` opts in gets its turns and system prompt optimized; any other
    request (and a native body, which is sent as given) passes unchanged. Counts what it did
    (`requests_optimized`, `tokens_saved_total`). Works on the request by shape: a frozen
    dataclass with `prompt`, `messages` (turns with `role`, `content`), `system`, `metadata`."""

    def __init__(self, optimizer: PromptOptimizer | None = None) -> None:
        self.optimizer = optimizer if optimizer is not None else PromptOptimizer()
        self.requests_optimized = 0
        self.tokens_saved_total = 0

    def __call__(self, request: Any) -> Any:
        opted = str(request.metadata.get(OPTIMIZE_PROMPT, "")).strip().lower()
        if opted not in ("1", "true", "on", "yes") or request.native is not None:
            return request
        messages = tuple(request.messages)
        turns = [(m.role, m.content) for m in messages] or [("user", request.prompt or "")]
        result = self.optimizer.optimize(turns, system=request.system)
        if result.tokens_saved <= 0:
            return request
        self.requests_optimized += 1
        self.tokens_saved_total += result.tokens_saved
        if messages:
            new_messages = tuple(
                dataclasses.replace(m, content=content)
                for m, (_, content) in zip(messages, result.messages, strict=True)
            )
            return dataclasses.replace(request, messages=new_messages, system=result.system)
        return dataclasses.replace(request, prompt=result.messages[0][1], system=result.system)
