"""SemanticDedup: verified semantic hits, exact scope isolation, TTL, eviction, persistence."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest
from fakeclock import FakeClock

from intelligence import IndexFileError, SemanticDedup
from intelligence.embed import EmbedderKind, TransformerEmbedder


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def dedup(minilm: TransformerEmbedder, clock: FakeClock) -> SemanticDedup[str]:
    return SemanticDedup(minilm, clock=clock)


def test_a_paraphrase_gets_the_stored_answer(dedup: SemanticDedup[str]) -> None:
    """A reworded prompt in the same scope is served the stored value, with its similarity."""
    dedup.insert("How do I reverse a list in Python?", "use reversed()", scope="t/c1")
    hit = dedup.lookup("What's the way to reverse a Python list?", scope="t/c1")
    assert hit is not None
    assert hit.value == "use reversed()"
    assert hit.text == "How do I reverse a list in Python?"
    assert 0.8 < hit.similarity < 1.0


def test_the_same_text_is_an_exact_hit(dedup: SemanticDedup[str]) -> None:
    """The same prompt (modulo case and spaces) hits with similarity 1."""
    dedup.insert("Explain what a mutex is.", "a lock", scope="s")
    hit = dedup.lookup("  explain what a   MUTEX is. ", scope="s")
    assert hit is not None and hit.similarity == 1.0 and hit.value == "a lock"


def test_a_hit_never_crosses_scopes(dedup: SemanticDedup[str]) -> None:
    """The identical prompt in another scope is a miss: scopes are isolated exactly."""
    dedup.insert("Now make it faster.", "answer for conversation 1", scope=("tenant-a", "conv-1"))
    assert dedup.lookup("Now make it faster.", scope=("tenant-a", "conv-2")) is None
    assert dedup.lookup("Now make it faster.", scope=("tenant-b", "conv-1")) is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What is the capital of Switzerland?", "What is the capital of Sweden?"),
        (
            "Why does `while j < n: j *= 2` never terminate when j starts at 0?",
            "Why does `while j < n: j += 2` never terminate when j starts at 0?",
        ),
        ("Convert 100 degrees Fahrenheit to Celsius.", "Convert 10 degrees Fahrenheit to Celsius."),
        (
            "Rename fetch_user to get_user across the codebase.",
            "Rename fetch_users to get_users across the codebase.",
        ),
        ("List all open issues labelled bug.", "List all closed issues labelled bug."),
    ],
)
def test_a_hard_negative_is_not_merged(dedup: SemanticDedup[str], stored: str, asked: str) -> None:
    """Another entity, operator, number, identifier or scope word is another question."""
    dedup.insert(stored, "stored answer", scope="s")
    assert dedup.lookup(asked, scope="s") is None


def test_the_threshold_is_read_live(minilm: TransformerEmbedder, clock: FakeClock) -> None:
    """Raising the live threshold turns a hit into a miss without rebuilding anything."""
    bar = {"value": 0.5}
    dedup: SemanticDedup[str] = SemanticDedup(minilm, threshold=lambda: bar["value"], clock=clock)
    dedup.insert("How do I exit vim?", ":q", scope=None)
    assert dedup.lookup("how do you quit vim", scope=None) is not None
    bar["value"] = 1.0
    assert dedup.lookup("how do you quit vim", scope=None) is None


def test_entries_expire_after_their_ttl(minilm: TransformerEmbedder, clock: FakeClock) -> None:
    """An entry older than ttl_s is gone; a younger one is still served."""
    dedup: SemanticDedup[str] = SemanticDedup(minilm, ttl_s=60, clock=clock)
    dedup.insert("Explain the CAP theorem in simple terms.", "C, A, P", scope="s")
    clock.now += 59
    assert dedup.lookup("Explain the CAP theorem in simple terms.", scope="s") is not None
    clock.now += 2
    assert dedup.lookup("Explain the CAP theorem in simple terms.", scope="s") is None
    assert len(dedup) == 0 and dedup.stats().expired == 1


def test_the_least_recently_used_entry_is_evicted(
    minilm: TransformerEmbedder, clock: FakeClock
) -> None:
    """Beyond max_entries the entry used longest ago goes first."""
    dedup: SemanticDedup[str] = SemanticDedup(minilm, max_entries=2, clock=clock)
    first = dedup.insert("What is the capital of France?", "Paris", scope="s")
    dedup.insert("Who painted the Mona Lisa?", "Leonardo", scope="s")
    assert dedup.lookup("What is the capital of France?", scope="s") is not None  # now recent
    dedup.insert("How many continents are there?", "seven", scope="s")
    assert len(dedup) == 2
    assert dedup.lookup("Who painted the Mona Lisa?", scope="s") is None
    hit = dedup.lookup("What is the capital of France?", scope="s")
    assert hit is not None and hit.entry_id == first
    assert dedup.stats().evicted == 1


def test_the_index_persists_and_reloads(
    minilm: TransformerEmbedder, clock: FakeClock, tmp_path
) -> None:
    """Saved entries are served by a new instance started on the same file."""
    path = tmp_path / "dedup.idx"
    dedup: SemanticDedup[dict[str, str]] = SemanticDedup(minilm, path=path, clock=clock)
    dedup.insert(
        "How do I undo the last git commit but keep the changes?", {"a": "reset"}, scope=("t", 1)
    )
    dedup.save()
    again: SemanticDedup[dict[str, str]] = SemanticDedup(minilm, path=path, clock=clock)
    hit = again.lookup(
        "How can I revert my most recent git commit while keeping my changes?", scope=("t", 1)
    )
    assert hit is not None and hit.value == {"a": "reset"}
    assert (
        again.lookup("How do I undo the last git commit but keep the changes?", scope=("t", 2))
        is None
    )


def test_reloading_drops_entries_that_expired_meanwhile(
    minilm: TransformerEmbedder, clock: FakeClock, tmp_path
) -> None:
    """An entry whose TTL ran out while the process was down is not loaded."""
    path = tmp_path / "dedup.idx"
    dedup: SemanticDedup[str] = SemanticDedup(minilm, path=path, ttl_s=10, clock=clock)
    dedup.insert("What is a mutex?", "a lock", scope="s")
    dedup.save()
    clock.now += 11
    again: SemanticDedup[str] = SemanticDedup(minilm, path=path, ttl_s=10, clock=clock)
    assert again.lookup("What is a mutex?", scope="s") is None
    assert len(again) == 0


def test_a_corrupt_index_file_is_an_error_naming_it(minilm: TransformerEmbedder, tmp_path) -> None:
    """A file that is not our index raises IndexFileError with its path."""
    path = tmp_path / "dedup.idx"
    path.write_bytes(b"not a pickle")
    dedup: SemanticDedup[str] = SemanticDedup(minilm, path=path)
    with pytest.raises(IndexFileError, match=r"dedup\.idx"):
        dedup.lookup("anything", scope="s")


def test_a_wrong_hit_raises_that_entrys_bar(dedup: SemanticDedup[str]) -> None:
    """After a hit is reported wrong, the same lookup no longer gets that entry."""
    dedup.insert("How do I reverse a list in Python?", "use reversed()", scope="s")
    hit = dedup.lookup("What's the way to reverse a Python list?", scope="s")
    assert hit is not None and hit.confidence < 1.0
    dedup.feedback(hit, correct=False)
    assert dedup.entry_bar(hit.entry_id) > hit.confidence
    assert dedup.lookup("What's the way to reverse a Python list?", scope="s") is None
    assert dedup.stats().false_hit_rate == 1.0


def test_correct_reports_leave_the_bar_at_the_live_threshold(dedup: SemanticDedup[str]) -> None:
    """Hits reported right do not raise the entry's bar."""
    entry = dedup.insert("Explain what a mutex is.", "a lock", scope="s")
    hit = dedup.lookup("What is a mutex?", scope="s")
    assert hit is not None
    dedup.feedback(hit, correct=True)
    assert dedup.entry_bar(entry) == dedup.threshold


