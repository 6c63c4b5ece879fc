"""Semantic dedup: serve a stored answer to a prompt that asks the same thing in other words.

    dedup = SemanticDedup()                      # the packaged MiniLM, FAISS, learned verification
    dedup.insert(text, value, scope="tenant-a/conv-1")
    hit = dedup.lookup(text, scope="tenant-a/conv-1")   # Hit | None
    hit.value, hit.similarity, hit.text

A lookup embeds the prompt, searches the scope's FAISS index for the nearest stored prompts,
and then *verifies* each candidate: cosine similarity alone merges hard negatives (another
number, identifier, entity, a negation, a code change), so a learned `PairVerifier` must give a
match probability at or above the bar. The bar is the live threshold (a callable, read at every
lookup: it is one of the self-tuned parameters), raised per entry by feedback: a hit reported
wrong lifts that entry's bar above the confidence that produced it, and correct reports bring
it back only while the entry's observed false-hit rate stays within `max_false_hit_rate`.

Scopes are isolated exactly: each scope has its own index, so a hit can only come from an
entry inserted under an equal scope. Entries expire after `ttl_s` and the least recently used
go first beyond `max_entries`. With `path`, the entries persist to that file (`save()`, and
`close()`) and load again on first use.

Embedding is blocking CPU work, so `alookup`/`ainsert` run it off the event loop, on one worker
thread of this dedup's own: at most one embedding runs at a time (several at once only fight
over the same cores). `alookup` batches dynamically: the lookups that arrive while a batch is
embedded wait for the next one (up to `max_batch` prompts), which starts as soon as the running
one ends. With `max_wait_s`, a lookup that would wait longer than that for the embedder is a
miss at once (counted in `DedupStats.skipped_busy`): the estimate is the running batch's
remaining time plus the queued prompts times the per-prompt time of recent batches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import pickle
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from intelligence.embed import DefaultEmbedder, Embedder
from intelligence.errors import IndexFileError

if TYPE_CHECKING:
    import numpy.typing as npt

    from intelligence.verify import PairVerifier

__all__ = ["DedupStats", "Hit", "SemanticDedup"]

log = logging.getLogger(__name__)

V = TypeVar("V")

_FILE_FORMAT = 1
_IVF_FROM = 4096  # below this an exact scan is as fast as an inverted file and needs no training


@dataclass(frozen=True, slots=True)
class Hit(Generic[V]):
    """A stored answer served to a lookup.

    `similarity` is the cosine of the two prompts' embeddings; `confidence` the verifier's
    probability that they ask the same thing (1.0 for the same text); `entry_id` names the
    entry for `feedback()`.
    """

    value: V
    similarity: float
    text: str
    confidence: float
    entry_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupStats:
    """Counters since start: lookups searched, hits (semantic ones apart), feedback,
    evictions, and async lookups skipped because the embedder was busy."""

    entries: int
    lookups: int
    hits: int
    semantic_hits: int
    rejected_by_verifier: int
    reported_hits: int
    reported_wrong: int
    expired: int
    evicted: int
    skipped_busy: int
    """Async lookups answered as a miss without a search: the embedder's backlog would have
    kept them waiting longer than `max_wait_s`."""

    @property
    def false_hit_rate(self) -> float | None:
        """Share of hits reported wrong (None before any feedback)."""
        return self.reported_wrong / self.reported_hits if self.reported_hits else None


@dataclass(slots=True)
class _Entry:
    id: int
    scope: Hashable
    text: str
    key: str
    value: Any
    vector: npt.NDArray[np.float32]
    expires_at: float | None
    # (confidence, correct) for each hit of this entry that someone reported on; None until
    # the first (most entries never get one: an empty list each is an object the GC walks)
    observations: list[tuple[float, bool]] | None = None
    learned_bar: float = 0.0


# How far one timed batch moves the per-prompt estimate: it follows a change of load (batch
# sizes, CPU contention) within a few batches, and one slow batch (a GC pause) moves it a fifth.
_COST_EWMA = 0.2

# A lookup waiting for a batch: its text, scope, and the future its caller awaits.
_Waiting = tuple[str, Hashable, asyncio.Future[Hit[V] | None]]


def _text_key(text: str) -> str:
    # The same text modulo case and whitespace runs is the same prompt.
    return re.sub(r"\s+", " ", text).strip().lower()


def _learned_bar(observations: Sequence[tuple[float, bool]], bound: float) -> float:
    """The lowest confidence bar at which this entry's observed false-hit rate is within bound.

    Hits at confidences at or above the bar are the ones the entry would serve again; any
    wrong ones among them count against it. With no wrong report the bar is 0 (the live
    threshold alone decides).
    """
    if not any(not ok for _, ok in observations):
        return 0.0
    ordered = sorted(observations)
    # Try each candidate bar from the lowest: the bar just above the i-th observation keeps
    # the observations after it.
    candidates = [0.0] + [c + 1e-9 for c, _ in ordered]
    for i, bar in enumerate(candidates):
        kept = ordered[i:]
        wrong = sum(1 for _, ok in kept if not ok)
        if not kept or wrong / len(kept) <= bound:
            return bar
    return candidates[-1]


_NPROBE = 16  # inverted lists searched per query (recall@8 0.94 on 100,000 random vectors)


def _lists_for(n: int) -> int:
    """Inverted lists for `n` vectors: FAISS's guideline of about 4·√n, with the 39 training
    points per list its k-means asks for."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


