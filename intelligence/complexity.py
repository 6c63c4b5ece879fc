"""Complexity scoring: how demanding a prompt looks, as the router's context.

    level = score_complexity("Implement an LRU cache in Rust, then write its tests.").level

The score is a fixed, documented combination of measurable features of the text — its
length, code in it, multi-step instructions, and what it asks for (verbs like *implement*,
*refactor*, *prove* against *what is*, *translate*, *list*). It is not learned, and it does not
need to be right about which model a prompt needs: it only sorts prompts into
`ComplexityLevel`s, and the router learns per level which provider earns the best reward. So
where the boundary between a cheap model and a strong one lies is learned from outcomes; the
score only has to put prompts of similar difficulty together.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = ["LEVEL_BOUNDS", "Complexity", "ComplexityLevel", "score_complexity"]


class ComplexityLevel(StrEnum):
    """Five bands of the complexity score, each a context the router learns separately."""

    TRIVIAL = "trivial"
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"
    HARD = "hard"

    @classmethod
    def of(cls, score: float) -> ComplexityLevel:
        """The band a score in [0, 1] falls in (bounds in `LEVEL_BOUNDS`)."""
        for level, upper in zip(cls, LEVEL_BOUNDS, strict=False):
            if score < upper:
                return level
        return cls.HARD


LEVEL_BOUNDS = (0.15, 0.3, 0.45, 0.6)
"""Upper score bounds of the levels below HARD. Few prompts score above 0.8 (that takes a long
prompt full of code and steps), so the bands are denser at the bottom."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Complexity:
    """A prompt's complexity `score` in [0, 1], its `level`, and the feature values behind it
    (each in [0, 1])."""

    score: float
    level: ComplexityLevel
    features: Mapping[str, float]


# How much each feature moves the score; they sum to 1, so the score stays in [0, 1].
_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"length": 0.25, "code": 0.2, "steps": 0.2, "asks": 0.35}
)
_LENGTH_SATURATION_CHARS = 6_000  # a prompt this long (about 1,500 tokens) counts as long
_STEP_SATURATION = 5  # five or more instructions in sequence count as fully multi-step

_FENCE_RE = re.compile(r"```")
_CODE_LINE_RE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|fn |func |public |private |#include|"
    r"for \(|while \(|if \(|return |const |let |var |\}|\{)|[;{}]\s*$|=>|->|::|==|!=",
    re.MULTILINE,
)
_STEP_LINE_RE = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step \d+)\s+\S", re.MULTILINE | re.IGNORECASE)
_SEQUENCE_RE = re.compile(
    r"\b(?:then|after that|afterwards|next|finally|first|second|third|and also|as well as)\b",
    re.IGNORECASE,
)
_HEAVY_ASK_RE = re.compile(
    r"\b(?:implement|refactor|debug|optimi[sz]e|design|architect|prove|derive|analy[sz]e|"
    r"migrate|rewrite|port|benchmark|profile|review|diagnose|fix|build|integrate|parallel\w*|"
    r"concurren\w*|thread-safe|algorithm|complexity|trade-?offs?|test suite|unit tests?|"
    r"edge cases?|step by step|in detail|thorough\w*)\b",
    re.IGNORECASE,
)
_LIGHT_ASK_RE = re.compile(
    r"\b(?:what is|what's|who is|when did|where is|define|translate|spell|list|name|"
    r"summari[sz]e|tl;?dr|yes or no|true or false|one word|one sentence|capital of|"
    r"convert|how many|greet|hello|hi|thanks)\b",
    re.IGNORECASE,
)


def score_complexity(text: str, *, system: str | None = None) -> Complexity:
    """Score `text` (the user's prompt; `system`, when given, adds to its length only)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    total_chars = len(text) + (len(system) if system else 0)
    length = min(1.0, math.log1p(total_chars) / math.log1p(_LENGTH_SATURATION_CHARS))
    fences = len(_FENCE_RE.findall(text)) // 2
    code_lines = len(_CODE_LINE_RE.findall(text))
    code = min(1.0, 0.5 * fences + 0.1 * code_lines)
    steps_found = len(_STEP_LINE_RE.findall(text)) + len(_SEQUENCE_RE.findall(text))
    steps = min(1.0, steps_found / _STEP_SATURATION)
    heavy = len(_HEAVY_ASK_RE.findall(text))
    light = len(_LIGHT_ASK_RE.findall(text))
    # Heavy asks push up, light ones pull down; neither: the middle.
    asks = min(1.0, max(0.0, 0.5 + 0.25 * heavy - 0.25 * light))
    features = {"length": length, "code": code, "steps": steps, "asks": asks}
    score = sum(_WEIGHTS[name] * value for name, value in features.items())
    score = min(1.0, max(0.0, score))
    return Complexity(
        score=score, level=ComplexityLevel.of(score), features=MappingProxyType(features)
    )