def test_enough_correct_evidence_lowers_a_raised_bar_within_the_bound(
    minilm: TransformerEmbedder,
) -> None:
    """One wrong report among many right ones above it fits a 5% bound: the bar comes down."""
    dedup: SemanticDedup[str] = SemanticDedup(minilm, threshold=0.0, max_false_hit_rate=0.05)
    entry = dedup.insert("What is a mutex?", "a lock", scope="s")
    dedup.feedback(entry, correct=False, confidence=0.7)
    assert dedup.entry_bar(entry) > 0.7
    for _ in range(19):
        dedup.feedback(entry, correct=True, confidence=0.9)
    assert dedup.entry_bar(entry) <= 0.7


def test_concurrent_async_lookups_share_one_embedding_call(
    minilm: TransformerEmbedder, clock: FakeClock
) -> None:
    """Lookups awaited together are embedded in one batch, off the event loop's thread."""

    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[int, str]] = []

        dim = minilm.dim
        kind = minilm.kind

        def embed(self, texts):
            self.calls.append((len(texts), threading.current_thread().name))
            return minilm.embed(texts)

    counting = Counting()
    dedup: SemanticDedup[str] = SemanticDedup(counting, clock=clock)
    dedup.insert("How do I reverse a list in Python?", "use reversed()", scope="s")
    counting.calls.clear()

    async def main() -> list[object]:
        return await asyncio.gather(
            dedup.alookup("What's the way to reverse a Python list?", scope="s"),
            dedup.alookup("What is the capital of Sweden?", scope="s"),
            dedup.alookup("How do I reverse a list in Python?", scope="other"),
        )

    hits = asyncio.run(main())
    assert [h is not None for h in hits] == [True, False, False]
    assert len(counting.calls) == 1 and counting.calls[0][0] == 3
    assert counting.calls[0][1] != threading.main_thread().name


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"max_entries": 0}, "max_entries"),
        ({"candidates": 0}, "candidates"),
        ({"max_false_hit_rate": 1.0}, "max_false_hit_rate"),
    ],
)
def test_bad_parameters_are_value_errors_naming_them(
    minilm: TransformerEmbedder, kwargs: dict[str, float], name: str
) -> None:
    """The constructor rejects an out-of-range parameter by name."""
    with pytest.raises(ValueError, match=name):
        SemanticDedup(minilm, **kwargs)


