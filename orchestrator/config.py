"""Pipeline configuration: the static `PipelineConfig` and the live, tunable `LiveConfig`.

`Tunables` holds every value that may change while traffic flows, with its default; it is the
one place those defaults live. `LiveConfig` holds the current `Tunables` and swaps it atomically
on `set(...)`; components keep a reference to the `LiveConfig` and read `live.current.<name>`
each time they need a value, so a change takes effect on the next read, without a restart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["CacheScope", "LiveConfig", "PipelineConfig", "Tunables"]


class CacheScope(StrEnum):
    """Who may be served a cached answer: anyone, the same tenant, or the same session."""

    GLOBAL = "global"
    TENANT = "tenant"
    SESSION = "session"


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _positive_float(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tunables:
    """Every live-tunable value, with its default.

    `shed_threshold` is the fraction of a stage queue's capacity above which `low` priority
    arrivals are shed; the remaining headroom is kept for `normal` and above.
    `rate_limit_rps` / `rate_limit_tokens_per_min` apply to each provider; None means unlimited.
    `semantic_dedup_threshold` is read by the semantic dedup hook once one is plugged in.
    """

    inference_concurrency: int = 64
    rag_queue_capacity: int = 512
    assemble_queue_capacity: int = 512
    inference_queue_capacity: int = 1024
    postprocess_queue_capacity: int = 256
    stream_queue_capacity: int = 256
    shed_threshold: float = 0.9
    breaker_failure_threshold: int = 5
    breaker_open_s: float = 60.0
    retry_max_attempts: int = 3
    retry_base_delay_s: float = 0.5
    rate_limit_rps: float | None = None
    rate_limit_tokens_per_min: float | None = None
    cache_ttl_s: float = 300.0
    semantic_dedup_threshold: float = 0.92

    def __post_init__(self) -> None:
        for name in (
            "inference_concurrency",
            "rag_queue_capacity",
            "assemble_queue_capacity",
            "inference_queue_capacity",
            "postprocess_queue_capacity",
            "stream_queue_capacity",
            "breaker_failure_threshold",
            "retry_max_attempts",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("breaker_open_s", "cache_ttl_s"):
            _positive_float(name, getattr(self, name))
        _positive_float("retry_base_delay_s", self.retry_base_delay_s, allow_zero=True)
        for name in ("rate_limit_rps", "rate_limit_tokens_per_min"):
            if getattr(self, name) is not None:
                _positive_float(name, getattr(self, name))
        for name in ("shed_threshold", "semantic_dedup_threshold"):
            value = getattr(self, name)
            _positive_float(name, value)
            if value > 1:
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")


_TUNABLE_NAMES = frozenset(f.name for f in dataclasses.fields(Tunables))


class LiveConfig:
    """The current `Tunables`, changeable while the pipeline runs.

    Read `live.current.<name>` at the moment of use (never cache it). Call `set` from the event
    loop's thread; listeners registered with `on_change` run synchronously inside `set`.
    """

    __slots__ = ("_current", "_listeners", "_version")

    def __init__(self, initial: Tunables | None = None) -> None:
        self._current = initial if initial is not None else Tunables()
        self._listeners: list[Callable[[dict[str, tuple[Any, Any]]], None]] = []
        self._version = 0

    @property
    def current(self) -> Tunables:
        """The values in force now."""
        return self._current

    @property
    def version(self) -> int:
        """How many effective changes have been applied."""
        return self._version

    def set(self, **changes: Any) -> dict[str, tuple[Any, Any]]:
        """Apply `changes` atomically; return `{name: (old, new)}` for values that changed.

        Raises ValueError naming an unknown tunable or an invalid value; nothing is applied then.
        """
        unknown = sorted(set(changes) - _TUNABLE_NAMES)
        if unknown:
            raise ValueError(f"unknown tunable(s): {', '.join(unknown)}")
        old = self._current
        new = dataclasses.replace(old, **changes)
        changed = {
            name: (getattr(old, name), getattr(new, name))
            for name in changes
            if getattr(old, name) != getattr(new, name)
        }
        if changed:
            self._current = new
            self._version += 1
            for listener in tuple(self._listeners):
                listener(changed)
        return changed

    def on_change(self, listener: Callable[[dict[str, tuple[Any, Any]]], None]) -> None:
        """Call `listener(changed)` after every effective `set`."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[dict[str, tuple[Any, Any]]], None]) -> None:
        """Stop calling `listener`; a no-op if it was never registered."""
        if listener in self._listeners:
            self._listeners.remove(listener)


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineConfig:
    """How a pipeline is built; fixed for the pipeline's life (live values are in `tunables`).

    Units: `*_s` seconds, `*_usd` US dollars. `fallback_order` lists worker names, first tried
    first; empty means the order the workers were given in. `price_table_path` overrides the
    price table shipped with the package. `rag_folder` None turns retrieval off.
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
    cache_scope: CacheScope = CacheScope.GLOBAL
    redis_url: str | None = None
    retry_max_delay_s: float = 30.0
    breaker_probe_count: int = 5
    breaker_close_success_ratio: float = 0.8
    metrics_window: int = 4096
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "inference_shards",
            "rag_top_k",
            "rag_chunk_chars",
            "rag_max_file_bytes",
            "cache_max_entries",
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
