"""Pair verification: after the vector search, decide whether two prompts ask the same thing.

Cosine similarity alone cannot tell a paraphrase ("reverse a Python list" / "how to reverse a
list in python") from a hard negative ("reverse a list in JavaScript", `j *= 2` / `j += 2`):
with all-MiniLM-L6-v2 both sit around 0.9. So a candidate pair is described by features that
name what must agree — numbers, identifiers, paths, code spans (compared exactly), quoted
strings, negations, antonyms (direction), scope words, the order of what both name, the
content words only one side has — and a logistic regression trained on the labelled pairs in
`intelligence/data/pairs.jsonl` turns them into a match probability.

The weights ship as `intelligence/data/verifier.json` (one set per embedder kind, since the
cosine means something different for the lexical fallback). Regenerate them, reproducibly:

    python -m intelligence.verify        # trains on the train split, reports on the test split

Hard rules stay in front of the model where one difference always means another question:
different code spans, numbers or identifiers never match (`PairVerifier.hard_veto`).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from intelligence.embed import Embedder, EmbedderKind

__all__ = [
    "FEATURES",
    "LabelledPair",
    "PairVerifier",
    "implied_pairs",
    "load_pairs",
    "pair_features",
    "train_verifier",
]

DATA_DIR = Path(__file__).parent / "data"
PAIRS_PATH = DATA_DIR / "pairs.jsonl"
WEIGHTS_PATH = DATA_DIR / "verifier.json"
WEIGHTS_FORMAT = 1

# --- lexicon --------------------------------------------------------------------------------
# Word lists are inputs to the learned model, not decisions: the weights say how much each
# kind of disagreement counts.

_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "done",
        "to",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "as",
        "and",
        "or",
        "but",
        "if",
        "then",
        "than",
        "so",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "it's",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "what",
        "what's",
        "which",
        "who",
        "whom",
        "whose",
        "how",
        "why",
        "when",
        "where",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "please",
        "just",
        "also",
        "there",
        "here",
        "any",
        "some",
        "way",
        "get",
        "got",
        "give",
        "make",
        "let",
        "tell",
        "show",
        "me",
        "us",
        "have",
        "has",
        "had",
        "about",
        "like",
        "want",
        "need",
        "best",
        "right",
        "one",
        "ones",
        "s",
        "t",
        "d",
        "ll",
        "re",
        "ve",
        "m",
    ]
)
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nothing",
        "nobody",
        "without",
        "cannot",
        "can't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "wouldn't",
        "shouldn't",
        "couldn't",
        "mustn't",
        "hasn't",
        "haven't",
        "hadn't",
        "n't",
        "unsafe",
        "stop",
        "instead",
    ]
) - {"instead"}
# Opposites: one side naming the first and the other the second is a different request.
_ANTONYMS: tuple[tuple[str, str], ...] = (
    ("add", "remove"),
    ("add", "delete"),
    ("add", "drop"),
    ("create", "delete"),
    ("create", "drop"),
    ("create", "remove"),
    ("increase", "decrease"),
    ("raise", "lower"),
    ("upgrade", "downgrade"),
    ("bump", "downgrade"),
    ("first", "last"),
    ("oldest", "recent"),
    ("oldest", "newest"),
    ("older", "newer"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("tallest", "lowest"),
    ("highest", "lowest"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("above", "below"),
    ("over", "under"),
    ("exceeds", "below"),
    ("more", "less"),
    ("before", "after"),
    ("upload", "download"),
    ("open", "closed"),
    ("open", "close"),
    ("unit", "integration"),
    ("read", "write"),
    ("push", "pull"),
    ("enable", "disable"),
    ("true", "false"),
    ("show", "hide"),
    ("accept", "reject"),
    ("accepts", "rejects"),
    ("import", "export"),
    ("encode", "decode"),
    ("stream", "buffer"),
    ("streaming", "buffering"),
    ("get", "post"),
    ("stdout", "stderr"),
    ("utc", "local"),
    ("sync", "async"),
    ("alone", "suite"),
    ("fail", "pass"),
    ("failing", "passing"),
    ("slow", "fast"),
    ("soft", "hard"),
    ("beginner", "expert"),
    ("development", "production"),
    ("dev", "production"),
    ("locally", "ci"),
    ("freezing", "boiling"),
    ("private", "public"),
    ("online", "offline"),
    ("start", "stop"),
    ("starts", "stops"),
    ("on", "off"),
    ("mutate", "copy"),
    ("ascending", "descending"),
    ("horizontally", "vertically"),
    ("sum", "mean"),
    ("median", "mean"),
    ("median", "average"),
    ("sum", "average"),
    ("add", "unpin"),
    ("pin", "unpin"),
    ("sort", "preserve"),
    ("sort", "keep"),
    ("skip", "only"),
    ("every", "only"),
    ("all", "only"),
    ("any", "only"),
    ("keep", "discard"),
)
_SCOPE_WORDS = frozenset(
    [
        "today",
        "yesterday",
        "tomorrow",
        "week",
        "month",
        "year",
        "hour",
        "hourly",
        "minute",
        "minutes",
        "second",
        "seconds",
        "day",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "unit",
        "integration",
        "e2e",
        "open",
        "closed",
        "production",
        "staging",
        "development",
        "dev",
        "locally",
        "local",
        "remote",
        "ci",
        "frontend",
        "backend",
        "public",
        "private",
        "all",
        "every",
        "only",
        "each",
        "total",
        "unique",
        "space",
        "memory",
        "directories",
        "files",
    ]
)
_NUMBER_WORDS = {
    "zero": 0,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "fifty": 50,
    "seventy": 70,
    "hundred": 100,
    "thousand": 1000,
    "twice": 2,
}  # "one", "once", "single" are left out: mostly not quantities ("into one", "read once")

_CODE_SPAN = re.compile(r"`([^`]+)`")
_CAPITALISED = re.compile(r"(?<!^)(?<![.?!]\s)\b[A-Z][a-zA-Z]+")
# Single quotes count only as quotes, not apostrophes ("user's", "what's").
_QUOTED = re.compile(r"\"([^\"]+)\"|(?<!\w)'([^']+)'(?!\w)")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)*(?![\w])")
_WORD = re.compile(r"[A-Za-z_][\w'.\-/]*[\w]|[A-Za-z_]|--?[\w-]+|\d+(?:\.\d+)*")
_IDENT = re.compile(
    r"(?:--?[A-Za-z][\w-]*)"  # flags
    r"|(?:[\w.\-]*/[\w.\-/]*)"  # paths, branch names, endpoints
    r"|(?:\b[A-Za-z_]\w*_\w*\b)"  # snake_case
    r"|(?:\b[a-z]+[A-Z]\w*\b)"  # camelCase
    r"|(?:\b[A-Z][a-z]+[A-Z]\w*\b)"  # PascalCase
    r"|(?:\b\w+\.\w+(?:\.\w+)*\b)"  # dotted names, file names
    r"|(?:\b[A-Za-z]+\d[\w]*\b)"  # names with digits: UUID4, SHA1, py311
)


def _norm_code(span: str) -> str:
    # Exact comparison, modulo whitespace runs: `j *= 2` and `j*=2` are the same code.
    return re.sub(r"\s+", "", span)


def _numbers(text: str) -> list[str]:
    """Numbers in the order they appear, number words ("ten", "fifteen") as digits."""
    found = [(m.start(), m.group(0)) for m in _NUMBER.finditer(text)]
    for m in re.finditer(r"[a-z]+", text.lower()):
        if m.group(0) in _NUMBER_WORDS:
            found.append((m.start(), str(_NUMBER_WORDS[m.group(0)])))
    return [n for _, n in sorted(found)]


def _words(text: str) -> list[str]:
    return [w.lower().strip(".-/'") for w in _WORD.findall(_CODE_SPAN.sub(" ", text))]


def _content(words: Iterable[str]) -> list[str]:
    return [w for w in words if w and w not in _STOP and w not in _NUMBER_WORDS and len(w) > 1]


def _stem(word: str) -> str:
    # A crude stemmer so "tests"/"test", "renders"/"render", "sorted"/"sort" count as one word.
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _char_ngrams(text: str, n: int = 3) -> set[str]:
    t = re.sub(r"\s+", " ", text.lower())
    return {t[i : i + n] for i in range(max(len(t) - n + 1, 1))}


def _jaccard(a: set[Any], b: set[Any]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _set_mismatch(a: Sequence[str], b: Sequence[str]) -> float:
    """0 if both name the same things (or neither names any), 1 if they differ."""
    sa, sb = set(a), set(b)
    return 0.0 if sa == sb else 1.0


def _order_disagreement(a: Sequence[str], b: Sequence[str]) -> float:
    """Share of discordant pairs among the items both sides name (0 = same order)."""
    shared = [w for w in dict.fromkeys(a) if w in set(b)]
    if len(shared) < 2:
        return 0.0
    pos_b = {w: i for i, w in reversed(list(enumerate(b)))}
    pos_a = {w: i for i, w in reversed(list(enumerate(a)))}
    pairs = discordant = 0
    for i in range(len(shared)):
        for j in range(i + 1, len(shared)):
            x, y = shared[i], shared[j]
            pairs += 1
            if (pos_a[x] - pos_a[y]) * (pos_b[x] - pos_b[y]) < 0:
                discordant += 1
    return discordant / pairs


# Words that mark the two ends of a change: "from X to Y", "off X onto Y", "Y instead of X",
# "Y rather than X" (X is the old end in each, Y the new).
_DIRECTION_MARKERS = {"from": "old", "off": "old", "to": "new", "onto": "new", "into": "new"}
_INSTEAD = (("instead", "of"), ("rather", "than"))
_FILLER = frozenset(w for pair in _INSTEAD for w in pair)  # never what an end names


def _direction_slots(words: Sequence[str]) -> frozenset[tuple[str, str]]:
    """(end, what it names) for each direction marker: the next word that is not a stop word,
    stemmed (and for "instead of", the one before too). "Move the database from PostgreSQL to
    SQLite" gives (old, postgresql) and (new, sqlite); its reverse swaps them, a reordered
    sentence keeps them."""

    def first_content(candidates: Iterable[str]) -> str | None:
        return next((w for w in candidates if w and w not in _STOP and w not in _FILLER), None)

    slots = set()
    for i, word in enumerate(words):
        end = _DIRECTION_MARKERS.get(word)
        if (word, words[i + 1] if i + 1 < len(words) else "") in _INSTEAD:
            end = "old"
            before = first_content(reversed(words[:i]))
            if before is not None:
                slots.add(("new", _stem(before)))
        if end is not None:
            after = first_content(words[i + 1 :])
            if after is not None:
                slots.add((end, _stem(after)))
    return frozenset(slots)


def _direction_swaps(a: frozenset[tuple[str, str]], b: frozenset[tuple[str, str]]) -> float:
    """How many things one side names as the old end of a change and the other as the new."""
    old_a, new_a = ({w for e, w in a if e == end} for end in ("old", "new"))
    old_b, new_b = ({w for e, w in b if e == end} for end in ("old", "new"))
    return float(len(old_a & new_b) + len(new_a & old_b))


def _antonym_hits(wa: set[str], wb: set[str]) -> float:
    hits = 0
    for x, y in _ANTONYMS:
        if (x in wa and y in wb and y not in wa and x not in wb) or (
            y in wa and x in wb and x not in wa and y not in wb
        ):
            hits += 1
    return float(hits)


FEATURES: tuple[str, ...] = (
    "cosine",
    "token_jaccard",
    "char_jaccard",
    "content_jaccard",
    "number_mismatch",
    "number_order",
    "code_mismatch",
    "code_one_side",
    "identifier_mismatch",
    "identifier_order",
    "quoted_mismatch",
    "quoted_one_side",
    "negation_mismatch",
    "antonyms",
    "scope_mismatch",
    "content_order",
    "content_only_a",
    "content_only_b",
    "content_swaps",
    "capitalised_diff",
    "length_ratio",
    "direction_swap",
)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What `pair_features` reads of one text on its own; computed once per text (a lookup
    compares one prompt with up to three stored ones, each compared again and again)."""

    words: tuple[str, ...]
    stems: tuple[str, ...]
    stem_set: frozenset[str]
    numbers: tuple[str, ...]
    code: tuple[str, ...]
    idents: tuple[str, ...]
    quoted: tuple[str, ...]
    lower: frozenset[str]
    negated: bool
    scope: frozenset[str]
    caps: frozenset[str]
    ngrams: frozenset[str]
    length: int
    slots: frozenset[tuple[str, str]]


