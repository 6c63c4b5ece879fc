"""Configuration: the static `PipelineConfig`, the live `Tunables`, and `LiveConfig`.

`Tunables` holds every pipeline value that may change while traffic flows, each with its
default and its `Bounds` (the one place both live); the self-tuning loop and every remote
change (`PATCH /v1/config`, MCP `configure_pipeline`) are held to the same bounds.

`LiveConfig[T]` holds the current value of any frozen dataclass whose fields are declared with
`tunable(...)` (the pipeline's `Tunables`, the fleet's `FleetTunables`) and swaps it atomically
on `set(...)`, from any thread. Components never see the `LiveConfig`: they are given readers,
zero-argument callables such as `lambda: live.current.breaker_open_s`, and call them at each
use, so a change takes effect on the next read without a restart.

`LiveConfigSet` puts one or more live configs under one name space (the pipeline's and, under
`coordinator run --orchestrator start`, the fleet's): what a server shows on `GET /v1/config`
and changes on `PATCH /v1/config` and MCP `configure_pipeline`.

This module imports nothing else of the project but `orchestrator.errors` (itself a leaf), so
`coordinator` and `self_tune` can use it without loading the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Generic, TypeVar

from orchestrator.errors import InvalidTunable

__all__ = [
    "Bounds",
    "CacheScope",
    "Change",
    "LiveConfig",
    "LiveConfigSet",
    "PipelineConfig",
    "Tunables",
    "bounds_of",
    "check_bounds",
    "tunable",
]


class CacheScope(StrEnum):
    """Who may be served a cached answer: anyone, the same tenant, or the same session."""

    GLOBAL = "global"
    TENANT = "tenant"
    SESSION = "session"


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """The values one tunable may take: `low <= value <= high` in `unit`.

    `integer` values must be `int`; `unlimited_ok` lets a user choose None ("no limit"), which
    a controller never sets: it moves a number within the bounds.
    """

    low: float
    high: float
    unit: str
    integer: bool = False
    unlimited_ok: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"bounds must be finite with low <= high, got {self.low}..{self.high}")

    def check(self, name: str, value: object) -> None:
        """Raise `InvalidTunable` (a ValueError) naming `name` unless `value` is allowed."""
        if value is None:
            if self.unlimited_ok:
                return
            raise InvalidTunable(name, f"{name} must be a number, got None")
        kind = "an integer" if self.integer else "a finite number"
        wrong = f"{name} must be {kind} in {self._range()}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidTunable(name, wrong)
        if self.integer and not isinstance(value, int):
            raise InvalidTunable(name, wrong)
        if not math.isfinite(value) or not (self.low <= value <= self.high):
            raise InvalidTunable(name, wrong)

    def to_json(self) -> dict[str, Any]:
        """The bounds as plain JSON values (for `GET /v1/config`)."""
        low: float = int(self.low) if self.integer else self.low
        high: float = int(self.high) if self.integer else self.high
        return {
            "low": low,
            "high": high,
            "unit": self.unit,
            "integer": self.integer,
            "unlimited_ok": self.unlimited_ok,
        }

    def _range(self) -> str:
        fmt = (lambda v: str(int(v))) if self.integer else (lambda v: f"{v:g}")
        extra = " (or null for unlimited)" if self.unlimited_ok else ""
        return f"[{fmt(self.low)}, {fmt(self.high)}] {self.unit}{extra}"


_BOUNDS_KEY = "orchestrator.bounds"


def tunable(
    default: Any,
    *,
    low: float,
    high: float,
    unit: str,
    integer: bool = False,
    unlimited_ok: bool = False,
) -> Any:
    """A dataclass field for a live-tunable value: its default and its `Bounds`."""
    bounds = Bounds(low=low, high=high, unit=unit, integer=integer, unlimited_ok=unlimited_ok)
    bounds.check("default", default)
    return field(default=default, metadata={_BOUNDS_KEY: bounds})


def bounds_of(cls_or_value: Any) -> dict[str, Bounds]:
    """`{field name: Bounds}` for every `tunable(...)` field of a dataclass (type or value)."""
    return {
        f.name: f.metadata[_BOUNDS_KEY]
        for f in dataclasses.fields(cls_or_value)
        if _BOUNDS_KEY in f.metadata
    }


def check_bounds(value: Any) -> None:
    """Raise `InvalidTunable` naming the first field of `value` that is outside its bounds."""
    for name, bounds in bounds_of(value).items():
        bounds.check(name, getattr(value, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Tunables:
    """Every live-tunable pipeline value, with its default and bounds.

    `inference_queue_capacity` is the stage queue capacity the self-tuning loop moves: it is
    the queue in front of the upstream concurrency limit, the only one where work waits for a
    slow resource (the other stages run at CPU speed and forward at once), so it is where
    sheds and queue wait happen. The other stage capacities stay settable by hand.
    `shed_threshold` is the fraction of a stage queue's capacity above which `low` priority
    arrivals are shed; the remaining headroom is kept for `normal` and above.
    `rate_limit_rps` / `rate_limit_tokens_per_min` apply to each provider; None means unlimited
    (a user's choice; a controller sets a number within the bounds).
    `semantic_dedup_threshold` is the bar a semantic dedup match must reach (the verifier's
    match probability; the cosine without a verifier); the semantic dedup hook reads it at
    every lookup.
    """

    inference_concurrency: int = tunable(64, low=1, high=4096, unit="calls", integer=True)
    rag_queue_capacity: int = tunable(512, low=1, high=1_000_000, unit="requests", integer=True)
    assemble_queue_capacity: int = tunable(
        512, low=1, high=1_000_000, unit="requests", integer=True
    )
    inference_queue_capacity: int = tunable(
        1024, low=1, high=1_000_000, unit="requests", integer=True
    )
    postprocess_queue_capacity: int = tunable(
        256, low=1, high=1_000_000, unit="requests", integer=True
    )
    stream_queue_capacity: int = tunable(256, low=1, high=1_000_000, unit="requests", integer=True)
    shed_threshold: float = tunable(0.9, low=0.05, high=1.0, unit="fraction of capacity")
    breaker_failure_threshold: int = tunable(5, low=1, high=1000, unit="failures", integer=True)
    breaker_open_s: float = tunable(60.0, low=0.5, high=3600.0, unit="s")
    retry_max_attempts: int = tunable(3, low=1, high=10, unit="attempts", integer=True)
    retry_base_delay_s: float = tunable(0.5, low=0.0, high=30.0, unit="s")
    rate_limit_rps: float | None = tunable(
        None, low=0.1, high=1e9, unit="requests/s", unlimited_ok=True
    )
    rate_limit_tokens_per_min: float | None = tunable(
        None, low=100.0, high=1e12, unit="tokens/min", unlimited_ok=True
    )
    cache_ttl_s: float = tunable(300.0, low=1.0, high=604_800.0, unit="s")
    semantic_dedup_threshold: float = tunable(0.8, low=0.5, high=1.0, unit="match probability")

    def __post_init__(self) -> None:
        check_bounds(self)


T = TypeVar("T")

Change = dict[str, tuple[Any, Any]]
"""What one effective `LiveConfig.set` changed: `{name: (old, new)}`."""


@dataclass(slots=True)
class _Listener:
    callback: Callable[[Change], None]
    loop: asyncio.AbstractEventLoop | None


class LiveConfig(Generic[T]):
    """The current value of a frozen, `tunable(...)`-declared dataclass, changeable live.

    Read `live.current.<name>` at the moment of use (never cache it); reading takes no lock.
    `set` may be called from any thread: changes are validated against the bounds and applied
    atomically under a lock, and the version grows by one per effective change.

    A listener registered with `on_change` from inside a running event loop is called on that
    loop: at once if `set` runs on the loop's own thread, otherwise through
    `loop.call_soon_threadsafe` (so it may touch asyncio futures safely). A listener registered
    outside any loop is called synchronously in the thread that called `set` and must be
    thread-safe itself.
    """

    __slots__ = ("_current", "_listeners", "_lock", "_version")

    def __init__(self, initial: T | None = None, *, kind: type[T] | None = None) -> None:
        if initial is None:
            initial = (kind or Tunables)()  # type: ignore[assignment]
        if not dataclasses.is_dataclass(initial) or isinstance(initial, type):
            raise TypeError(f"LiveConfig needs a dataclass instance, got {initial!r}")
        self._current: T = initial  # type: ignore[assignment]
        self._listeners: list[_Listener] = []
        self._lock = threading.Lock()
        self._version = 0

    @property
    def current(self) -> T:
        """The values in force now."""
        return self._current

    @property
    def version(self) -> int:
        """How many effective changes have been applied."""
        return self._version

    def snapshot(self) -> tuple[T, int]:
        """The current values and their version, read together."""
        with self._lock:
            return self._current, self._version

    def bounds(self) -> dict[str, Bounds]:
        """`{name: Bounds}` for every tunable field."""
        return bounds_of(self._current)

    def set(self, **changes: Any) -> Change:
        """Apply `changes` atomically; return `{name: (old, new)}` for values that changed.

        Raises `InvalidTunable` (a ValueError) naming an unknown tunable or a value outside
        its bounds; nothing is applied then.
        """
        return self.update(changes)

    def update(self, changes: Mapping[str, Any], *, expected_version: int | None = None) -> Change:
        """`set` with the changes as a mapping; with `expected_version`, apply them only if no
        other change came first (`InvalidTunable` naming `version` otherwise)."""
        self.validate(changes)
        with self._lock:
            if expected_version is not None and expected_version != self._version:
                raise InvalidTunable(
                    "version", f"version is {self._version}, not the expected {expected_version}"
                )
            old = self._current
            new = dataclasses.replace(old, **changes)  # type: ignore[type-var]
            check_bounds(new)
            changed = {
                name: (getattr(old, name), getattr(new, name))
                for name in changes
                if getattr(old, name) != getattr(new, name)
            }
            if not changed:
                return changed
            self._current = new
            self._version += 1
            listeners = tuple(self._listeners)
        for listener in listeners:
            self._notify(listener, changed)
        return changed

    def validate(self, changes: Mapping[str, Any]) -> None:
        """Raise `InvalidTunable` naming the first unknown name or out-of-bounds value in
        `changes`; apply nothing. (Each field's bounds stand alone, so a change valid now stays
        valid whatever else changes first.)"""
        names = {f.name for f in dataclasses.fields(self._current)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise InvalidTunable(unknown[0], f"unknown tunable(s): {', '.join(unknown)}")
        bounds = self.bounds()
        for name, value in changes.items():
            if name in bounds:
                bounds[name].check(name, value)

    def on_change(self, listener: Callable[[Change], None]) -> None:
        """Call `listener(changed)` after every effective `set` (see the class docstring for
        the thread or loop it runs on)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._listeners.append(_Listener(listener, loop))

    def remove_listener(self, listener: Callable[[Change], None]) -> None:
        """Stop calling `listener`; a no-op if it was never registered."""
        with self._lock:
            self._listeners = [entry for entry in self._listeners if entry.callback != listener]

    def _notify(self, listener: _Listener, changed: Change) -> None:
        loop = listener.loop
        if loop is None:
            listener.callback(changed)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            listener.callback(changed)
        elif not loop.is_closed():
            # The loop may close between the check and the call; its listener is moot then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(listener.callback, changed)


class LiveConfigSet:
    """Several `LiveConfig`s under one name space: what a server lets a client read and tune.

    Every field name belongs to exactly one config (a name in two is refused at construction).
    `version` is the sum of the configs' versions, so it grows by one per effective change
    anywhere. `apply` validates every change before applying any, so a refused change list
    changes nothing.
    """

    def __init__(self, *lives: LiveConfig[Any]) -> None:
        if not lives:
            raise ValueError("lives: a LiveConfigSet needs at least one LiveConfig")
        self._lives = lives
        self._owner: dict[str, LiveConfig[Any]] = {}
        for live in lives:
            for f in dataclasses.fields(live.current):
                if f.name in self._owner:
                    raise ValueError(f"lives: the tunable {f.name!r} is in two live configs")
                self._owner[f.name] = live

    @property
    def version(self) -> int:
        """How many effective changes all the configs have had."""
        return sum(live.version for live in self._lives)

    def values(self) -> dict[str, Any]:
        """`{name: current value}` for every field of every config."""
        return {
            name: getattr(live.current, name) for name, live in self._owner.items()
        }

    def describe(self) -> dict[str, Any]:
        """`{"version", "values", "bounds"}` as plain JSON (what `GET /v1/config` answers)."""
        bounds: dict[str, Any] = {}
        for live in self._lives:
            bounds.update({name: b.to_json() for name, b in live.bounds().items()})
        return {"version": self.version, "values": self.values(), "bounds": bounds}

    def apply(self, changes: Mapping[str, Any]) -> Change:
        """Apply `changes` (any subset of the names); return `{name: (old, new)}` for what
        changed. Raises `InvalidTunable` naming the first bad field; nothing is applied then."""
        if not changes:
            raise InvalidTunable("body", "no changes given: name at least one tunable and value")
        unknown = sorted(set(changes) - set(self._owner))
        if unknown:
            raise InvalidTunable(unknown[0], f"unknown tunable(s): {', '.join(unknown)}")
        parts: dict[int, tuple[LiveConfig[Any], dict[str, Any]]] = {}
        for name, value in changes.items():
            live = self._owner[name]
            parts.setdefault(id(live), (live, {}))[1][name] = value
        for live, part in parts.values():
            live.validate(part)
        changed: Change = {}
        for live, part in parts.values():
            changed.update(live.update(part))
        return changed


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _positive_float(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineConfig:
    """How a pipeline is built; fixed for the pipeline's life (live values are in `tunables`).

    Units: `*_s` seconds, `*_usd` US dollars. `fallback_order` lists worker names, first tried
    first; empty means the order the workers were given in. `price_table_path` is a price table
    merged over the one shipped with the package. `rag_folder` None turns retrieval off.
    `redis_url` set makes the response cache live in Redis instead of process memory.
    `attempt_timeout_s` caps one upstream attempt (None: only the request's deadline does).
    """

    tunables: Tunables = field(default_factory=Tunables)
    inference_shards: int = 4
    fallback_order: tuple[str, ...] = ()
    default_timeout_s: float = 120.0
    attempt_timeout_s: float | None = None
    priority_ageing_s: float = 5.0
    price_table_path: Path | None = None
    session_budget_usd: float | None = None
    global_budget_usd: float | None = None
    budget_warn_fraction: float = 0.8
    system_prompt: str | None = None
    prompt_template: str | None = None
    rag_folder: Path | None = None
    rag_top_k: int = 3
    rag_chunk_chars: int = 1200
    rag_max_file_bytes: int = 1_000_000
    cache_enabled: bool = True
    cache_max_entries: int = 10_000
    cache_max_bytes: int = 256 * 2**20  # the in-process cache's byte budget (256 MiB)
    cache_scope: CacheScope = CacheScope.GLOBAL
    redis_url: str | None = None
    # Semantic dedup (a `DedupHook`) never serves requests with tools or other native blocks,
    # nor an explicit temperature above 0, unless these say so.
    semantic_dedup_tools: bool = False
    semantic_dedup_sampled: bool = False
    retry_max_delay_s: float = 30.0
    breaker_probe_count: int = 5
    breaker_close_success_ratio: float = 0.8
    metrics_window: int = 4096
    seed: int | None = None
    # Log each answer's prompt and text (masked, truncated) on `orchestrator.prompts` at INFO;
    # off, no prompt or answer text reaches any log.
    log_prompts: bool = False

    def __post_init__(self) -> None:
        for name in (
            "inference_shards",
            "rag_top_k",
            "rag_chunk_chars",
            "rag_max_file_bytes",
            "cache_max_entries",
            "cache_max_bytes",
            "breaker_probe_count",
            "metrics_window",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("default_timeout_s", "priority_ageing_s", "retry_max_delay_s"):
            _positive_float(name, getattr(self, name))
        for name in ("session_budget_usd", "global_budget_usd", "attempt_timeout_s"):
            if getattr(self, name) is not None:
                _positive_float(name, getattr(self, name))
        for name in ("budget_warn_fraction", "breaker_close_success_ratio"):
            value = getattr(self, name)
            _positive_float(name, value)
            if value > 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if len(set(self.fallback_order)) != len(self.fallback_order):
            raise ValueError(f"fallback_order has duplicates: {self.fallback_order!r}")
        if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
            raise ValueError(
                f"prompt_template must contain '{{prompt}}', got {self.prompt_template!r}"
            )
        if not isinstance(self.cache_scope, CacheScope):
            object.__setattr__(self, "cache_scope", CacheScope(self.cache_scope))
        if self.rag_folder is not None and not isinstance(self.rag_folder, Path):
            object.__setattr__(self, "rag_folder", Path(self.rag_folder))
        if self.price_table_path is not None and not isinstance(self.price_table_path, Path):
            object.__setattr__(self, "price_table_path", Path(self.price_table_path))
