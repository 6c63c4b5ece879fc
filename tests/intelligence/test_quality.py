"""QualityEstimator: measurable defects lower an answer's score; stronger evidence multiplies in."""

from __future__ import annotations

import pytest

from intelligence.quality import (
    DEFECT_FACTORS,
    FAILED_TASK_FACTOR,
    Defect,
    LLMJudge,
    QualityEstimator,
    TaskVerdict,
)

ESTIMATOR = QualityEstimator()


def test_a_plain_good_answer_scores_one() -> None:
    """An answer with no measurable defect scores 1.0."""
    score = ESTIMATOR.estimate("Explain backpressure.", "Backpressure slows producers down.")
    assert (score.value, score.defects) == (1.0, ())


def test_an_empty_answer_scores_zero() -> None:
    """Blank text is worth nothing."""
    assert ESTIMATOR.estimate("Hi", "   \n").defects == (Defect.EMPTY,)
    assert ESTIMATOR.estimate("Hi", "").value == 0.0


def test_a_truncated_answer_loses_half() -> None:
    """finish_reason 'length' / 'max_tokens' marks the answer truncated."""
    for reason in ("length", "max_tokens"):
        score = ESTIMATOR.estimate("Write a story.", "Once upon a", finish_reason=reason)
        assert score.defects == (Defect.TRUNCATED,)
        assert score.value == DEFECT_FACTORS[Defect.TRUNCATED]


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot assist with this request.",
        "As an AI language model, I can't browse the internet.",
    ],
)
def test_a_refusal_is_nearly_worthless(answer: str) -> None:
    """Refusals are recognised and score DEFECT_FACTORS[REFUSAL]."""
    score = ESTIMATOR.estimate("Tell me the weather.", answer)
    assert score.defects == (Defect.REFUSAL,)


def test_an_answer_that_mentions_inability_later_is_not_a_refusal() -> None:
    """Only an opening refusal counts; 'we cannot' mid-answer is content."""
    answer = "Use a semaphore. Without one we cannot bound concurrency, so requests pile up."
    assert ESTIMATOR.estimate("How to bound concurrency?", answer).defects == ()


def test_invalid_json_where_json_was_asked_is_a_defect() -> None:
    """A prompt asking for JSON makes non-JSON an INVALID_JSON defect; valid JSON is fine,
    fenced or not."""
    prompt = "Respond in JSON with the keys name and age."
    assert ESTIMATOR.estimate(prompt, "name: Bo, age: 3").defects == (Defect.INVALID_JSON,)
    assert ESTIMATOR.estimate(prompt, '{"name": "Bo", "age": 3}').defects == ()
    assert ESTIMATOR.estimate(prompt, '```json\n{"name": "Bo"}\n```').defects == ()


def test_json_requested_can_be_given_explicitly() -> None:
    """json_requested=True checks JSON whatever the wording; False never does."""
    assert ESTIMATOR.estimate("hi", "hello", json_requested=True).defects == (
        Defect.INVALID_JSON,
    )
    assert ESTIMATOR.estimate("Answer as JSON", "hello", json_requested=False).defects == ()


def test_an_answer_far_longer_than_asked_is_scaled_down() -> None:
    """'In one sentence' answered with 200 words is TOO_LONG, scaled by how far off it is."""
    long_answer = " ".join(["word"] * 200)
    score = ESTIMATOR.estimate("Explain TCP in one sentence.", long_answer)
    assert score.defects == (Defect.TOO_LONG,)
    assert DEFECT_FACTORS[Defect.TOO_LONG] <= score.value < 0.6
    near = ESTIMATOR.estimate("Explain TCP in one sentence.", " ".join(["word"] * 25))
    assert near.defects == ()


def test_an_answer_far_shorter_than_asked_is_scaled_down() -> None:
    """'At least 300 words' answered with ten is TOO_SHORT."""
    score = ESTIMATOR.estimate("Write at least 300 words on queues.", "Queues hold items. " * 3)
    assert score.defects == (Defect.TOO_SHORT,)
    assert score.value < 0.5


def test_a_task_verdict_multiplies_in() -> None:
    """A passed task keeps the score; a failed one multiplies it by FAILED_TASK_FACTOR."""
    passed = ESTIMATOR.estimate("Fix it", "Done: patched", task_verdict=TaskVerdict.PASSED)
    failed = ESTIMATOR.estimate("Fix it", "Done: patched", task_verdict="failed")
    assert (passed.value, failed.value) == (1.0, FAILED_TASK_FACTOR)


def test_defects_multiply() -> None:
    """Two defects: the product of their factors."""
    score = ESTIMATOR.estimate("Reply in JSON please", "{'a':", finish_reason="length")
    expected = DEFECT_FACTORS[Defect.TRUNCATED] * DEFECT_FACTORS[Defect.INVALID_JSON]
    assert score.value == pytest.approx(expected)


async def test_the_llm_judge_grade_multiplies_in() -> None:
    """A judge that answers '7' scales the score by 0.7; the rubric carries both texts."""
    prompts: list[str] = []

    async def complete(prompt: str) -> str:
        prompts.append(prompt)
        return "7"

    estimator = QualityEstimator(judge=LLMJudge(complete))
    score = await estimator.estimate_with_judge("What is 2+2?", "4")
    assert score.value == pytest.approx(0.7)
    assert "What is 2+2?" in prompts[0] and "Answer:\n4" in prompts[0]


async def test_a_worthless_answer_is_not_sent_to_the_judge() -> None:
    """An empty answer scores 0 without a judge call."""

    async def complete(prompt: str) -> str:
        raise AssertionError("the judge must not be asked")

    estimator = QualityEstimator(judge=LLMJudge(complete))
    assert (await estimator.estimate_with_judge("Hi", "")).value == 0.0


async def test_a_judge_reply_without_a_grade_is_an_error() -> None:
    """The judge never invents a grade: no number in the reply raises ValueError."""

    async def complete(prompt: str) -> str:
        return "Looks fine to me!"

    with pytest.raises(ValueError, match="no grade"):
        await LLMJudge(complete).grade("q", "a")
