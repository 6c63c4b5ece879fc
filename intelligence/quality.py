"""`QualityEstimator`: how usable an answer is, from signals that can be measured.

    estimator = QualityEstimator()
    score = estimator.estimate("Reply in JSON: the three largest moons", answer,
                               finish_reason="length")
    score.value, score.defects     # 0.1, (Defect.TRUNCATED, Defect.INVALID_JSON)

What a score means: the share of the answer's value that survives the defects we can see.
1.0 means nothing measurable is wrong — not that the answer is right. Each defect found
multiplies the score by its factor (`DEFECT_FACTORS`): an empty answer or a refusal is worth
(almost) nothing, a truncated one half, invalid JSON where JSON was asked for a fifth, an
answer far longer or shorter than asked for is scaled by how far off it is. Stronger evidence
then multiplies in: a fleet task's verdict (its acceptance commands and validation gate
passed: 1, failed: `FAILED_TASK_FACTOR`) and, when configured, an LLM judge's grade in [0, 1].
So scores from different requests compare: 0.5 is "half of the value was lost to measurable
defects or a judge's doubt", whatever the prompt was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "DEFECT_FACTORS",
    "FAILED_TASK_FACTOR",
    "Defect",
    "LLMJudge",
    "QualityEstimator",
    "QualityScore",
    "TaskVerdict",
]


class Defect(StrEnum):
    """A measurable problem with an answer."""

    EMPTY = "empty"
    REFUSAL = "refusal"
    TRUNCATED = "truncated"
    INVALID_JSON = "invalid_json"
    TOO_LONG = "too_long"
    TOO_SHORT = "too_short"


class TaskVerdict(StrEnum):
    """What became of the fleet task the request was made for."""

    PASSED = "passed"  # the agent exited 0 and every acceptance command (and the gate) passed
    FAILED = "failed"  # it did not


DEFECT_FACTORS: Mapping[Defect, float] = MappingProxyType(
    {
        Defect.EMPTY: 0.0,
        Defect.REFUSAL: 0.1,
        Defect.TRUNCATED: 0.5,
        Defect.INVALID_JSON: 0.2,
        # TOO_LONG / TOO_SHORT: this is the floor; the factor is how close the length is.
        Defect.TOO_LONG: 0.3,
        Defect.TOO_SHORT: 0.3,
    }
)
"""What each defect multiplies the score by."""

FAILED_TASK_FACTOR = 0.2
"""A failed task is strong evidence against the answers it was built on, but not proof that
this one was wrong (another call, or the agent, may be at fault)."""

_TRUNCATED_REASONS = frozenset({"length", "max_tokens", "max_output_tokens"})

_REFUSAL_RE = re.compile(
    r"^\W*(?:i'?m sorry,? but |sorry,? |unfortunately,? )?(?:i|we) (?:can(?:'|no)?t|cannot|"
    r"am (?:not able|unable)|won'?t|will not|must decline to|'m (?:not able|unable)) "
    r"(?:help|assist|comply|provide|do that|fulfil+|answer|support|create|write|share)|"
    r"^\W*as an ai(?: language model)?,? i (?:can(?:'|no)?t|cannot|don'?t)",
    re.IGNORECASE,
)
_JSON_ASK_RE = re.compile(
    r"\b(?:(?:respond|reply|answer|output|return|format|give)\w*\b[^.\n]{0,40}\bjson\b|"
    r"json (?:object|only|format|array)|valid json|as json|in json)\b",
    re.IGNORECASE,
)
_FENCED_RE = re.compile(r"^```(?:json)?\s*\n(.*?)\n```\s*$", re.DOTALL | re.IGNORECASE)
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "ten": 10}
_UNIT_WORDS = {"word": 1, "sentence": 20, "paragraph": 100, "line": 12}
_AT_MOST_RE = re.compile(
    r"\b(?:in|with|using|at most|no more than|under|within|max(?:imum)?|only)\s+"
    r"(\d+|one|two|three|four|five|ten)\s+(word|sentence|paragraph|line)s?\b",
    re.IGNORECASE,
)
_AT_LEAST_RE = re.compile(
    r"\b(?:at least|no (?:fewer|less) than|minimum of|more than)\s+"
    r"(\d+|one|two|three|four|five|ten)\s+(word|sentence|paragraph|line)s?\b",
    re.IGNORECASE,
)
_LENGTH_SLACK = 2.0  # an answer up to twice (or half) the asked length is not a defect


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityScore:
    """An answer's quality `value` in [0, 1], the defects found, and the factors applied."""

    value: float
    defects: tuple[Defect, ...] = ()
    factors: Mapping[str, float] = field(default_factory=dict)