# Bounded small: a long prompt's facts (its character trigrams) are not small.
@functools.lru_cache(maxsize=4096)
def _facts(text: str) -> _Facts:
    words = _words(text)
    stems = tuple(_stem(w) for w in _content(words))
    lower = frozenset(words)
    return _Facts(
        words=tuple(words),
        stems=stems,
        stem_set=frozenset(stems),
        numbers=tuple(_numbers(text)),
        code=tuple(_norm_code(s) for s in _CODE_SPAN.findall(text)),
        idents=tuple(
            m.group(0).lower().rstrip(".") for m in _IDENT.finditer(_CODE_SPAN.sub(" ", text))
        ),
        quoted=tuple(x or y for x, y in _QUOTED.findall(text)),
        lower=lower,
        negated=any(w in _NEGATIONS or w.endswith("n't") for w in words),
        scope=lower & _SCOPE_WORDS,
        # Capitalised words past the first word: names of places, people, products.
        caps=frozenset(w.lower() for w in _CAPITALISED.findall(text)),
        ngrams=frozenset(_char_ngrams(text)),
        length=len(text),
        slots=_direction_slots(words),
    )


def pair_features(a: str, b: str, cosine: float) -> list[float]:
    """The feature row for one candidate pair (order as in `FEATURES`)."""
    fa, fb = _facts(a), _facts(b)
    set_a, set_b = fa.stem_set, fb.stem_set
    only_a, only_b = set_a - set_b, set_b - set_a
    caps_diff = len((fa.caps - fb.lower) | (fb.caps - fa.lower))
    both_code = bool(fa.code) and bool(fb.code)
    return [
        float(cosine),
        _jaccard(fa.lower, fb.lower),
        _jaccard(fa.ngrams, fb.ngrams),
        _jaccard(set_a, set_b),
        _set_mismatch(fa.numbers, fb.numbers),
        1.0
        if set(fa.numbers) == set(fb.numbers) and fa.numbers != fb.numbers and len(fa.numbers) > 1
        else 0.0,
        1.0 if both_code and set(fa.code) != set(fb.code) else 0.0,
        1.0 if bool(fa.code) != bool(fb.code) else 0.0,
        _set_mismatch(fa.idents, fb.idents),
        _order_disagreement(fa.idents, fb.idents),
        1.0 if fa.quoted and fb.quoted and set(fa.quoted) != set(fb.quoted) else 0.0,
        1.0 if bool(fa.quoted) != bool(fb.quoted) else 0.0,
        1.0 if fa.negated != fb.negated else 0.0,
        _antonym_hits(fa.lower | set_a, fb.lower | set_b),
        1.0 if fa.scope != fb.scope else 0.0,
        _order_disagreement(fa.stems, fb.stems),
        float(len(only_a)),
        float(len(only_b)),
        float(min(len(only_a), len(only_b))),
        float(caps_diff),
        min(fa.length, fb.length) / max(fa.length, fb.length, 1),
        _direction_swaps(fa.slots, fb.slots),
    ]


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelledPair:
    """One labelled pair from the data set: `match` says whether b may be served a's answer."""

    id: int
    group: int
    split: str
    kind: str
    a: str
    b: str
    match: bool
    context_a: str | None = None
    context_b: str | None = None