def test_an_unhashable_scope_is_a_type_error(dedup: SemanticDedup[str]) -> None:
    """A scope must be hashable (a list is not)."""
    with pytest.raises(TypeError):
        dedup.insert("x", "y", scope=["not", "hashable"])


def test_a_lookup_searches_in_its_own_thread_only(dedup: SemanticDedup[str]) -> None:
    """One query's search runs single-threaded (an OpenMP team for it stalls behind BLAS or
    torch threads still spinning from an embedding: 2-4x slower lookups at 100,000 entries),
    and only the searching thread's setting changes."""
    import faiss

    dedup.insert("How do I exit vim?", ":q", scope="s")
    seen: list[int] = []

    def search() -> None:
        dedup.lookup("how do you quit vim", scope="s")
        seen.append(faiss.omp_get_max_threads())

    worker = threading.Thread(target=search)
    worker.start()
    worker.join()
    assert seen == [1]


class _Unused:
    """An embedder for tests that pass every vector in: it must never be asked to embed."""

    dim = 8
    kind = EmbedderKind.TRANSFORMER

    def embed(self, texts):
        raise AssertionError(f"embedded {texts!r}")


class _ScriptedVerifier:
    """A verifier whose verdict on each stored text is scripted (the query is not looked at)."""

    def __init__(self, verdicts: dict[str, float]) -> None:
        self.verdicts = verdicts
        self.asked: list[str] = []

    def probability(self, a: str, b: str, cosine: float) -> float:
        self.asked.append(b)
        return self.verdicts[b]


def _at_cosine(cos: float) -> np.ndarray:
    """A unit vector at cosine `cos` from the query vector e0 (all in the e0/e1 plane)."""
    v = np.zeros(8, dtype=np.float32)
    v[0], v[1] = cos, math.sqrt(1.0 - cos * cos)
    return v


_QUERY = _at_cosine(1.0)


def _scripted(verdicts: dict[str, float], cosines: dict[str, float]) -> SemanticDedup[str]:
    dedup: SemanticDedup[str] = SemanticDedup(
        _Unused(), verifier=_ScriptedVerifier(verdicts), threshold=0.92, clock=FakeClock(0.0)
    )
    for text, cos in cosines.items():
        dedup.insert(text, f"answer to {text}", scope="s", vector=_at_cosine(cos))
    return dedup


