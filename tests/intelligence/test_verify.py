"""The pair verifier: features that name what must agree, shipped weights, the labelled set."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from intelligence.embed import EmbedderKind
from intelligence.verify import FEATURES, PAIRS_PATH, PairVerifier, load_pairs, pair_features


def feature(a: str, b: str, name: str, cosine: float = 0.9) -> float:
    return pair_features(a, b, cosine)[FEATURES.index(name)]


def test_code_spans_compare_exactly() -> None:
    """`j *= 2` and `j += 2` differ; the same code with other spacing does not."""
    assert feature("why does `j *= 2` loop", "why does `j += 2` loop", "code_mismatch") == 1.0
    assert feature("why does `j *= 2` loop", "my `j*=2` loops, why", "code_mismatch") == 0.0


def test_number_words_count_as_numbers() -> None:
    """'ten' and '10' agree; '10' and '100' do not."""
    assert (
        feature("the ten most recent orders", "the 10 most recent orders", "number_mismatch") == 0.0
    )
    assert (
        feature("the 10 most recent orders", "the 100 most recent orders", "number_mismatch") == 1
    )


def test_apostrophes_are_not_quotes() -> None:
    """ "what's switzerland's capital" quotes nothing."""
    assert (
        feature("What's Switzerland's capital?", "capital of Switzerland", "quoted_one_side") == 0
    )


def test_identifiers_and_antonyms_are_seen() -> None:
    """A renamed identifier and an opposite verb each register."""
    assert feature("rename fetch_user", "rename fetch_users", "identifier_mismatch") == 1.0
    assert feature("increase the limit", "decrease the limit", "antonyms") >= 1.0


def test_vetoed_pairs_get_probability_zero() -> None:
    """Different code spans are never a match, whatever the cosine."""
    verifier = PairVerifier.load()
    assert verifier.probability("run `make test`", "run `make demo`", 0.99) == 0.0


@pytest.mark.parametrize("kind", list(EmbedderKind))
def test_weights_ship_for_every_embedder(kind: EmbedderKind) -> None:
    """Both the transformer and the lexical fallback have trained weights in the package."""
    verifier = PairVerifier.load(kind)
    p = verifier.probability("How do I exit vim?", "how do you quit vim", 0.9)
    assert 0.0 <= p <= 1.0


def test_weights_file_names_its_training() -> None:
    """The shipped weights record their seed and training size (regenerable)."""
    doc = json.loads((PAIRS_PATH.parent / "verifier.json").read_text())
    for entry in doc["models"].values():
        assert entry["seed"] == 11 and entry["trained_on"] > 100


def test_the_labelled_set_has_the_promised_shape() -> None:
    """At least 300 pairs, both labels, every kind of hard negative, a held-out split by group."""
    pairs = load_pairs()
    assert len(pairs) >= 300
    kinds = Counter(p.kind for p in pairs)
    for kind in (
        "paraphrase",
        "entity",
        "number",
        "identifier",
        "negation",
        "direction",
        "scope",
        "code",
        "conversation",
    ):
        assert kinds[kind] > 0, kind
    train_groups = {p.group for p in pairs if p.split == "train"}
    test_groups = {p.group for p in pairs if p.split == "test"}
    assert train_groups and test_groups and not train_groups & test_groups


def test_a_bad_pairs_line_names_file_and_line(tmp_path) -> None:
    """A malformed line raises ValueError with path:line."""
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match=r"pairs\.jsonl:1"):
        load_pairs(path)


def test_a_swapped_direction_registers_and_a_reordered_sentence_does_not() -> None:
    """From/to, off/onto and "instead of" name an old and a new end; swapping them counts."""
    a = "Move the database from PostgreSQL to SQLite."
    assert feature(a, "Migrate the database off SQLite onto PostgreSQL.", "direction_swap") == 2
    assert feature(a, "From PostgreSQL, move the database to SQLite.", "direction_swap") == 0
    assert (
        feature(
            "Return an empty list rather than None.",
            "Return None instead of an empty list.",
            "direction_swap",
        )
        >= 1
    )


def test_implied_pairs_follow_from_the_labels() -> None:
    """Within a group, two paraphrases of the base match; a paraphrase and a negative, or two
    negatives, do not; given pairs are neither repeated nor relabelled."""
    from intelligence.verify import LabelledPair, implied_pairs

    def pair(n: int, b: str, match: bool, kind: str = "paraphrase") -> LabelledPair:
        return LabelledPair(id=n, group=0, split="train", kind=kind, a="base", b=b, match=match)

    given = [
        pair(1, "p1", True),
        pair(2, "p2", True),
        pair(3, "n1", False, "entity"),
        pair(4, "n2", False, "number"),
    ]
    derived = {frozenset((p.a, p.b)): p.match for p in implied_pairs(given)[len(given) :]}
    assert derived == {
        frozenset(("p1", "p2")): True,
        frozenset(("p1", "n1")): False,
        frozenset(("p1", "n2")): False,
        frozenset(("p2", "n1")): False,
        frozenset(("p2", "n2")): False,
        frozenset(("n1", "n2")): False,
    }