class LLMJudge:
    """Grades an answer 0..10 by asking a model through `complete` (prompt in, text out).

    `complete` is whatever reaches a configured provider (the bridge passes one of the
    pipeline's workers); the judge only writes the rubric and reads the grade back.
    A reply without a grade in it is an error (`ValueError`), never a made-up score.
    """

    RUBRIC = (
        "You grade answers. Reply with one integer from 0 (useless or wrong) to 10 (correct, "
        "complete and exactly what was asked), and nothing else.\n\n"
        "Request:\n{request}\n\nAnswer:\n{answer}\n\nGrade:"
    )

    def __init__(self, complete: Callable[[str], Awaitable[str]], *, max_chars: int = 8_000):
        if not callable(complete):
            raise ValueError(f"complete must be callable, got {complete!r}")
        if max_chars < 100:
            raise ValueError(f"max_chars must be >= 100, got {max_chars!r}")
        self._complete = complete
        self.max_chars = max_chars

    async def grade(self, request: str, answer: str) -> float:
        """The judge's grade in [0, 1]."""
        half = self.max_chars // 2
        prompt = self.RUBRIC.format(request=request[:half], answer=answer[:half])
        reply = await self._complete(prompt)
        found = re.search(r"\b(10|\d)(?:\s*/\s*10)?\b", reply)
        if found is None:
            raise ValueError(f"the judge's reply has no grade in it: {reply[:80]!r}")
        return int(found.group(1)) / 10


class QualityEstimator:
    """Scores answers in [0, 1] from measurable signals (see the module docstring)."""

    def __init__(self, *, judge: LLMJudge | None = None) -> None:
        self.judge = judge

    def estimate(
        self,
        prompt: str,
        answer: str,
        *,
        finish_reason: str | None = "stop",
        json_requested: bool | None = None,
        task_verdict: TaskVerdict | str | None = None,
        judge_grade: float | None = None,
    ) -> QualityScore:
        """Score `answer` to `prompt` (the request's text: its last user turn, or all of it).

        `json_requested` None means: decide from the prompt's wording ("respond in JSON").
        `task_verdict` and `judge_grade` (0..1) multiply in when known.
        """
        defects: list[Defect] = []
        factors: dict[str, float] = {}
        stripped = answer.strip()
        if not stripped:
            defects.append(Defect.EMPTY)
        else:
            if _REFUSAL_RE.search(stripped[:300]):
                defects.append(Defect.REFUSAL)
            if finish_reason in _TRUNCATED_REASONS:
                defects.append(Defect.TRUNCATED)
            wants_json = _asks_for_json(prompt) if json_requested is None else json_requested
            if wants_json and not _is_json(stripped):
                defects.append(Defect.INVALID_JSON)
            length_factor, length_defect = _length_fit(prompt, stripped)
            if length_defect is not None:
                defects.append(length_defect)
                factors[str(length_defect)] = length_factor
        value = 1.0
        for defect in defects:
            factor = factors.setdefault(str(defect), DEFECT_FACTORS[defect])
            value *= factor
        if task_verdict is not None:
            verdict = TaskVerdict(task_verdict)
            factors["task"] = 1.0 if verdict is TaskVerdict.PASSED else FAILED_TASK_FACTOR
            value *= factors["task"]
        if judge_grade is not None:
            if not (isinstance(judge_grade, int | float) and 0.0 <= judge_grade <= 1.0):
                raise ValueError(f"judge_grade must be in [0, 1], got {judge_grade!r}")
            factors["judge"] = float(judge_grade)
            value *= factors["judge"]
        return QualityScore(
            value=min(1.0, max(0.0, value)),
            defects=tuple(defects),
            factors=MappingProxyType(factors),
        )

    async def estimate_with_judge(
        self, prompt: str, answer: str, **signals: object
    ) -> QualityScore:
        """`estimate`, with the configured judge's grade (no judge: `estimate` as is).

        An answer already worth 0 is not sent to the judge. A judge that fails raises.
        """
        first = self.estimate(prompt, answer, **signals)  # type: ignore[arg-type]
        if self.judge is None or first.value == 0.0:
            return first
        grade = await self.judge.grade(prompt, answer)
        return self.estimate(prompt, answer, judge_grade=grade, **signals)  # type: ignore[arg-type]


def _asks_for_json(prompt: str) -> bool:
    return _JSON_ASK_RE.search(prompt) is not None


def _is_json(text: str) -> bool:
    fenced = _FENCED_RE.match(text)
    candidate = fenced.group(1) if fenced else text
    try:
        json.loads(candidate)
    except ValueError:
        return False
    return True


def _words(text: str) -> int:
    return len(text.split())


def _asked_words(match: re.Match[str]) -> int:
    count_text, unit = match.group(1).lower(), match.group(2).lower()
    count = int(count_text) if count_text.isdigit() else _NUMBER_WORDS[count_text]
    return max(1, count * _UNIT_WORDS[unit])


def _length_fit(prompt: str, answer: str) -> tuple[float, Defect | None]:
    """How well the answer's length fits an explicit ask ("in one sentence", "at least 200
    words"); no ask, no defect."""
    words = _words(answer)
    at_most = _AT_MOST_RE.search(prompt)
    if at_most is not None:
        limit = _asked_words(at_most)
        if words > _LENGTH_SLACK * limit:
            return _closeness(limit * _LENGTH_SLACK, words, Defect.TOO_LONG), Defect.TOO_LONG
    at_least = _AT_LEAST_RE.search(prompt)
    if at_least is not None:
        floor = _asked_words(at_least)
        if words * _LENGTH_SLACK < floor:
            return _closeness(words * _LENGTH_SLACK, floor, Defect.TOO_SHORT), Defect.TOO_SHORT
    return 1.0, None


def _closeness(smaller: float, larger: float, defect: Defect) -> float:
    # Square root: three times too long keeps ~58% of the value, ten times ~32%.
    ratio = math.sqrt(max(smaller, 1.0) / max(larger, 1.0))
    return max(DEFECT_FACTORS[defect], min(1.0, ratio))
