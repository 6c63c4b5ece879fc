"""The telemetry bus: measured snapshots, published on an interval, kept in rolling windows.

    sources ──read()──▶ Sampler ──TelemetrySnapshot──▶ TelemetryBus ──▶ subscribers
                                                                     (detectors, controller,
                                                                      memory recorder)

A `TelemetrySnapshot` is one instant's measurements as a flat mapping of metric names to
numbers (``latency_p95_ms``, ``stage.inference.depth``, ``fleet.backlog``…), so rolling
windows and detectors work over any metric alike. The `Sampler` turns monotonically growing
counters (``shed_total``…) into per-second rates over each interval, because a controller
acts on what is happening now, not on what has happened since start-up.

`TelemetryBus` is the one interface; `InProcessBus` is its in-process implementation and
`self_tune.nats_bus.NatsBus` carries snapshots between processes over NATS, behind the same
three methods and the same `Subscription`. An `InProcessBus` can mirror everything published on
it to other buses (`--telemetry-nats`: the loop consumes its own snapshots in process, other
processes watch them on NATS). Each subscriber has a bounded buffer: when a slow subscriber's
buffer is full the oldest message is dropped and counted, so publishing never blocks and never
slows the pipeline.

This module is a leaf: it imports nothing else of the project (nor NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "DEFAULT_INTERVAL_S",
    "WINDOWS_S",
    "InProcessBus",
    "RollingWindows",
    "Sampler",
    "SnapshotSource",
    "Subscription",
    "TelemetryBus",
    "TelemetrySnapshot",
]

DEFAULT_INTERVAL_S = 5.0
"""How often the sampler publishes a snapshot (`--telemetry-interval-s`)."""

WINDOWS_S: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0)
"""The rolling windows kept over every metric: 1 min, 5 min, 15 min, 1 h."""

M = TypeVar("M")


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySnapshot:
    """One instant's measurements.

    `taken_at` is wall-clock epoch seconds (so snapshots from several processes share one
    clock); `values` maps metric names to finite numbers; `sources` names where they came from.
    """

    taken_at: float
    values: Mapping[str, float]
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def get(self, metric: str, default: float = 0.0) -> float:
        """The value of `metric`, or `default` when this snapshot does not have it."""
        return self.values.get(metric, default)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {"taken_at": self.taken_at, "values": dict(self.values), "sources": self.sources}

    @classmethod
    def from_dict(cls, data: Any) -> TelemetrySnapshot:
        """The snapshot `to_dict` gave (after a JSON round trip); ValueError when `data` is not
        one (a number where a number belongs, names as strings)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a snapshot is an object, got {type(data).__name__}")
        taken_at, values = data.get("taken_at"), data.get("values")
        sources = data.get("sources", ())
        if not _is_number(taken_at):
            raise ValueError(f"taken_at must be a number, got {taken_at!r}")
        if not isinstance(values, Mapping) or not all(
            isinstance(k, str) and _is_number(v) for k, v in values.items()
        ):
            raise ValueError("values must map metric names to numbers")
        if not isinstance(sources, list | tuple) or not all(isinstance(s, str) for s in sources):
            raise ValueError("sources must be a list of names")
        return cls(
            taken_at=float(taken_at),
            values={k: float(v) for k, v in values.items()},
            sources=tuple(sources),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Subscription(Generic[M]):
    """One subscriber's bounded buffer. `drain()` takes what has arrived; `dropped` counts
    messages lost because the buffer was full when they were published. `remove` is how the
    bus that made it forgets it (`close()` calls it once); every bus shares this class."""

    __slots__ = ("_buffer", "_closed", "_dropped", "_event", "_lock", "_remove", "maxlen")

    def __init__(self, remove: Callable[[Subscription[M]], None], maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen!r}")
        self._remove = remove
        self.maxlen = maxlen
        self._buffer: deque[M] = deque()
        self._lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._event = threading.Event()

    @property
    def dropped(self) -> int:
        """Messages dropped because this subscriber did not keep up."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Messages waiting to be drained."""
        return len(self._buffer)

    def _offer(self, message: M) -> None:
        with self._lock:
            if len(self._buffer) >= self.maxlen:
                self._buffer.popleft()
                self._dropped += 1
            self._buffer.append(message)
        self._event.set()

    def drain(self) -> list[M]:
        """Everything that arrived since the last drain, oldest first."""
        with self._lock:
            items = list(self._buffer)
            self._buffer.clear()
            self._event.clear()
        return items

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block this thread until a message is pending (True) or `timeout_s` passes."""
        return self._event.wait(timeout_s)

    def close(self) -> None:
        """Stop receiving; idempotent."""
        if not self._closed:
            self._closed = True
            self._remove(self)


class TelemetryBus(Protocol[M]):
    """Publish messages to every subscriber; never block the publisher."""

    def publish(self, message: M) -> None: ...

    def subscribe(self, *, maxlen: int = 256) -> Subscription[M]: ...

    @property
    def published(self) -> int: ...


class InProcessBus(Generic[M]):
    """The in-process `TelemetryBus`: thread-safe fan-out to bounded subscriber buffers.

    `mirrors` are further buses every message is published to as well (a `NatsBus`, so that
    other processes see what this one samples); subscribers here are fed in process.
    """

    def __init__(self, *, mirrors: Iterable[TelemetryBus[M]] = ()) -> None:
        self.mirrors: tuple[TelemetryBus[M], ...] = tuple(mirrors)
        self._subscribers: list[Subscription[M]] = []
        self._lock = threading.Lock()
        self._published = 0

    @property
    def published(self) -> int:
        """Messages published so far."""
        return self._published

    def publish(self, message: M) -> None:
        """Hand `message` to every subscriber (dropping their oldest if full)."""
        with self._lock:
            subscribers = tuple(self._subscribers)
            self._published += 1
        for sub in subscribers:
            sub._offer(message)
        for mirror in self.mirrors:  # each mirror's publish never blocks either
            mirror.publish(message)

    def subscribe(self, *, maxlen: int = 256) -> Subscription[M]:
        """A new subscription that keeps at most `maxlen` undrained messages."""
        sub = Subscription(self._remove, maxlen)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription[M]) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)


class SnapshotSource(Protocol):
    """Where measurements come from: a name, and `read()` returning flat metric values."""

    name: str

    def read(self) -> Mapping[str, float]: ...


@dataclass(slots=True)
class _CounterState:
    value: float
    at: float


@dataclass(slots=True)
class Sampler:
    """Reads every source, turns counters into rates, and publishes a `TelemetrySnapshot`.

    `counters` names metrics that only grow (``shed_total``…, or shell patterns such as
    ``provider.*.failures_total``); each is published as ``<name>_per_s`` (its rate over the
    last interval, 0 on the first sample) beside its total.
    `derived` are functions of one sample's values returning more metrics (ratios of rates,
    say), added after the rates. `clock` is wall-clock (snapshots carry it); `monotonic`
    measures intervals. A source that fails is skipped for that sample and counted in
    `source_errors` (the others still publish).
    """

    bus: TelemetryBus[TelemetrySnapshot]
    sources: tuple[SnapshotSource, ...]
    interval_s: float = DEFAULT_INTERVAL_S
    counters: frozenset[str] = frozenset()
    derived: tuple[Callable[[Mapping[str, float]], Mapping[str, float]], ...] = ()
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    source_errors: dict[str, int] = field(default_factory=dict)
    _last: dict[str, _CounterState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"interval_s must be a finite number > 0, got {self.interval_s!r}")

    def sample(self) -> TelemetrySnapshot:
        """Take one snapshot now and publish it."""
        values: dict[str, float] = {}
        names = []
        now = self.monotonic()
        for source in self.sources:
            try:
                read = source.read()
            except Exception:  # one broken source must not silence the others
                self.source_errors[source.name] = self.source_errors.get(source.name, 0) + 1
                continue
            names.append(source.name)
            for metric, value in read.items():
                value = float(value)
                if math.isfinite(value):
                    values[metric] = value
        counted = [m for m in values if any(fnmatch.fnmatchcase(m, c) for c in self.counters)]
        for metric in sorted(counted):
            total = values[metric]
            last = self._last.get(metric)
            rate = 0.0
            if last is not None and now > last.at and total >= last.value:
                rate = (total - last.value) / (now - last.at)
            values[f"{_rate_name(metric)}"] = rate
            self._last[metric] = _CounterState(total, now)
        for derive in self.derived:
            values.update(derive(values))
        snapshot = TelemetrySnapshot(taken_at=self.clock(), values=values, sources=tuple(names))
        self.bus.publish(snapshot)
        return snapshot

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Sample every `interval_s` until `stop` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await asyncio.to_thread(self.sample)  # an HTTP source must not block the loop
            with contextlib.suppress(TimeoutError):  # the interval passed: sample again
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)


def _rate_name(counter: str) -> str:
    base = counter[: -len("_total")] if counter.endswith("_total") else counter
    return f"{base}_per_s"


class RollingWindows:
    """Time-stamped values per metric, kept for the longest window, summarised over any.

    `add(snapshot)` records every metric of a snapshot; `mean`, `percentile`, `count` and
    `values` answer over the last `window_s` seconds (one of `WINDOWS_S`, or any span up to
    the longest) before the newest snapshot.
    """

    def __init__(self, windows_s: Iterable[float] = WINDOWS_S) -> None:
        self.windows_s = tuple(sorted(windows_s))
        if not self.windows_s or self.windows_s[0] <= 0:
            raise ValueError(f"windows_s must be positive spans, got {self.windows_s!r}")
        self._keep_s = self.windows_s[-1]
        self._series: dict[str, deque[tuple[float, float]]] = {}
        self._latest = -math.inf

    def add(self, snapshot: TelemetrySnapshot) -> None:
        """Record `snapshot` (older snapshots than the newest are ignored)."""
        if snapshot.taken_at < self._latest:
            return
        self._latest = snapshot.taken_at
        horizon = snapshot.taken_at - self._keep_s
        for metric, value in snapshot.values.items():
            series = self._series.setdefault(metric, deque())
            series.append((snapshot.taken_at, value))
        for series in self._series.values():
            while series and series[0][0] < horizon:
                series.popleft()

    def metrics(self) -> list[str]:
        """The metrics seen within the longest window."""
        return sorted(name for name, series in self._series.items() if series)

    def values(self, metric: str, window_s: float) -> list[float]:
        """The values of `metric` within the last `window_s` seconds, oldest first."""
        if window_s > self._keep_s:
            raise ValueError(f"window_s must be <= {self._keep_s:g} (the longest kept)")
        series = self._series.get(metric, ())
        cutoff = self._latest - window_s
        return [v for t, v in series if t > cutoff]

    def count(self, metric: str, window_s: float) -> int:
        """How many values of `metric` fall in the window."""
        return len(self.values(metric, window_s))

    def mean(self, metric: str, window_s: float) -> float | None:
        """The mean of `metric` over the window; None when it has no values there."""
        vals = self.values(metric, window_s)
        return math.fsum(vals) / len(vals) if vals else None

    def percentile(self, metric: str, window_s: float, q: float) -> float | None:
        """The nearest-rank `q`-th percentile (0..100) over the window; None when empty."""
        if not 0 <= q <= 100:
            raise ValueError(f"q must be in [0, 100], got {q!r}")
        vals = sorted(self.values(metric, window_s))
        if not vals:
            return None
        rank = max(1, math.ceil(len(vals) * q / 100))
        return vals[min(len(vals), rank) - 1]

    def summary(self, metric: str) -> dict[str, float | None]:
        """The mean over each kept window, keyed ``'60s'``, ``'300s'``, …"""
        return {f"{w:g}s": self.mean(metric, w) for w in self.windows_s}
