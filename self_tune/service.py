"""`SelfTuning`: the tuning loop beside a pipeline — sample, tune, watch — on its own thread.

    sources ──Sampler──▶ bus ──▶ TuningController   (moves the live parameters)
                             └─▶ SelfImprovementLoop (anomalies; meta-tasks when it has a
                                                      generator, else only recorded)

`orchestrator serve --self-tune` runs one beside its pipeline; `coordinator --self-improve`
runs one with a `MetaTaskGenerator` and adds the gate. With `telemetry_nats` (their
`--telemetry-nats URL`) the bus mirrors every snapshot to a `NatsBus` as well, so other
processes can watch them; the loop still consumes its own in process. `tick()` is one round,
so tests drive it with a fake clock; `start()` runs rounds every `interval_s` until `stop()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from intelligence.forecast import TelemetryForecast
from self_tune.controller import TuningController
from self_tune.journal import Journal
from self_tune.live import ConfigPort
from self_tune.loop import SelfImprovementLoop
from self_tune.metatasks import Finding, FindingKind, MetaTaskGenerator, Proposal
from self_tune.sources import FLEET_COUNTERS, PIPELINE_COUNTERS, upstream_error_rate
from self_tune.telemetry import (
    DEFAULT_INTERVAL_S,
    InProcessBus,
    Sampler,
    SnapshotSource,
    TelemetrySnapshot,
)

if TYPE_CHECKING:
    from self_tune.nats_bus import NatsBus

__all__ = ["PINNED_WINDOWS", "SelfTuning"]

log = logging.getLogger(__name__)

PINNED_WINDOWS = 6
"""Consecutive rounds a tuned parameter must sit at its bound before it becomes a finding."""


class SelfTuning:
    """Telemetry from `sources`, tuning through `config`, anomaly detection on the bus.

    `config` None (or a port that cannot be read, e.g. a remote server without
    `/v1/config`) means detect only; `tuning` says which. `generator` None means anomalies
    are recorded and shown but no task is written. `journal` is where the controller writes
    its changes, versions and experiments (`MemoryJournal`: the agent memory). `on_tick`
    runs after every round (the coordinator publishes its status file there).
    """

    def __init__(
        self,
        sources: Iterable[SnapshotSource],
        *,
        config: ConfigPort | None = None,
        generator: MetaTaskGenerator | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        dry_run: bool = False,
        journal: Journal | None = None,
        on_tick: Callable[[], None] | None = None,
        telemetry_nats: str | None = None,
        telemetry_nats_subject: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.dry_run = dry_run
        self.nats: NatsBus | None = None
        if telemetry_nats is not None:
            from self_tune.nats_bus import DEFAULT_SUBJECT, NatsBus  # loads the nats client

            self.nats = NatsBus(telemetry_nats, telemetry_nats_subject or DEFAULT_SUBJECT)
        self.bus: InProcessBus[TelemetrySnapshot] = InProcessBus(
            mirrors=(self.nats,) if self.nats is not None else ())
        self._subscription = self.bus.subscribe()
        # The demand forecast rides on the telemetry (forecast.* metrics) and feeds forward
        # into the controller's demand laws (concurrency); it owns no knob.
        self.forecast = TelemetryForecast(interval_s=interval_s)
        self.sampler = Sampler(
            bus=self.bus, sources=tuple(sources), interval_s=interval_s,
            counters=PIPELINE_COUNTERS | FLEET_COUNTERS,
            derived=(upstream_error_rate, self.forecast), clock=clock, monotonic=monotonic)
        self.loop = SelfImprovementLoop(generator, window_s=60.0, dry_run=dry_run, clock=clock)
        self.controller: TuningController | None = None
        self.tuning = "off: no live config"
        if config is not None:
            try:
                self.controller = TuningController(
                    config, dry_run=dry_run, journal=journal, clock=monotonic,
                    forecast=self.forecast.rate_rps,
                )
                self.tuning = "dry run" if dry_run else "on"
            except Exception as exc:  # e.g. a remote server that cannot be tuned
                self.tuning = f"off: {exc}"
                log.warning("self-tune: not tuning: %s", exc)
        self._generator = generator
        self._pinned_for: dict[str, int] = {}
        self.pinned: list[dict[str, Any]] = []  # findings about pinned parameters, newest last
        self._on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.last_snapshot: TelemetrySnapshot | None = None

    def start(self) -> None:
        """Run a round every `interval_s` on a daemon thread (again after a `stop(close=False)`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="self-tune", daemon=True)
        self._thread.start()

    def stop(self, *, close: bool = True) -> None:
        """End the rounds and any experiment; with `close` (the default) disconnect the NATS
        mirror too, which a later `start` would need."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.controller is not None:  # a trial value must not outlive the loop
            self.controller.stop_experiment("the tuning loop stopped")
        if close and self.nats is not None:  # sends what is queued, then disconnects
            self.nats.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a full disk or a broken source must not end the loop
                log.exception("self-tune: a round failed")
            self._stop.wait(self.interval_s)

    def tick(self) -> None:
        """One round: sample, then tune and watch every snapshot the bus delivered."""
        self.sampler.sample()
        for snapshot in self._subscription.drain():
            if self.controller is not None:
                self.controller.step(snapshot)
                self._watch_pinned()
            self.loop.observe(snapshot)
            self.last_snapshot = snapshot
        self.ticks += 1
        if self._on_tick is not None:
            self._on_tick()

    def _watch_pinned(self) -> None:
        """A parameter held at its bound for several rounds is a finding: tuning alone cannot
        fix what drives it there, so the fleet should look at it."""
        assert self.controller is not None
        values = self.controller.port.values()
        for name, param in self.controller.parameters.items():
            value, default = values.get(name), self.controller.defaults.get(name)
            at_bound = value is not None and value != default and value in (param.low,
                                                                             param.high)
            self._pinned_for[name] = self._pinned_for.get(name, 0) + 1 if at_bound else 0
            if self._pinned_for[name] != PINNED_WINDOWS:
                continue
            bound = "upper" if value == param.high else "lower"
            finding = Finding(
                kind=FindingKind.PINNED, metric=f"param.{name}", observed=float(value),
                baseline=None if default is None else float(default),
                window_s=PINNED_WINDOWS * self.interval_s,
                detail=f"The controller has held {name} at its {bound} bound ({value} "
                       f"{param.unit}) for {PINNED_WINDOWS} telemetry windows; it is tuned "
                       f"on {param.signal}.")
            if self.dry_run:
                proposal = Proposal(written=None, task_id=None,
                                    reason=f"dry run: would propose a task on {finding.theme}")
            elif self._generator is None:
                proposal = Proposal(written=None, task_id=None, reason="recorded (no task folder)")
            else:
                proposal = self._generator.propose(finding)
            log.warning("self-tune: %s pinned at its %s bound: %s", name, bound, proposal.reason)
            self.pinned = [*self.pinned[-9:], {"parameter": name, "value": value,
                                               "bound": bound, "task_id": proposal.task_id,
                                               "action": proposal.reason}]

    def status(self) -> dict[str, Any]:
        """Parameters against their defaults with their last change, and recent anomalies
        (JSON-ready; `/v1/status`, the dashboard, the TUI and `coordinator status` show it)."""
        return {
            "interval_s": self.interval_s,
            "ticks": self.ticks,
            "tuning": self.tuning,
            "dry_run": self.dry_run,
            "source_errors": dict(self.sampler.source_errors),
            # where the snapshots go: in process always, NATS (subject, counts) when mirrored
            "telemetry_bus": {"published": self.bus.published,
                              "nats": self.nats.status() if self.nats is not None else None},
            "parameters": self.controller.status() if self.controller is not None else [],
            "experiments": (self.controller.experiment_status() if self.controller is not None
                            else {"running": None, "results": []}),
            "anomalies": [
                {"at": e.anomaly.time, "metric": e.anomaly.metric,
                 "severity": str(e.anomaly.severity), "detector": str(e.anomaly.detector),
                 "value": e.anomaly.value, "baseline": e.anomaly.baseline,
                 "task_id": e.proposal.task_id, "action": e.proposal.reason}
                for e in self.loop.events[-10:]],
            "pinned": list(self.pinned),
            "forecast": {
                k: v for k, v in (self.last_snapshot.values if self.last_snapshot else {}).items()
                if k.startswith("forecast.")
            },
        }
