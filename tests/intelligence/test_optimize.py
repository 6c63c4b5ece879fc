"""PromptOptimizer: fewer tokens, never a changed code block, number or identifier."""

from __future__ import annotations

import random
import re

import pytest

from intelligence.optimize import PromptOptimizer

CONTEXT = (
    "Project rules: every module has one concept, tests read like the spec, and the public "
    "surface is curated with __all__. Version 2.13.0 of torch is pinned through constraints. "
    "Run make test before landing; never force-push main."
)
CODE = "```python\ndef f(x):\n    return  x  *  2   # spaces kept\n\n\n\n# end\n```"
CODE_RE = re.compile(r"```.*?```", re.DOTALL)
TOKEN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|\d+(?:\.\d+)*")


def test_a_context_block_repeated_in_a_later_message_is_replaced_by_a_note() -> None:
    """The second copy of a long paragraph becomes a note naming the first message."""
    result = PromptOptimizer().optimize(
        [
            ("user", CONTEXT + "\n\nFix the bug."),
            ("assistant", "ok"),
            ("user", CONTEXT + "\n\nNow add tests."),
        ]
    )
    last = result.messages[2][1]
    assert CONTEXT not in last and "message 1" in last and "Now add tests." in last
    assert result.messages[0][1].startswith(CONTEXT)
    assert result.repeated_blocks_removed == 1
    assert result.tokens_saved > 0


def test_a_repeated_code_block_is_kept() -> None:
    """Code blocks are never removed, even when repeated."""
    messages = [("user", CODE + "\n\n" + CONTEXT), ("user", CODE)]
    result = PromptOptimizer(min_block_chars=10).optimize(messages)
    assert [CODE_RE.findall(c) for _, c in result.messages] == [[CODE], [CODE]]


def test_short_repeats_are_left_alone() -> None:
    """Blocks shorter than min_block_chars ('ok', 'thanks') are not context to dedup."""
    result = PromptOptimizer().optimize([("user", "Thanks!"), ("user", "Thanks!")])
    assert result.messages == (("user", "Thanks!"), ("user", "Thanks!"))


def test_whitespace_boilerplate_collapses_but_indentation_and_code_stay() -> None:
    """Inner runs of spaces, trailing blanks and extra blank lines go; leading indentation
    and everything inside code blocks and inline code stay."""
    text = "Hello    world.   \n\n\n\n    indented  line\nuse `a   b` here\n" + CODE
    ((_, out),) = PromptOptimizer().optimize([("user", text)]).messages
    assert out == "Hello world.\n\n    indented line\nuse `a   b` here\n" + CODE
    assert out.split() == text.split()  # only white space changed


def test_an_over_long_system_prompt_is_trimmed_at_a_sentence_boundary() -> None:
    """The kept system prompt is whole sentences from the start, within the budget."""
    sentences = [f"Rule {i} says value {i * 7} applies." for i in range(40)]
    system = " ".join(sentences)
    result = PromptOptimizer(max_system_chars=200).optimize([("user", "hi")], system=system)
    assert result.system is not None and len(result.system) <= 200
    assert system.startswith(result.system)
    assert result.system.endswith("applies.")
    assert result.system_sentences_dropped == 40 - result.system.count("Rule ")


def test_trimming_is_utf8_safe() -> None:
    """Multi-byte text (CJK, emoji with joiners, accents) is cut only between sentences."""
    sentence = "Café 東京タワー 👩‍👩‍👧 ist schön. "
    system = sentence * 50
    result = PromptOptimizer(max_system_chars=100).optimize([("user", "x")], system=system)
    assert result.system is not None
    result.system.encode("utf-8")  # no surrogate or half character
    assert result.system == (sentence * result.system.count("Café")).rstrip()


def test_trimming_keeps_code_blocks_of_the_system_prompt() -> None:
    """Sentences past the budget go, code blocks in them stay, unchanged."""
    system = "First rule. " * 5 + "Example:\n" + CODE + "\n" + "Later rule. " * 50
    result = PromptOptimizer(max_system_chars=80).optimize([("user", "x")], system=system)
    assert result.system is not None and CODE in result.system
    assert "Later rule." not in result.system


@pytest.mark.parametrize("seed", range(20))
def test_numbers_identifiers_and_code_survive_every_rewrite(seed: int) -> None:
    """On random conversations, every code block comes out unchanged, and every number or
    identifier in the output was in the input, in the same order per message."""
    rng = random.Random(seed)
    words = ["alpha_1", "x.y_z", "3.14159", "42", "v2.13.0", "the", "and", "ERR_TIMEOUT", "0x1F"]

    def paragraph() -> str:
        spaces = lambda: " " * rng.randint(1, 4)  # noqa: E731
        return spaces().join(rng.choice(words) for _ in range(rng.randint(5, 60))) + "."

    shared = paragraph() * 3
    messages = []
    for i in range(rng.randint(2, 6)):
        parts = [paragraph() for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.5:
            parts.append(shared)
        if rng.random() < 0.5:
            parts.append(CODE)
        messages.append(("user" if i % 2 == 0 else "assistant", "\n\n\n".join(parts)))
    result = PromptOptimizer(min_block_chars=50).optimize(messages)
    for (_, before), (_, after) in zip(messages, result.messages, strict=True):
        assert CODE_RE.findall(after) == CODE_RE.findall(before)
        after_tokens = TOKEN_RE.findall(re.sub(r"\[repeated context omitted[^\]]*\]", "", after))
        before_tokens = TOKEN_RE.findall(before)
        iterator = iter(before_tokens)
        assert all(token in iterator for token in after_tokens)  # a subsequence
    assert result.tokens_after <= result.tokens_before


def test_bad_parameters_are_refused_naming_them() -> None:
    """The constructor raises ValueError naming the bad parameter."""
    with pytest.raises(ValueError, match="max_system_chars"):
        PromptOptimizer(max_system_chars=0)
    with pytest.raises(ValueError, match="min_block_chars"):
        PromptOptimizer(min_block_chars=0)