def load_pairs(path: Path = PAIRS_PATH) -> list[LabelledPair]:
    """Read the labelled pairs (JSON lines); a bad line raises ValueError naming file and line."""
    pairs: list[LabelledPair] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append(
                    LabelledPair(
                        id=int(row["id"]),
                        group=int(row["group"]),
                        split=str(row["split"]),
                        kind=str(row["kind"]),
                        a=str(row["a"]),
                        b=str(row["b"]),
                        match=row["label"] == "match",
                        context_a=row.get("context_a"),
                        context_b=row.get("context_b"),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: bad labelled pair: {exc}") from exc
    return pairs


class PairVerifier:
    """Logistic regression over `pair_features`: `probability(a, b, cosine)` in [0, 1].

    `weights` maps each feature name to its coefficient; `means`/`scales` standardise the
    features first (as at training time). Build one from the shipped file with `load()`.
    """

    def __init__(
        self,
        *,
        weights: dict[str, float],
        intercept: float,
        means: dict[str, float],
        scales: dict[str, float],
    ) -> None:
        missing = [f for f in FEATURES if f not in weights or f not in means or f not in scales]
        if missing:
            raise ValueError(f"verifier weights lack features: {', '.join(missing)}")
        self._w = np.array([weights[f] for f in FEATURES], dtype=np.float64)
        self._mu = np.array([means[f] for f in FEATURES], dtype=np.float64)
        self._sd = np.array([scales[f] or 1.0 for f in FEATURES], dtype=np.float64)
        self._b = float(intercept)

    @classmethod
    def load(
        cls, kind: EmbedderKind = EmbedderKind.TRANSFORMER, path: Path = WEIGHTS_PATH
    ) -> PairVerifier:
        """The shipped weights for one embedder kind."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read verifier weights: {exc}") from exc
        if doc.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path}: format {doc.get('format')!r}, expected {WEIGHTS_FORMAT}")
        try:
            entry = doc["models"][str(kind)]
        except KeyError as exc:
            raise ValueError(f"{path}: no verifier weights for embedder {kind}") from exc
        return cls(
            weights=entry["weights"],
            intercept=entry["intercept"],
            means=entry["means"],
            scales=entry["scales"],
        )

    @staticmethod
    def hard_veto(features: Sequence[float]) -> bool:
        """True when both sides name code, numbers or quoted text and these differ: no match.

        Where only one side quotes or the order of the same numbers differs, the learned
        weights decide ("No module named 'yaml'" may be asked with or without quotes).
        """
        f = dict(zip(FEATURES, features, strict=True))
        return bool(f["code_mismatch"] or f["number_mismatch"] or f["quoted_mismatch"])

    def probability_of(self, features: Sequence[float]) -> float:
        if self.hard_veto(features):
            return 0.0
        z = (np.asarray(features, dtype=np.float64) - self._mu) / self._sd
        logit = float(z @ self._w + self._b)
        return 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))

    def probability(self, a: str, b: str, cosine: float) -> float:
        """The probability that b asks what a asks (so a's answer serves b)."""
        return self.probability_of(pair_features(a, b, cosine))


def implied_pairs(pairs: Sequence[LabelledPair]) -> list[LabelledPair]:
    """The labelled pairs plus every pair their labels imply within a group.

    Each group is one base prompt (every pair's `a`) with paraphrases of it and hard negatives
    that each change one thing. A paraphrase asks what the base asks, so two paraphrases of
    one base match, a paraphrase and a negative do not, and two negatives (each naming
    something else) do not either. Traffic compares every prompt with every stored one, not
    only with the base: trained on the base pairs alone, the model learned that little word
    overlap means a paraphrase (the negatives are near copies of the base) and passed 27% of
    these implied negatives at 0.92. Conversation pairs (which differ by scope, not text) are
    left as they are.
    """
    out = list(pairs)
    seen = {(p.group, p.a, p.b) for p in pairs} | {(p.group, p.b, p.a) for p in pairs}
    by_group: dict[int, list[LabelledPair]] = {}
    for p in pairs:
        if p.kind != "conversation":
            by_group.setdefault(p.group, []).append(p)
    next_id = max((p.id for p in pairs), default=0) + 1
    for group, members in sorted(by_group.items()):
        same = [members[0].a] + [p.b for p in members if p.match]
        other = [p.b for p in members if not p.match]
        texts = list(dict.fromkeys(same + other))
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                if (group, a, b) in seen:
                    continue
                seen.add((group, a, b))
                match = a in same and b in same
                out.append(
                    LabelledPair(
                        id=next_id,
                        group=group,
                        split=members[0].split,
                        kind="implied-paraphrase" if match else "implied-negative",
                        a=a,
                        b=b,
                        match=match,
                    )
                )
                next_id += 1
    return out


def _cosines(embedder: Embedder, pairs: Sequence[LabelledPair]) -> list[float]:
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    index = {t: i for i, t in enumerate(texts)}
    rows = embedder.embed(texts)
    return [float(rows[index[p.a]] @ rows[index[p.b]]) for p in pairs]


def train_verifier(
    pairs: Sequence[LabelledPair], embedder: Embedder, *, seed: int = 11, c: float = 1.0
) -> tuple[PairVerifier, dict[str, Any]]:
    """Fit the logistic regression on `pairs` (the caller passes the train split only).

    Returns the verifier and its serialisable form (for `verifier.json`).
    """
    from sklearn.linear_model import LogisticRegression

    usable = [p for p in pairs if p.kind != "conversation"]  # those differ by scope, not text
    cos = _cosines(embedder, usable)
    x = np.array([pair_features(p.a, p.b, c_) for p, c_ in zip(usable, cos, strict=True)])
    y = np.array([1 if p.match else 0 for p in usable])
    # The vetoed pairs are decided by rule; the model learns on what the rules leave open.
    keep = np.array([not PairVerifier.hard_veto(row) for row in x])
    x, y = x[keep], y[keep]
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed, class_weight="balanced")
    model.fit((x - mu) / sd, y)
    doc = {
        "weights": dict(zip(FEATURES, map(float, model.coef_[0]), strict=True)),
        "intercept": float(model.intercept_[0]),
        "means": dict(zip(FEATURES, map(float, mu), strict=True)),
        "scales": dict(zip(FEATURES, map(float, sd), strict=True)),
        "trained_on": len(y),
        "seed": seed,
        "C": c,
    }
    verifier = PairVerifier(
        weights=doc["weights"], intercept=doc["intercept"], means=doc["means"], scales=doc["scales"]
    )
    return verifier, doc


def _main() -> None:  # pragma: no cover - the regeneration script, run by hand
    import argparse

    from intelligence.embed import LexicalEmbedder, TransformerEmbedder

    parser = argparse.ArgumentParser(description="Train the pair verifier; write verifier.json.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args()
    pairs = load_pairs()
    train = implied_pairs([p for p in pairs if p.split == "train"])
    test = [p for p in pairs if p.split == "test" and p.kind != "conversation"]
    implied_test = [p for p in implied_pairs(test) if p.kind.startswith("implied")]
    models: dict[str, Any] = {}
    for embedder in (TransformerEmbedder(), LexicalEmbedder()):
        verifier, doc = train_verifier(train, embedder, seed=args.seed)
        cos = _cosines(embedder, test)
        probs = [verifier.probability(p.a, p.b, c) for p, c in zip(test, cos, strict=True)]
        cos = _cosines(embedder, implied_test)
        implied_probs = [
            verifier.probability(p.a, p.b, c) for p, c in zip(implied_test, cos, strict=True)
        ]
        for bar in (0.5, 0.7, 0.8, 0.9):
            pos = [pr >= bar for pr, p in zip(probs, test, strict=True) if p.match]
            neg = [pr >= bar for pr, p in zip(probs, test, strict=True) if not p.match]
            implied_neg = [
                pr >= bar for pr, p in zip(implied_probs, implied_test, strict=True) if not p.match
            ]
            print(
                f"{embedder.kind}: bar {bar}: held-out paraphrases accepted "
                f"{sum(pos) / len(pos):.1%}, negatives accepted {sum(neg) / len(neg):.1%}, "
                f"implied negatives accepted {sum(implied_neg) / len(implied_neg):.1%}"
            )
        models[str(embedder.kind)] = doc
    args.out.write_text(
        json.dumps({"format": WEIGHTS_FORMAT, "models": models}, indent=1) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":  # pragma: no cover
    _main()
