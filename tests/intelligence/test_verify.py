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
