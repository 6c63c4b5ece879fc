"""Complexity scoring: measurable features sort prompts into levels for the router."""

from __future__ import annotations

import pytest

from intelligence import ComplexityLevel, score_complexity


def test_a_short_factual_question_is_trivial() -> None:
    """'What is the capital of France?' lands in the lowest level."""
    assert score_complexity("What is the capital of France?").level is ComplexityLevel.TRIVIAL


def test_a_multi_step_coding_task_with_code_scores_high() -> None:
    """Code, numbered steps and heavy asks put a prompt in the top levels."""
    prompt = (
        "Refactor this to be thread-safe, then benchmark it and analyze the trade-offs:\n"
        "```python\ndef add(state):\n    state['n'] += 1\n    return state\n```\n"
        "1. keep the API\n2. add unit tests\n3. profile it\n4. document the design"
    )
    assert score_complexity(prompt).level in (ComplexityLevel.COMPLEX, ComplexityLevel.HARD)


def test_each_feature_raises_the_score() -> None:
    """Adding code, steps or a heavy ask to the same prompt never lowers its score."""
    base = "Write something about queues."
    plain = score_complexity(base).score
    assert score_complexity(base + "\n```\nx = 1;\n```").score > plain
    assert score_complexity(base + "\n1. first\n2. then this\n3. finally that").score > plain
    assert score_complexity("Implement and benchmark " + base).score > plain


def test_the_score_and_features_stay_in_the_unit_interval() -> None:
    """Even an enormous prompt scores at most 1, every feature in [0, 1]."""
    result = score_complexity("implement refactor debug then " * 5000 + "```a;```" * 100)
    assert 0 <= result.score <= 1
    assert all(0 <= value <= 1 for value in result.features.values())


def test_levels_cover_the_unit_interval_in_order() -> None:
    """Scores from 0 to 1 map to levels from TRIVIAL to HARD, never going back."""
    levels = [ComplexityLevel.of(i / 100) for i in range(101)]
    order = list(ComplexityLevel)
    assert levels[0] is ComplexityLevel.TRIVIAL and levels[-1] is ComplexityLevel.HARD
    assert [order.index(x) for x in levels] == sorted(order.index(x) for x in levels)


def test_non_text_is_refused() -> None:
    """score_complexity raises ValueError for anything but a str."""
    with pytest.raises(ValueError, match="text"):
        score_complexity(None)  # type: ignore[arg-type]
