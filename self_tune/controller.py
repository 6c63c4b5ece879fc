"""`TuningController`: turns each telemetry snapshot into parameter changes, and undoes the
ones that made things worse.

For every parameter the port reaches, its law proposes a value; the controller holds it to
the parameter's bounds, its per-step limit and its cooldown, rounds integers, and applies
all of one step's changes through the `ConfigPort` together (or, with `dry_run`, only records
them as recommendations). Every change is recorded with its reason. Each applied step starts
a configuration version in the `SnapshotStore`; when a version turns out worse than what it
replaced, the controller rolls back to the best recent one, records that, and leaves the
parameters it restored alone for a while.

A big change of a parameter marked `experiment` (see `ExperimentSettings`) is not applied
outright: it runs as an A/B `Experiment` against the value in force, one at a time, and the
controller leaves that parameter to it until the t-test decides (no rollback verdicts while it
runs: the alternating slices are the comparison).

What a change did is measured after it: the journal's record of each applied change gets the
mean objective score and the parameter's own metric (`Parameter.metric`) over the last few
snapshots before it and over the snapshots while it was in force (until `store.window_s`
passed or the parameter moved again).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from self_tune.errors import ConfigUpdateRejected
from self_tune.experiment import Experiment, ExperimentResult, ExperimentSettings
from self_tune.journal import Change, ChangeKind, Journal, NullJournal
from self_tune.live import ConfigPort, Value
from self_tune.objective import Objective
from self_tune.params import PARAMETERS, Parameter
from self_tune.policies import Forecast, Law, Proposal, Signals
from self_tune.snapshots import SnapshotStore
from self_tune.telemetry import TelemetrySnapshot

__all__ = ["TuningController"]

_BEFORE_SAMPLES = 3  # snapshots averaged as "before" a change

log = logging.getLogger(__name__)


class TuningController:
    """Tunes the parameters `port` reaches, one `step(snapshot)` at a time.

    `forecast` (optional) returns predicted arrivals per second; it feeds forward into the
    laws that use demand (concurrency, fleet size) and the controller works without it.
    `clock` is monotonic seconds (cooldowns, versions). `only` restricts the parameters tuned.
    `experiments` sets when and how big changes run as A/B experiments (the defaults of
    `ExperimentSettings` when None; `ExperimentSettings(min_change=math.inf)` turns them off).
    """

    def __init__(
        self,
        port: ConfigPort,
        *,
        objective: Objective | None = None,
        parameters: Iterable[Parameter] = PARAMETERS,
        only: Iterable[str] | None = None,
        dry_run: bool = False,
        forecast: Forecast | None = None,
        journal: Journal | None = None,
        store: SnapshotStore | None = None,
        rollback: bool = True,
        experiments: ExperimentSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        history: int = 200,
    ) -> None:
        self.port = port
        self.objective = objective or Objective()
        self.dry_run = dry_run
        self.rollback = rollback
        self._forecast = forecast
        self._journal = journal or NullJournal()
        self._clock = clock
        self.store = store or SnapshotStore(journal=self._journal)
        start = port.values()
        wanted = set(only) if only is not None else None
        self.parameters: dict[str, Parameter] = {
            p.name: p
            for p in parameters
            if p.name in start and (wanted is None or p.name in wanted)
        }
        self.defaults: dict[str, Value] = {name: start[name] for name in self.parameters}
        self._laws: dict[str, Law] = {name: p.law() for name, p in self.parameters.items()}
        self._last_at: dict[str, float] = {}
        self._held_until: dict[str, float] = {}
        self._changes: deque[Change] = deque(maxlen=history)
        self._last_change: dict[str, Change] = {}
        self.steps = 0
        self.experiments = experiments or ExperimentSettings()
        self.experiment: Experiment | None = None
        self._results: deque[ExperimentResult] = deque(maxlen=20)
        self._recent: deque[TelemetrySnapshot] = deque(maxlen=_BEFORE_SAMPLES)
        self._pending: dict[str, _Measuring] = {}
        if not dry_run:
            self.store.save(self._tuned_values(start), clock())

    @property
    def changes(self) -> list[Change]:
        """The most recent changes and recommendations, oldest first."""
        return list(self._changes)

    def hold(self, names: Iterable[str], until: float) -> None:
        """Leave `names` alone until the clock reaches `until` (an experiment owns them)."""
        for name in names:
            self._held_until[name] = max(self._held_until.get(name, -math.inf), until)

    def release(self, names: Iterable[str]) -> None:
        """End a `hold` early."""
        for name in names:
            self._held_until.pop(name, None)

    def step(self, snapshot: TelemetrySnapshot) -> list[Change]:
        """Look at one snapshot; apply (or recommend) what the laws propose. Returns the
        changes made in this step, rollbacks included."""
        now = self._clock()
        self.steps += 1
        self._measure(snapshot, now)
        if self.experiment is not None:
            made = self._experiment_step(self.objective.score(snapshot), now)
        else:
            made = self._maybe_roll_back(snapshot, now)
        current = self.port.values()
        forecast_rps = self._forecast() if self._forecast is not None else None
        signals = Signals(snapshot, objective=self.objective, forecast_rps=forecast_rps,
                          config=current)
        wanted: dict[str, tuple[Value, Value, str]] = {}
        for name, param in self.parameters.items():
            law = self._laws[name]
            old = current.get(name)
            try:
                proposal = law.propose(signals, old)  # type: ignore[arg-type]
            except Exception:  # one broken law must not stop the others
                log.exception("law for %s failed", name)
                continue
            if proposal is None or now < self._held_until.get(name, -math.inf):
                continue
            if now - self._last_at.get(name, -math.inf) < param.cooldown_s:
                continue
            new = _limit(param, old, proposal)
            if new is None or new == old:
                continue
            if self._worth_an_experiment(param, old, new):
                self._start_experiment(name, old, new, proposal.reason, now)
                continue
            wanted[name] = (old, new, proposal.reason)
        if not wanted:
            return made
        return made + self._apply(wanted, ChangeKind.TUNED, now)

    @property
    def experiment_results(self) -> list[ExperimentResult]:
        """Decided experiments, oldest first (the newest 20)."""
        return list(self._results)

    def _worth_an_experiment(self, param: Parameter, old: Value, new: Value) -> bool:
        if self.dry_run or not param.experiment or self.experiment is not None:
            return False
        if old is None or new is None or old <= 0 or new <= 0:
            return False
        return abs(math.log(new / old)) >= math.log1p(self.experiments.min_change)

    def _start_experiment(self, name: str, old: Value, new: Value, reason: str,
                          now: float) -> None:
        self._finish_measuring(name)  # the trial's slices are not that change's effect
        self.experiment = Experiment(self.port, {name: new}, reason=reason,
                                     settings=self.experiments, clock=self._clock)
        self.hold([name], math.inf)
        log.info("self-tune experiment started: %s (%s)", self.experiment.description, reason)

    def _experiment_step(self, score: float, now: float) -> list[Change]:
        assert self.experiment is not None
        result = self.experiment.observe(score)
        if result is None:
            return []
        return self._end_experiment(result, now)

    def stop_experiment(self, why: str) -> list[Change]:
        """Abort the running experiment (A is restored); nothing when none runs."""
        if self.experiment is None:
            return []
        return self._end_experiment(self.experiment.abort(why), self._clock())

    def _end_experiment(self, result: ExperimentResult, now: float) -> list[Change]:
        self.experiment = None
        self._results.append(result)
        moved = {name: float(result.b[name]) - float(result.a[name])  # type: ignore[arg-type]
                 for name in result.b if result.a[name] is not None}
        self._journal.experiment(result.description, adopted=result.adopted,
                                 numbers={**result.numbers, **moved})
        log.info("self-tune experiment decided: %s: %s", result.description, result.reason)
        made = []
        final = result.b if result.adopted else result.a
        for name in result.b:
            self.release([name])
            self._laws[name].reset()
            change = Change(
                parameter=name, old=result.a[name], new=final[name],
                reason=f"{result.description}: {result.reason}", kind=ChangeKind.EXPERIMENT,
                at=now, applied=True,
            )
            self._changes.append(change)
            self._last_change[name] = change
            self._last_at[name] = now
            made.append(change)
        if result.adopted:
            self.store.save(self._tuned_values(self.port.values()), now)
        return made

    def _apply(
        self, wanted: Mapping[str, tuple[Value, Value, str]], kind: ChangeKind, now: float
    ) -> list[Change]:
        applied: dict[str, tuple[Value, Value]] = {}
        if self.dry_run:
            kind = ChangeKind.RECOMMENDED
        else:
            try:
                applied = self.port.apply({n: new for n, (_, new, _r) in wanted.items()})
            except ConfigUpdateRejected as exc:
                log.warning("self-tune change rejected: %s", exc)
                applied = {}
                for name, (_, new, _r) in wanted.items():  # apply what can be, one by one
                    try:
                        applied.update(self.port.apply({name: new}))
                    except ConfigUpdateRejected as one:
                        log.warning("self-tune change rejected: %s", one)
        made = []
        for name, (old, new, reason) in wanted.items():
            if not self.dry_run and name not in applied:
                continue
            if name in applied:
                old, new = applied[name]
            change = Change(
                parameter=name, old=old, new=new, reason=reason, kind=kind, at=now,
                applied=not self.dry_run,
            )
            self._changes.append(change)
            self._last_change[name] = change
            self._last_at[name] = now
            ref = self._journal.change(change)
            if ref is not None:
                self._start_measuring(name, ref, now)
            made.append(change)
            log.info("self-tune %s %s: %s -> %s (%s)", kind.value, name, old, new, reason)
        if applied and kind is not ChangeKind.ROLLED_BACK:
            self.store.save(self._tuned_values(self.port.values()), now)
        return made

    def _maybe_roll_back(self, snapshot: TelemetrySnapshot, now: float) -> list[Change]:
        if self.dry_run:
            return []
        signals = Signals(snapshot, objective=self.objective)
        conditions = {"arrivals_per_s": signals.arrivals_per_s}
        if signals.call_time_s is not None:
            conditions["call_time_s"] = signals.call_time_s
        verdict = self.store.observe(self.objective.score(snapshot), now, conditions)
        if verdict is None or not self.rollback:
            return []
        failed, target = verdict
        current = self.port.values()
        reason = (
            f"rollback to v{target.version}: v{failed.version} scored {failed.score:.2f} "
            f"against {failed.before_score:.2f} before it"
        )
        wanted = {
            name: (current.get(name), value, reason)
            for name, value in target.config.items()
            if name in self.parameters and current.get(name) != value
        }
        self.store.rolled_back()
        if not wanted:
            return []
        made = self._apply(wanted, ChangeKind.ROLLED_BACK, now)
        self.store.save(self._tuned_values(self.port.values()), now)
        quiet_until = now + self.store.window_s
        for change in made:
            self.hold([change.parameter], quiet_until)
            self._laws[change.parameter].reset()
        return made

    def _readings(self, name: str, snapshot: TelemetrySnapshot) -> dict[str, float]:
        readings = {"objective": self.objective.score(snapshot)}
        metric = self.parameters[name].metric
        if metric in snapshot.values:
            readings[metric] = snapshot.values[metric]
        return readings

    def _start_measuring(self, name: str, ref: int, now: float) -> None:
        self._finish_measuring(name)  # the earlier change of it is over now
        if not self._recent:
            return
        self._pending[name] = _Measuring(
            ref=ref, started_at=now,
            before=_means([self._readings(name, s) for s in self._recent]))

    def _measure(self, snapshot: TelemetrySnapshot, now: float) -> None:
        for name, measuring in list(self._pending.items()):
            measuring.after.append(self._readings(name, snapshot))
            if now - measuring.started_at >= self.store.window_s:
                self._finish_measuring(name)
        self._recent.append(snapshot)

    def _finish_measuring(self, name: str) -> None:
        measuring = self._pending.pop(name, None)
        if measuring is None or not measuring.after:
            return
        try:
            self._journal.measured(measuring.ref, measuring.before, _means(measuring.after))
        except Exception:  # a journal that cannot write must not stop the tuning
            log.exception("self-tune: recording what the change of %s did failed", name)

    def _tuned_values(self, values: Mapping[str, Value]) -> dict[str, Value]:
        return {name: values.get(name) for name in self.parameters}

    def experiment_status(self) -> dict[str, Any]:
        """The running experiment (or None) and the recent decisions, newest last."""
        return {
            "running": self.experiment.status() if self.experiment is not None else None,
            "results": [r.to_dict() for r in list(self._results)[-5:]],
        }

    def status(self) -> list[dict[str, Any]]:
        """Each parameter: value, default (its value when tuning started), last change."""
        current = self.port.values()
        rows = []
        for name, param in self.parameters.items():
            last = self._last_change.get(name)
            rows.append(
                {
                    "name": name,
                    "value": current.get(name),
                    "default": self.defaults.get(name),
                    "unit": param.unit,
                    "method": param.method.value,
                    "last_change": last.to_dict() if last is not None else None,
                }
            )
        return rows


@dataclass(slots=True)
class _Measuring:
    """A change whose effect is being measured: its journal reference, and readings."""

    ref: int
    started_at: float
    before: dict[str, float]
    after: list[dict[str, float]] = field(default_factory=list)


def _means(readings: list[dict[str, float]]) -> dict[str, float]:
    """Per metric, the mean over the readings that carry it."""
    sums: dict[str, list[float]] = {}
    for reading in readings:
        for name, value in reading.items():
            if math.isfinite(value):
                sums.setdefault(name, []).append(value)
    return {name: math.fsum(vals) / len(vals) for name, vals in sums.items()}


def _limit(param: Parameter, old: Value, proposal: Proposal) -> Value:
    """The proposal held to bounds and the step limit, rounded for integer parameters."""
    value = proposal.value
    if not math.isfinite(value):
        return None
    if old is not None and old > 0:
        factor = 1.0 + param.max_step
        value = min(max(value, old / factor), old * factor)
    value = min(max(value, param.low), param.high)
    if param.integer:
        rounded = round(value)
        if old is not None and rounded == old and value != old:
            rounded = int(old) + (1 if value > old else -1)  # a wish to move moves one unit
        value = int(min(max(rounded, math.ceil(param.low)), math.floor(param.high)))
    else:
        value = float(f"{value:.6g}")  # no 0.30000000000000004 in the change log
    return value
