"""`SemanticDedupHook`: `SemanticDedup` in the pipeline's dedup seam.

    hook = SemanticDedupHook(threshold=lambda: live.current.semantic_dedup_threshold)
    hook.collector = FeedbackCollector(dedup=hook)   # verdicts on hits reach their entries
    pipeline = Pipeline(config, worker, dedup_hooks=[hook])

(`IntelligenceBridge` does this wiring, with the learned router, for the composition root.)

It implements `orchestrator.resilience.coalesce.DedupHook` by shape (this package never
imports the pipeline). Each flight that no match served is stored under its text and scope
while it is in the air (a near-identical request joins it), then with its answer for the
answer's TTL (a near-identical request later gets that answer); a flight that lands without
an answer is forgotten.

Nothing heavy loads at construction: the first `match` starts loading the model, the verifier
and FAISS in a background thread (`warm()` starts it earlier) and, until they are ready,
every lookup is a miss at once, so no request ever waits for the model. Once loaded, a
lookup that would wait for the embedder longer than `max_wait_s` (the embedding thread is
busy with a backlog) is a miss at once too: the request goes upstream as it would without
semantic dedup. `status()` says which embedder serves (`lexical` with the reason when
sentence-transformers cannot load) and counts both kinds of skipped lookups.

With `path` the answered entries (text, scope, answer, the answer's expiry and the entry's
own, feedback) outlive the process: `save()` writes them (flights still in the air and
expired answers are left out) and the load reads them back. A file that cannot be read, or
was written under another embedder kind or dimension, is logged naming it, moved aside (to
`<name>.rejected`, so the next save does not destroy it) and the index starts empty.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intelligence.errors import IndexFileError
from intelligence.feedback import Attribution, FeedbackCollector

if TYPE_CHECKING:
    from intelligence.dedup import SemanticDedup

__all__ = ["SemanticDedupHook", "SemanticMatch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticMatch:
    """A match the hook found: the flight in the air (`flight_key`) or its stored `answer`;
    `similarity` is the prompts' cosine, `confidence` the verifier's, `entry` the entry id."""

    flight_key: str | None
    answer: Any
    similarity: float
    confidence: float
    entry: int


@dataclass(slots=True)
class _Slot:
    """What an entry holds: the flight's key while it is in the air, then its answer.

    The answer is kept pickled: as bytes it is nothing Python's cyclic GC walks, where the
    answer object (and its usage) were two more tracked objects per entry, and a full
    collection walks every one while the event loop waits (tens of milliseconds at tens of
    thousands of entries). Unpickled on a hit only."""

    flight_key: str | None
    answer: Any = None  # pickled bytes (an object in files written before)
    expires_at: float | None = None

    def stored_answer(self) -> Any:
        answer = self.answer
        return pickle.loads(answer) if isinstance(answer, bytes) else answer  # our own bytes


class SemanticDedupHook:
    """See the module docstring. `threshold` (a callable is read at every lookup) is the
    verifier's bar; `make` builds the `SemanticDedup` (default: the packaged model with that
    threshold and `max_wait_s`, the longest a lookup may wait for the embedder, None: no
    limit) in the loading thread; `dedup` passes a ready one instead. `clock` is wall
    time in seconds (answers' TTLs). `collector` (a `FeedbackCollector`), when set, is told
    which entry answered each request served by a match, so a verdict on that request
    reaches the entry (`feedback`, the collector's `DedupFeedback`). `feedback_window` is how
    many of the latest verdicts `wrong_hit_rate` is over: the self-tuner moves the threshold
    by it, so it must follow what the threshold does now, not average the whole uptime.
    `path` is the file the built `SemanticDedup` persists to (a passed `dedup`, or one from
    `make`, persists to its own `path`, if any); `changes_total` counts what a save would
    keep that changed (answers stored, verdicts), for a `Checkpointer`."""

    def __init__(
        self,
        dedup: SemanticDedup[Any] | None = None,
        *,
        threshold: float | Callable[[], float] = 0.8,
        max_wait_s: float | None = None,
        make: Callable[[], SemanticDedup[Any]] | None = None,
        clock: Callable[[], float] = time.time,
        collector: FeedbackCollector | None = None,
        feedback_window: int = 200,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if feedback_window < 1:
            raise ValueError(f"feedback_window must be >= 1, got {feedback_window!r}")
        self._path = Path(path) if path is not None else None
        self.changes_total = 0
        self.saved_entries: int | None = None
        """How many entries the last save wrote (None before one)."""
        self.load_problem: str | None = None
        """Why the persisted file was not loaded (reported, moved aside), if it was not."""
        self.collector = collector
        self._threshold = threshold
        self._max_wait_s = max_wait_s
        self._make = make
        self._clock = clock
        self._dedup = dedup
        self._state = "idle"
        self._failure: str | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._flights: dict[str, tuple[_Slot, int]] = {}
        self.skipped_while_loading = 0
        self.joined = self.answered_from_store = 0
        self._verdicts: deque[bool] = deque(maxlen=feedback_window)  # True: a wrong hit

    # --- loading ------------------------------------------------------------------------------

    @property
    def max_wait_s(self) -> float | None:
        """The wait budget the hook builds its `SemanticDedup` with (not a passed-in one's)."""
        return self._max_wait_s

    @property
    def path(self) -> Path | None:
        """Where the entries persist (None: in memory only): the dedup's own once it is
        built, else the `path` given."""
        dedup = self._dedup
        if dedup is not None:
            return dedup.path
        return self._path

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._dedup is not None and self._state == "ready"

    def warm(self) -> None:
        """Start loading in a background thread (once); returns at once."""
        with self._lock:
            if self._state != "idle":
                return
            self._state = "loading"
        # Not a daemon: a process that exits mid-load waits for it, instead of killing a
        # thread inside torch's import (which aborts the interpreter).
        threading.Thread(target=self._load, name="semantic-dedup-load").start()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until loaded (or failed); True when ready. For tests and warm starts."""
        self.warm()
        self._ready.wait(timeout_s)
        return self.ready

    def settle(self) -> None:
        """Wait for a load in progress to end; returns at once when none is. Called at close:
        a process that leaves mid-load would otherwise go on importing torch while the
        interpreter shuts down, which fails (and logs the load as failed)."""
        with self._lock:
            loading = self._state == "loading"
        if loading:
            self._ready.wait()

    def _load(self) -> None:
        try:
            dedup = self._dedup
            if dedup is None:
                if self._make is not None:
                    dedup = self._make()
                else:
                    from intelligence.dedup import SemanticDedup

                    dedup = SemanticDedup(
                        threshold=self._threshold, max_wait_s=self._max_wait_s, path=self._path
                    )
            try:
                dedup.warm()
            except IndexFileError as exc:  # loaded as far as the file: the index starts empty
                self._reject_file(exc.path, exc.reason)
            else:
                if dedup.load_problem is not None and dedup.path is not None:
                    self._reject_file(dedup.path, dedup.load_problem)
        except Exception as exc:  # a broken install: dedup stays off, requests go upstream
            log.exception("semantic dedup could not load; it stays off")
            self._failure = f"{type(exc).__name__}: {exc}"
            self._state = "failed"
        else:
            self._dedup = dedup
            self._state = "ready"
        self._ready.set()

    def _reject_file(self, path: Path, reason: str) -> None:
        aside = path.with_name(path.name + ".rejected")
        try:
            os.replace(path, aside)
        except OSError as exc:
            where = f"left in place ({exc}); the next save replaces it"
        else:
            where = f"moved to {aside}"
        self.load_problem = f"{path}: {reason}"
        log.error(
            "semantic dedup index %s not loaded: %s; %s; starting with an empty index",
            path,
            reason,
            where,
        )

    # --- persistence --------------------------------------------------------------------------

    def save(self) -> None:
        """Write the answered, unexpired entries to the dedup's `path`. Nothing happens without
        a path, or before the dedup loaded (what the file holds is not read yet: writing now
        would replace it with nothing). Blocking: call it from a worker thread."""
        dedup = self._dedup
        if not self.ready or dedup is None or dedup.path is None:
            return
        now = self._clock()

        def export(slot: _Slot) -> _Slot | None:
            answer, expires_at = slot.answer, slot.expires_at  # read once: the loop may write
            if answer is None or expires_at is None or expires_at <= now:
                return None  # in the air (its flight ends with this process), or expired
            return _Slot(None, answer, expires_at)

        self.saved_entries = dedup.save(export)

    # --- the DedupHook protocol ---------------------------------------------------------------

    async def match(self, text: str, scope: Hashable) -> SemanticMatch | None:
        """The flight or answer that asks what `text` asks in `scope`, or None."""
        dedup = self._dedup
        if not self.ready or dedup is None:
            self.warm()
            self.skipped_while_loading += self._state == "loading"
            return None
        hit = await dedup.alookup(text, scope=scope)
        if hit is None or hit.text == text:
            return None  # byte-identical prompts are the exact cache's and coalescer's
        slot: _Slot = hit.value
        if slot.answer is not None:
            if slot.expires_at is not None and slot.expires_at <= self._clock():
                dedup.remove(hit.entry_id)
                return None
            return SemanticMatch(
                flight_key=None,
                answer=slot.stored_answer(),
                similarity=hit.similarity,
                confidence=hit.confidence,
                entry=hit.entry_id,
            )
        if slot.flight_key is None:
            return None
        return SemanticMatch(
            flight_key=slot.flight_key,
            answer=None,
            similarity=hit.similarity,
            confidence=hit.confidence,
            entry=hit.entry_id,
        )

    def started(self, flight_key: str, text: str, scope: Hashable) -> None:
        """Index a flight now in the air. Uses the embedding its lookup just made; without
        one (evicted meanwhile, or not loaded yet) the flight is not indexed: never embed on
        the event loop."""
        dedup = self._dedup
        if not self.ready or dedup is None:
            return
        vector = dedup.cached_vector(text)
        if vector is None:
            return
        slot = _Slot(flight_key)
        entry = dedup.insert(text, slot, scope=scope, vector=vector)
        self._flights[flight_key] = (slot, entry)

    def answered(self, flight_key: str, answer: Any, ttl_s: float) -> None:
        """The flight's answer: served to equivalent requests for `ttl_s` seconds."""
        found = self._flights.get(flight_key)
        if found is None:
            return
        slot, _ = found
        slot.answer = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        slot.flight_key = None
        slot.expires_at = self._clock() + ttl_s
        self.changes_total += 1

    def finished(self, flight_key: str) -> None:
        """The flight landed; without an answer its entry goes."""
        found = self._flights.pop(flight_key, None)
        if found is None or self._dedup is None:
            return
        slot, entry = found
        if slot.answer is None:
            self._dedup.remove(entry)

    def served(self, request_id: str, match: SemanticMatch, task_id: str | None = None) -> None:
        """`request_id` was answered by `match`: attributed to its entry for feedback (and to
        `task_id`, the fleet task it was made for, whose outcome then judges the hit)."""
        if match.answer is None:
            self.joined += 1
        else:
            self.answered_from_store += 1
        if self.collector is not None:
            answer = match.answer
            self.collector.attribute(
                Attribution(
                    request_id=request_id,
                    provider=getattr(answer, "provider", ""),
                    model=getattr(answer, "model", ""),
                    cached=True,
                    dedup_entry=match.entry,
                    similarity=match.similarity,
                    confidence=match.confidence,
                    task_id=task_id,
                )
            )

    # --- feedback (the collector's DedupFeedback) ---------------------------------------------

    def feedback(self, hit: int, *, correct: bool, confidence: float | None = None) -> None:
        """Whether the answer entry `hit` served was right; a wrong one raises its bar."""
        self._verdicts.append(not correct)
        self.changes_total += 1
        if self._dedup is not None:
            self._dedup.feedback(hit, correct=correct, confidence=confidence)

    def status(self) -> dict[str, Any]:
        """JSON-ready state: loading state, embedder (and why the fallback, if it serves),
        entries, the live threshold, hits by kind, lookups skipped (`skipped_while_loading`,
        and `skipped_busy`: the embedder's backlog was over the wait budget, `max_wait_ms`)
        and, once hits were reported on, the share of the latest `feedback_window` reports
        that said wrong (`wrong_hit_rate`; absent before any, so a tuner reading it holds
        instead of taking silence for "never wrong")."""
        data: dict[str, Any] = {
            "state": self._state,
            "joined_flights": self.joined,
            "answered_from_store": self.answered_from_store,
            "skipped_while_loading": self.skipped_while_loading,
            "skipped_busy": 0,
        }
        if self._failure is not None:
            data["failure"] = self._failure
        if self.path is not None:
            data["path"] = str(self.path)
            if self.saved_entries is not None:
                data["saved_entries"] = self.saved_entries
        if self.load_problem is not None:
            data["load_problem"] = self.load_problem
        dedup = self._dedup
        if dedup is None or not self.ready:
            return data
        embedder = dedup.embedder
        stats = dedup.stats()
        data.update(
            embedder=str(embedder.kind),
            entries=stats.entries,
            threshold=dedup.threshold,
            reported_hits=stats.reported_hits,
            reported_wrong=stats.reported_wrong,
            skipped_busy=stats.skipped_busy,
        )
        if dedup.max_wait_s is not None:
            data["max_wait_ms"] = dedup.max_wait_s * 1000
        verdicts = tuple(self._verdicts)
        if verdicts:
            data["wrong_hit_rate"] = sum(verdicts) / len(verdicts)
        reason = getattr(embedder, "fallback_reason", None)
        if reason:
            data["fallback_reason"] = reason
        return data
