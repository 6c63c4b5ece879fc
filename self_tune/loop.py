"""The self-improvement loop's watch: telemetry in, anomalies found, meta-tasks written.

    TelemetryBus ──snapshot──▶ SelfImprovementLoop.observe ──▶ detectors per watched metric
                                                          └──▶ anomaly ──▶ MetaTaskGenerator

Each watched metric gets a `CusumDetector` (sustained shifts) and a `ZScoreDetector` (spikes),
which learn that metric's own baseline, and optionally an `SloDetector` (an absolute
objective, which fires from the first sample — the statistical detectors need a warm-up). An
anomaly becomes a `Finding`, and the generator decides whether a task is written (cooldowns,
caps, open tasks and dead ends are its business). With `dry_run` nothing is written: the loop
says what it would have written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from self_tune.detectors import Anomaly, CusumDetector, SloDetector, ZScoreDetector
from self_tune.detectors.anomaly import DetectorKind
from self_tune.metatasks import Finding, FindingKind, MetaTaskGenerator, Proposal
from self_tune.telemetry import Subscription, TelemetrySnapshot

__all__ = ["DEFAULT_SLOS", "DEFAULT_WATCHED", "LoopEvent", "SelfImprovementLoop"]

log = logging.getLogger(__name__)

DEFAULT_WATCHED: tuple[str, ...] = (
    "error_rate",
    "upstream_error_rate",
    "latency_p95_ms",
    "stage.*.latency_p95_ms",
    "shed_per_s",
    "fleet.claim_latency_p99_ms",
    "fleet.failed_per_min",
)
"""Metric-name patterns (fnmatch) the loop watches; anything else on the bus is ignored."""

DEFAULT_SLOS: Mapping[str, float] = {"error_rate": 0.1, "upstream_error_rate": 0.2}
"""Absolute objectives: a value above the limit is a Critical anomaly, whatever the baseline.
Requests may still succeed while the upstream fails one call in five (retries and fallbacks
hide it, at a cost in latency and spend), so the upstream has its own, looser objective."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoopEvent:
    """One anomaly the loop saw and what came of it (for status and the dashboard)."""

    anomaly: Anomaly
    proposal: Proposal


_CLEAR_SAMPLES = 3


class _Watch:
    """The detectors of one metric."""

    def __init__(self, metric: str, slo: float | None, clock: Callable[[], float],
                 remind_s: float) -> None:
        self.detectors: list[CusumDetector | ZScoreDetector | SloDetector] = [
            CusumDetector(metric=metric, clock=clock),
            ZScoreDetector(metric=metric, clock=clock),
        ]
        if slo is not None:
            self.detectors.insert(0, SloDetector(metric=metric, limit=slo, clock=clock))
        self._remind_s = remind_s
        self._reported_at: float | None = None  # when the current episode was last reported
        self._clear = 0  # samples in a row without an anomaly

    def update(self, value: float, at: float) -> Anomaly | None:
        """Feed every detector; report the most severe anomaly (the objective first) when an
        episode begins, and again every `remind_s` while it lasts — not every sample. An
        episode ends after `_CLEAR_SAMPLES` clear samples in a row, so a metric that flickers
        across its limit (an interval with no calls has no errors) stays one episode."""
        found = [a for d in self.detectors if (a := d.update(value, at=at)) is not None]
        if not found:
            self._clear += 1
            if self._clear >= _CLEAR_SAMPLES:
                self._reported_at = None  # the episode is over
            return None
        self._clear = 0
        if self._reported_at is not None and at - self._reported_at < self._remind_s:
            return None
        self._reported_at = at
        return found[0]


class SelfImprovementLoop:
    """Watches telemetry and turns anomalies into meta-tasks through `generator` (None: the
    anomalies are only recorded, as `orchestrator serve --self-tune` does without a folder).

    `watched` are metric-name patterns; `slos` maps a metric to its objective's limit.
    `window_s` is how much history a finding says it covers (the detectors' horizon). An
    anomaly that persists is reported when it begins and again every `remind_s` (so a fix
    that did not work is tried again once the generator's cooldown allows it).
    """

    def __init__(
        self,
        generator: MetaTaskGenerator | None,
        *,
        watched: Iterable[str] = DEFAULT_WATCHED,
        slos: Mapping[str, float] = DEFAULT_SLOS,
        window_s: float = 60.0,
        remind_s: float = 600.0,
        dry_run: bool = False,
        history: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._generator = generator
        self._patterns = tuple(watched)
        self._slos = dict(slos)
        self._window_s = window_s
        self._remind_s = remind_s
        self._dry_run = dry_run
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._events: deque[LoopEvent] = deque(maxlen=history)
        self._snapshots_seen = 0

    @property
    def events(self) -> tuple[LoopEvent, ...]:
        """The most recent anomalies and what was done about each, oldest first."""
        return tuple(self._events)

    @property
    def snapshots_seen(self) -> int:
        return self._snapshots_seen

    def observe(self, snapshot: TelemetrySnapshot) -> list[LoopEvent]:
        """Run one snapshot through the detectors; return the anomalies it raised."""
        self._snapshots_seen += 1
        raised: list[LoopEvent] = []
        for metric in sorted(snapshot.values):
            if not any(fnmatch.fnmatchcase(metric, p) for p in self._patterns):
                continue
            watch = self._watches.get(metric)
            if watch is None:
                watch = self._watches[metric] = _Watch(metric, self._slos.get(metric),
                                                       self._clock, self._remind_s)
            anomaly = watch.update(snapshot.values[metric], snapshot.taken_at)
            if anomaly is None:
                continue
            event = LoopEvent(anomaly=anomaly, proposal=self._act(anomaly))
            log.warning("self-improve: %s %s = %g (baseline %g): %s", anomaly.severity,
                        anomaly.metric, anomaly.value, anomaly.baseline, event.proposal.reason)
            self._events.append(event)
            raised.append(event)
        return raised

    def _act(self, anomaly: Anomaly) -> Proposal:
        objective = anomaly.detector is DetectorKind.SLO
        kind = FindingKind.OBJECTIVE if objective else FindingKind.ANOMALY
        finding = Finding(
            kind=kind, metric=anomaly.metric, severity=anomaly.severity, observed=anomaly.value,
            baseline=anomaly.baseline, window_s=self._window_s,
            detail=f"Raised by the {anomaly.detector} detector (score {anomaly.score:.2f}).",
        )
        if self._dry_run:
            return Proposal(written=None, task_id=None,
                            reason=f"dry run: would propose a task on {finding.theme}")
        if self._generator is None:
            return Proposal(written=None, task_id=None, reason="recorded (no task folder)")
        return self._generator.propose(finding)

    async def run(self, subscription: Subscription[TelemetrySnapshot],
                  stop: asyncio.Event) -> None:
        """Observe every snapshot the subscription receives until `stop` is set."""
        while not stop.is_set():
            for snapshot in subscription.drain():
                try:
                    self.observe(snapshot)
                except Exception:  # one bad snapshot or a full disk must not end the watch
                    log.exception("self-improve: observing a snapshot failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)