class _ScopeIndex:
    """One scope's vectors in FAISS: an exact scan while small, an inverted file (IVF) once large.

    Why IVF and not HNSW: a lookup follows an embedding (or, in the benchmark, a numpy scan)
    that has pushed the index out of the CPU caches, and HNSW's walk touches vectors scattered
    over the whole index; an IVF query scans a few contiguous lists. Measured on 100,000 random
    unit vectors, one thread, after touching 160 MB: HNSW (M 32, efSearch 64) 977 µs p50 at
    recall@8 0.91; IVF (1,024 lists, 16 probed) 443 µs at 0.94 (warm caches: 555 vs 274 µs).
    IVF also removes vectors for real (no tombstones to skip) and trains in seconds where the
    graph took ~45 s to rebuild.

    The lists are trained on the vectors held when the index is built; it is rebuilt (with
    more or fewer lists) once it holds four times as many, or a quarter as many.
    """

    def __init__(self, dim: int) -> None:
        self._dim = dim
        self._vectors: dict[int, npt.NDArray[np.float32]] = {}
        self._index: Any = None
        self._quantizer: Any = None  # the IVF's coarse quantizer: the index does not own it
        self._built_with = 0  # vectors held when the index was built

    def __len__(self) -> int:
        return len(self._vectors)

    def _build(self) -> None:
        import faiss

        n = self._built_with = len(self._vectors)
        ids = np.fromiter(self._vectors, dtype=np.int64, count=n)
        matrix = np.vstack([self._vectors[i] for i in ids]) if n else None
        if n >= _IVF_FROM:
            self._quantizer = faiss.IndexFlatIP(self._dim)
            index = faiss.IndexIVFFlat(
                self._quantizer, self._dim, _lists_for(n), faiss.METRIC_INNER_PRODUCT
            )
            index.nprobe = _NPROBE
            index.set_direct_map_type(faiss.DirectMap.Hashtable)  # removal by id, no list scan
            index.train(matrix)
        else:
            self._quantizer = None
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        if matrix is not None:
            index.add_with_ids(matrix, ids)
        self._index = index

    def _outgrown(self) -> bool:
        n = len(self._vectors)
        if self._built_with < _IVF_FROM:
            return n >= _IVF_FROM
        return n >= 4 * self._built_with or n < self._built_with // 4

    def add(self, entry_id: int, vector: npt.NDArray[np.float32]) -> None:
        self._vectors[entry_id] = vector
        if self._index is None or self._outgrown():
            self._build()
            return
        self._index.add_with_ids(vector.reshape(1, -1), np.array([entry_id], dtype=np.int64))

    def add_many(self, items: Sequence[tuple[int, npt.NDArray[np.float32]]]) -> None:
        for entry_id, vector in items:
            self._vectors[entry_id] = vector
        self._build()

    def remove(self, entry_id: int) -> None:
        if self._vectors.pop(entry_id, None) is None:
            return
        if self._outgrown():
            self._build()
            return
        import faiss

        ids = np.array([entry_id], dtype=np.int64)
        # A hashtable direct map removes only by an explicit array of ids.
        self._index.remove_ids(faiss.IDSelectorArray(1, faiss.swig_ptr(ids)))

    def search(self, vector: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        if not self._vectors:
            return []
        import faiss

        # One query is a few hundred microseconds of work: an OpenMP team for it costs more
        # than it saves, and stalls behind BLAS/torch threads still spinning from an
        # embedding. The setting is the calling thread's own (OpenMP's nthreads-var).
        faiss.omp_set_num_threads(1)
        scores, ids = self._index.search(vector.reshape(1, -1), min(k, len(self._vectors)))
        return [(i, s) for s, i in zip(scores[0].tolist(), ids[0].tolist(), strict=True) if i >= 0]


class SemanticDedup(Generic[V]):
    """Stores answers by prompt and serves them to prompts that ask the same thing.

    `threshold` is the bar a candidate's verified match probability must reach (or, with
    `verify=False`, its cosine); pass a callable to have it read live at every lookup.
    `min_cosine` only bounds which neighbours are worth verifying. `clock` gives wall-clock
    seconds (TTLs survive a restart through the persisted file).

    `alookup` embeds at most `max_batch` prompts in one call; `max_wait_s` (None: no limit)
    is how long a lookup may wait for the embedder before it is answered as a miss instead,
    estimated on `timer` (monotonic seconds) from how long recent batches took.

    Raises ValueError for a bad parameter; `IndexFileError` when `path` holds a file that
    cannot be read (at first use).
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        threshold: float | Callable[[], float] = 0.8,
        verify: bool = True,
        verifier: PairVerifier | None = None,
        min_cosine: float = 0.6,
        candidates: int = 8,
        ttl_s: float | None = 3600.0,
        max_entries: int = 100_000,
        max_false_hit_rate: float = 0.03,
        path: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
        max_batch: int = 64,
        max_wait_s: float | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(threshold) and not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not -1.0 <= min_cosine <= 1.0:
            raise ValueError(f"min_cosine must be in [-1, 1], got {min_cosine}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not 0.0 <= max_false_hit_rate < 1.0:
            raise ValueError(f"max_false_hit_rate must be in [0, 1), got {max_false_hit_rate}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s is not None and not (0.0 <= max_wait_s < float("inf")):
            raise ValueError(f"max_wait_s must be a finite number >= 0 or None, got {max_wait_s}")
        self._embedder: Embedder = embedder if embedder is not None else DefaultEmbedder()
        self._threshold = threshold if callable(threshold) else (lambda t=float(threshold): t)
        self._verify = verify
        self._verifier = verifier
        self._min_cosine = min_cosine
        self._k = candidates
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._bound = max_false_hit_rate
        self._path = Path(path) if path is not None else None
        self._clock = clock
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._timer = timer

        self._lock = threading.RLock()
        self._entries: dict[int, _Entry] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._expiry: deque[tuple[float, int]] = deque()  # insertion order = expiry order
        self._scopes: dict[Hashable, _ScopeIndex] = {}
        self._keys: dict[tuple[Hashable, str], int] = {}
        self._next_id = 1
        self._loaded = False
        self.load_problem: str | None = None
        """Why the file at `path` was not loaded (another embedder kind or dimension), once
        the first use found it so; None otherwise."""
        self._recent_vectors: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self._counts = dict.fromkeys(
            (
                "lookups",
                "hits",
                "semantic_hits",
                "rejected_by_verifier",
                "reported_hits",
                "reported_wrong",
                "expired",
                "evicted",
                "skipped_busy",
            ),
            0,
        )
        # The async side, touched only on the event loop's thread: the lookups waiting for the
        # next batch, the task that runs batches while any wait, the running batch's (start,
        # size), and the per-prompt seconds of recent batches (None until one was timed).
        self._pending: list[_Waiting[V]] = []
        self._batcher: asyncio.Task[None] | None = None
        self._running: tuple[float, int] | None = None
        self._per_prompt_s: float | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # --- properties ------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def max_wait_s(self) -> float | None:
        """The longest an async lookup may wait for the embedder (None: no limit)."""
        return self._max_wait_s

    @property
    def path(self) -> Path | None:
        """The file the entries persist to (None: kept in memory only)."""
        return self._path

    @property
    def threshold(self) -> float:
        """The live bar as read now."""
        return float(self._threshold())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> DedupStats:
        with self._lock:
            return DedupStats(entries=len(self._entries), **self._counts)

    # --- embedding -------------------------------------------------------------------------

    def _embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        rows = self._embedder.embed(list(texts))
        with self._lock:
            for text, row in zip(texts, rows, strict=True):
                self._recent_vectors[text] = row
                self._recent_vectors.move_to_end(text)
            while len(self._recent_vectors) > 1024:
                self._recent_vectors.popitem(last=False)
        return rows

    def _vector_for(self, text: str) -> npt.NDArray[np.float32]:
        with self._lock:
            cached = self._recent_vectors.get(text)
        return cached if cached is not None else self._embed([text])[0]

    def cached_vector(self, text: str) -> npt.NDArray[np.float32] | None:
        """`text`'s embedding if it was embedded lately (a lookup of it), else None."""
        with self._lock:
            return self._recent_vectors.get(text)

    def warm(self) -> None:
        """Load what the first lookup would (the model, the verifier, the index file) now.
        Blocking: call it from a worker thread."""
        self._embedder.embed(["warm up"])
        if self._verify:
            self._the_verifier()
        with self._lock:
            self._ensure_loaded()

    def _the_verifier(self) -> PairVerifier:
        if self._verifier is None:
            from intelligence.verify import PairVerifier

            self._verifier = PairVerifier.load(self._embedder.kind)
        return self._verifier

    # --- store -----------------------------------------------------------------------------

    def insert(
        self,
        text: str,
        value: V,
        *,
        scope: Hashable = None,
        vector: npt.NDArray[np.float32] | None = None,
    ) -> int:
        """Store `value` as the answer to `text` in `scope`; returns the entry id.

        The same text (modulo case and whitespace) in the same scope replaces the older entry.
        """
        hash(scope)  # an unhashable scope fails here, with Python's own TypeError
        row = self._vector_for(text) if vector is None else np.asarray(vector, np.float32)
        with self._lock:
            self._ensure_loaded()
            self._sweep_expired()
            key = _text_key(text)
            old = self._keys.get((scope, key))
            if old is not None:
                self._remove(old)
            entry_id = self._next_id
            self._next_id += 1
            expires = None if self._ttl_s is None else self._clock() + self._ttl_s
            self._add(
                _Entry(
                    id=entry_id,
                    scope=scope,
                    text=text,
                    key=key,
                    value=value,
                    vector=row,
                    expires_at=expires,
                )
            )
            while len(self._entries) > self._max_entries:
                self._remove(next(iter(self._lru)))  # the least recently used
                self._counts["evicted"] += 1
            return entry_id

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.id] = entry
        self._lru[entry.id] = None
        if entry.expires_at is not None:
            self._expiry.append((entry.expires_at, entry.id))
        self._keys[(entry.scope, entry.key)] = entry.id
        index = self._scopes.get(entry.scope)
        if index is None:
            index = self._scopes[entry.scope] = _ScopeIndex(self._embedder.dim)
        index.add(entry.id, entry.vector)

    def _remove(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return
        self._lru.pop(entry_id, None)
        if self._keys.get((entry.scope, entry.key)) == entry_id:
            del self._keys[(entry.scope, entry.key)]
        index = self._scopes.get(entry.scope)
        if index is not None:
            index.remove(entry_id)
            if not len(index):
                del self._scopes[entry.scope]

    def _sweep_expired(self) -> None:
        now = self._clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, entry_id = self._expiry.popleft()
            entry = self._entries.get(entry_id)
            if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
                self._remove(entry_id)
                self._counts["expired"] += 1

    def remove(self, entry_id: int) -> bool:
        """Forget one entry; True if it was there."""
        with self._lock:
            present = entry_id in self._entries
            self._remove(entry_id)
            return present

    # --- lookup ----------------------------------------------------------------------------

    def lookup(
        self,
        text: str,
        *,
        scope: Hashable = None,
        vector: npt.NDArray[np.float32] | None = None,
    ) -> Hit[V] | None:
        """The stored answer for a prompt that asks what `text` asks in `scope`, or None.

        `vector` is `text`'s embedding when the caller already has it.
        """
        hash(scope)
        row = self._vector_for(text) if vector is None else np.asarray(vector, np.float32)
        return self._lookup_vector(text, scope, row)

    def _lookup_vector(
        self, text: str, scope: Hashable, vector: npt.NDArray[np.float32]
    ) -> Hit[V] | None:
        bar = self.threshold
        with self._lock:
            self._ensure_loaded()
            self._sweep_expired()
            self._counts["lookups"] += 1
            exact = self._keys.get((scope, _text_key(text)))
            if exact is not None:
                return self._serve(self._entries[exact], 1.0, 1.0, semantic=False)
            index = self._scopes.get(scope)
            if index is None:
                return None
            found = index.search(vector, self._k)
            candidates = [(self._entries[i], cos) for i, cos in found if cos >= self._min_cosine]
        if not self._verify:
            for entry, cos in candidates:
                if cos >= max(bar, entry.learned_bar):
                    with self._lock:
                        if entry.id in self._entries:
                            return self._serve(entry, cos, cos, semantic=True)
            return None
        verifier = self._the_verifier()
        best: tuple[float, float, _Entry] | None = None
        # Nearest first: the nearest candidate the verifier passes is served, never a farther
        # one it happens to score higher (on the fleet replay that was "Is Pluto a planet?"
        # served "Which planet is the biggest?" past "Is Pluto still considered a planet?").
        # A nearer candidate turned down does not end the search: this verifier also turns
        # down near-identical rewordings ("What's the way" / "What is the way", cosine 0.999),
        # so a rejection is not evidence that the prompt is distinct from that neighbourhood.
        # The verifier is pure-Python feature extraction: only the nearest few are worth it.
        for entry, cos in candidates[:3]:
            confidence = verifier.probability(text, entry.text, cos)
            if confidence >= max(bar, entry.learned_bar):
                best = (confidence, cos, entry)
                break
        with self._lock:
            if best is None:
                if candidates:
                    self._counts["rejected_by_verifier"] += 1
                return None
            confidence, cos, entry = best
            if entry.id not in self._entries:  # removed while we verified
                return None
            return self._serve(entry, cos, confidence, semantic=True)

    def _serve(self, entry: _Entry, cos: float, confidence: float, *, semantic: bool) -> Hit[V]:
        self._lru.move_to_end(entry.id)
        self._counts["hits"] += 1
        if semantic:
            self._counts["semantic_hits"] += 1
        return Hit(
            value=entry.value,
            similarity=float(cos),
            text=entry.text,
            confidence=float(confidence),
            entry_id=entry.id,
        )

    # --- feedback --------------------------------------------------------------------------

    def feedback(
        self, hit: Hit[V] | int, *, correct: bool, confidence: float | None = None
    ) -> None:
        """Record whether a served hit was right; a wrong one raises that entry's bar.

        Pass the `Hit` (or its `entry_id` and the `confidence` it was served at).
        """
        if isinstance(hit, Hit):
            entry_id, conf = hit.entry_id, hit.confidence
        else:
            entry_id, conf = int(hit), 1.0 if confidence is None else float(confidence)
        with self._lock:
            self._counts["reported_hits"] += 1
            if not correct:
                self._counts["reported_wrong"] += 1
            entry = self._entries.get(entry_id)
            if entry is None:
                return
            if entry.observations is None:
                entry.observations = []
            entry.observations.append((conf, correct))
            entry.learned_bar = _learned_bar(entry.observations, self._bound)

    def entry_bar(self, entry_id: int) -> float:
        """The bar a lookup must reach to be served this entry now (live threshold included)."""
        with self._lock:
            entry = self._entries[entry_id]
            return max(self.threshold, entry.learned_bar)

    # --- async: off the event loop, batched -------------------------------------------------

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        # One thread: embeddings run one at a time, in the order they were asked for. The
        # default executor would run as many at once as arrive, each slower for the others.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="semantic-dedup"
            )
        return self._executor

    def expected_wait_s(self) -> float:
        """Seconds a lookup made now would wait for the embedder before its batch starts: the
        running batch's remaining time plus the queued prompts, each at the per-prompt time of
        recent batches (0 before any batch was timed, and whenever the embedder is idle)."""
        per = self._per_prompt_s
        if per is None:
            return 0.0
        wait = len(self._pending) * per
        if self._running is not None:
            started, size = self._running
            wait += max(0.0, started + size * per - self._timer())
        return wait

    async def alookup(self, text: str, *, scope: Hashable = None) -> Hit[V] | None:
        """`lookup` without blocking the event loop: embedded in the next batch, or None at once
        (counted in `skipped_busy`) when the wait for it is estimated beyond `max_wait_s`."""
        hash(scope)
        if self._max_wait_s is not None and self.expected_wait_s() > self._max_wait_s:
            with self._lock:
                self._counts["skipped_busy"] += 1
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Hit[V] | None] = loop.create_future()
        self._pending.append((text, scope, future))
        if self._batcher is None:
            # kept so the task is not garbage-collected mid-flight
            self._batcher = loop.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        """Embed and search the waiting lookups, `max_batch` at a time, one batch after the
        other, until none wait."""
        loop = asyncio.get_running_loop()
        batch: list[_Waiting[V]] = []
        try:
            await asyncio.sleep(0)  # the lookups that arrive in this tick join the first batch
            while self._pending:
                taken = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                batch = [w for w in taken if not w[2].done()]  # callers that stopped waiting
                if not batch:
                    continue
                started = self._timer()
                self._running = (started, len(batch))
                try:
                    results = await loop.run_in_executor(self._worker(), self._search, batch)
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                finally:
                    self._running = None
                self._timed(len(batch), self._timer() - started)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
            batch = []
        except asyncio.CancelledError:  # the loop shuts down: nobody waits any more
            for _, _, future in (*batch, *self._pending):
                future.cancel()
            self._pending = []
            raise
        finally:
            self._batcher = None

    def _search(self, batch: Sequence[_Waiting[V]]) -> list[Hit[V] | None]:
        rows = self._embed([text for text, _, _ in batch])
        return [
            self._lookup_vector(text, scope, row)
            for (text, scope, _), row in zip(batch, rows, strict=True)
        ]

    def _timed(self, size: int, elapsed_s: float) -> None:
        per = max(0.0, elapsed_s) / size
        last = self._per_prompt_s
        self._per_prompt_s = per if last is None else last + _COST_EWMA * (per - last)

    async def ainsert(self, text: str, value: V, *, scope: Hashable = None) -> int:
        """`insert` without blocking the event loop (on the embedding thread: an insert that
        must embed waits its turn behind the running batch)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker(), lambda: self.insert(text, value, scope=scope)
        )

    # --- persistence -----------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._path is None or not self._path.exists():
            return
        try:
            with self._path.open("rb") as f:
                doc = pickle.load(f)  # our own file, written by save(); never a downloaded one
        except Exception as exc:
            raise IndexFileError(self._path, f"unreadable semantic-dedup index: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != _FILE_FORMAT:
            raise IndexFileError(self._path, f"not a semantic-dedup index, format {_FILE_FORMAT}")
        if doc.get("embedder") != str(self._embedder.kind) or doc.get("dim") != self._embedder.dim:
            self.load_problem = (
                f"written with the {doc.get('embedder')} embedder (dimension {doc.get('dim')}), "
                f"not {self._embedder.kind} (dimension {self._embedder.dim})"
            )
            log.warning("%s was %s; starting empty", self._path, self.load_problem)
            return
        now = self._clock()
        by_scope: dict[Hashable, list[tuple[int, npt.NDArray[np.float32]]]] = {}
        for row in doc["entries"]:
            entry = _Entry(**row)
            if entry.expires_at is not None and entry.expires_at <= now:
                continue
            entry.observations = entry.observations or None
            self._entries[entry.id] = entry
            self._lru[entry.id] = None
            if entry.expires_at is not None:
                self._expiry.append((entry.expires_at, entry.id))
            self._keys[(entry.scope, entry.key)] = entry.id
            by_scope.setdefault(entry.scope, []).append((entry.id, entry.vector))
        self._expiry = deque(sorted(self._expiry))
        for scope, items in by_scope.items():
            index = self._scopes[scope] = _ScopeIndex(self._embedder.dim)
            index.add_many(items)
        self._next_id = max([doc["next_id"], *[i + 1 for i in self._entries]])

    def save(self, export: Callable[[V], Any] | None = None) -> int:
        """Write every live entry to `path` (atomically: a crash leaves the old file); return
        how many were written. `export`, when given, maps each entry's value to what is
        written for it (read under the lock), None leaving that entry out."""
        if self._path is None:
            raise ValueError("this SemanticDedup has no path to save to")
        with self._lock:
            self._ensure_loaded()
            self._sweep_expired()
            live = [self._entries[i] for i in self._lru]  # LRU order survives
            values = [e.value if export is None else export(e.value) for e in live]
            doc = {
                "format": _FILE_FORMAT,
                "embedder": str(self._embedder.kind),
                "dim": self._embedder.dim,
                "next_id": self._next_id,
                "entries": [
                    {
                        "id": e.id,
                        "scope": e.scope,
                        "text": e.text,
                        "key": e.key,
                        "value": value,
                        "vector": e.vector,
                        "expires_at": e.expires_at,
                        "observations": list(e.observations or ()),
                        "learned_bar": e.learned_bar,
                    }
                    for e, value in zip(live, values, strict=True)
                    if export is None or value is not None
                ],
            }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        with tmp.open("wb") as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        return len(doc["entries"])

    def close(self) -> None:
        """Save (when there is a path and anything was loaded or stored) and let the embedding
        thread go once it is idle (a later async call starts another)."""
        if self._path is not None and self._loaded:
            self.save()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