def test_a_nearer_candidate_turned_down_does_not_hide_a_farther_one_that_passes() -> None:
    """The verifier also turns down near-identical rewordings (MiniLM puts "What's the way to
    reverse a Python list?" at 0.999 from "What is the way ...", and the verifier scores it
    0.34), so a rejection is not taken as "another question than that neighbourhood".
    """
    dedup = _scripted(
        {"What's the way to reverse a Python list?": 0.34, "How do I reverse a list?": 1.0},
        {"What's the way to reverse a Python list?": 0.999, "How do I reverse a list?": 0.97},
    )
    hit = dedup.lookup("What is the way to reverse a Python list?", scope="s", vector=_QUERY)
    assert hit is not None and hit.value == "answer to How do I reverse a list?"


def test_the_nearest_passing_candidate_is_served_not_the_most_confident() -> None:
    """Two candidates both pass: the nearer one is served even if a farther one scores higher
    (the fleet replay served "Is Pluto a planet?" the answer to "Which planet is the biggest?"
    past "Is Pluto still considered a planet?").
    """
    dedup = _scripted(
        {"Is Pluto still considered a planet?": 0.95, "Which planet is the biggest?": 1.0},
        {"Is Pluto still considered a planet?": 0.93, "Which planet is the biggest?": 0.63},
    )
    hit = dedup.lookup("Is Pluto a planet?", scope="s", vector=_QUERY)
    assert hit is not None and hit.value == "answer to Is Pluto still considered a planet?"


def test_a_candidate_held_back_by_its_learned_bar_lets_the_next_one_be_served() -> None:
    """A nearer entry whose own bar was raised by wrong reports is skipped for the next one."""
    dedup = _scripted(
        {"How do I exit vim?": 0.95, "how do you quit vim": 0.97},
        {"How do I exit vim?": 0.95, "how do you quit vim": 0.9},
    )
    near = dedup.lookup("How can I leave vim?", scope="s", vector=_QUERY)
    assert near is not None and near.value == "answer to How do I exit vim?"
    for _ in range(3):
        dedup.feedback(near, correct=False)
    assert dedup.entry_bar(near.entry_id) > 0.95
    hit = dedup.lookup("How can I leave vim?", scope="s", vector=_QUERY)
    assert hit is not None and hit.value == "answer to how do you quit vim"


@pytest.mark.parametrize("entries", [50, 6_000])  # an exact scan, and an inverted file (from 4,096)
def test_removed_vectors_nearest_the_query_are_gone_and_the_nearest_live_ones_found(
    entries: int,
) -> None:
    """Removal is real: a search whose 20 nearest vectors were removed returns none of them
    and still the near neighbours left."""
    from intelligence.dedup import _ScopeIndex

    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((entries, 16)).astype(np.float32)
    # 25 rewordings of the first prompt (cosine ~0.9 to it): the neighbours dedup looks for.
    vectors[1:26] = vectors[0] + 0.3 * rng.standard_normal((25, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = _ScopeIndex(16)
    index.add_many([(i, v) for i, v in enumerate(vectors)])
    query = vectors[0]
    order = np.argsort(-(vectors @ query))
    removed = {int(i) for i in order[:20]}  # the 20 nearest are gone
    for i in removed:
        index.remove(i)
    assert len(index) == entries - 20
    found = [i for i, _ in index.search(query, 5)]
    assert len(found) == 5 and not set(found) & removed
    nearest_live = {int(i) for i in order[20:25]}
    assert len(set(found) & nearest_live) >= (5 if entries < 4096 else 4)  # IVF: approximate


def test_the_index_is_retrained_as_it_grows_and_shrinks_and_finds_every_stored_vector() -> None:
    """From 4,096 vectors the scope's index is an inverted file, rebuilt with more lists at 4×
    the size it was trained with and with fewer (or an exact scan) at a quarter; through
    every rebuild each stored vector is its own nearest neighbour and removed ones are gone."""
    from intelligence.dedup import _lists_for, _ScopeIndex

    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((17_000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = _ScopeIndex(16)
    for i, v in enumerate(vectors):
        index.add(i, v)
    assert index._index.nlist == _lists_for(16_384)  # rebuilt at 4,096, then at 16,384
    for i in range(0, 17_000, 997):
        assert index.search(vectors[i], 1)[0][0] == i
    for i in range(16_000):
        index.remove(i)
    assert len(index) == 1_000 and index._index.ntotal == 1_000
    assert not hasattr(index._index, "nlist")  # back to an exact scan below a quarter
    for i in range(16_000, 17_000, 97):
        assert index.search(vectors[i], 1)[0][0] == i
    assert all(found >= 16_000 for found, _ in index.search(vectors[5], 10))
