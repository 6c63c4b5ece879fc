"""`Experiment`: a parameter change tried against the current value on alternate time slices,
decided by Welch's t-test.

A before/after comparison blames a change for whatever else moved at the same time (demand,
the provider). An experiment runs configuration A (what is in force) and B (the proposed
change) in alternate slices — A, B, A, B, … `slice_s` each, `slices` per arm — so a slow drift
falls on both arms alike. Every telemetry sample's objective score (lower is better) counts for
the arm in force when it was taken, except the first `settle` samples after a switch (the
telemetry still partly measures the arm before it). When every slice has run, Welch's t-test
(`scipy.stats.ttest_ind(equal_var=False)`, one-sided: is B's mean score lower?) decides: B is
adopted only when p < `alpha`; otherwise A is restored. Samples within a slice are not
independent, which makes the test somewhat optimistic; `alpha` and the number of slices are the
guard against that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from self_tune.errors import ConfigUpdateRejected
from self_tune.live import ConfigPort, Value

__all__ = ["Arm", "Experiment", "ExperimentResult", "ExperimentSettings", "status_lines"]


class Arm(StrEnum):
    """Which configuration is in force."""

    A = "a"  # what was in force before the experiment
    B = "b"  # the proposed change


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentSettings:
    """When a proposed change becomes an experiment, and how the experiment runs.

    A change of a parameter marked `experiment` whose size is at least `min_change` (relative:
    0.25 means ×1.25 or ÷1.25) is tried as an experiment instead of being applied outright.
    """

    min_change: float = 0.25
    slice_s: float = 30.0
    slices: int = 4
    settle: int = 1
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.min_change >= 0:
            raise ValueError(f"min_change must be >= 0, got {self.min_change!r}")
        if not (math.isfinite(self.slice_s) and self.slice_s > 0):
            raise ValueError(f"slice_s must be a finite number > 0, got {self.slice_s!r}")
        if self.slices < 1:
            raise ValueError(f"slices must be >= 1, got {self.slices!r}")
        if self.settle < 0:
            raise ValueError(f"settle must be >= 0, got {self.settle!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExperimentResult:
    """The decision: adopted or not, the numbers behind it, and why in words."""

    description: str
    a: dict[str, Value]
    b: dict[str, Value]
    adopted: bool
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    t: float
    p_value: float
    started_at: float
    ended_at: float
    reason: str

    @property
    def numbers(self) -> dict[str, float]:
        """What the agent memory keeps as the record's metric deltas (finite numbers only: an
        aborted experiment has no t or p)."""
        numbers = {
            "objective_a": self.mean_a,
            "objective_b": self.mean_b,
            "objective_delta": self.mean_b - self.mean_a,
            "n_a": float(self.n_a),
            "n_b": float(self.n_b),
            "t": self.t,
            "p_value": self.p_value,
        }
        return {name: value for name, value in numbers.items() if math.isfinite(value)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN becomes None)."""
        return {
            "description": self.description,
            "a": dict(self.a),
            "b": dict(self.b),
            "adopted": self.adopted,
            "mean_a": _finite(self.mean_a),
            "mean_b": _finite(self.mean_b),
            "n_a": self.n_a,
            "n_b": self.n_b,
            "t": _finite(self.t),
            "p_value": _finite(self.p_value),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "reason": self.reason,
        }


class Experiment:
    """A against B on `port` (see the module docstring); feed it `observe(score)` once per
    telemetry sample until it returns its `ExperimentResult`.

    Raises `ValueError` when `b` is empty, names a parameter the port does not reach, or
    changes nothing.
    """

    def __init__(
        self,
        port: ConfigPort,
        b: Mapping[str, Value],
        *,
        reason: str,
        settings: ExperimentSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        current = port.values()
        if not b:
            raise ValueError("b: an experiment needs at least one parameter to change")
        for name in b:
            if name not in current:
                raise ValueError(f"b: no live parameter {name!r}")
        self.a: dict[str, Value] = {name: current[name] for name in b}
        self.b: dict[str, Value] = dict(b)
        if self.a == self.b:
            raise ValueError(f"b: {self.b} is what is in force already")
        self.reason = reason
        self.settings = settings or ExperimentSettings()
        self._port = port
        self._clock = clock
        self.started_at = clock()
        self._slice_started = self.started_at
        self._slice = 0  # even slices run A, odd ones B
        self._skip = 0
        self._scores: dict[Arm, list[float]] = {Arm.A: [], Arm.B: []}
        self.result: ExperimentResult | None = None

    @property
    def arm(self) -> Arm:
        return Arm.A if self._slice % 2 == 0 else Arm.B

    @property
    def description(self) -> str:
        change = ", ".join(f"{n} {self.a[n]} -> {self.b[n]}" for n in self.b)
        return f"A/B {change}"

    def observe(self, score: float) -> ExperimentResult | None:
        """Count one objective sample for the arm in force; switch arms when the slice is
        over; after the last slice, decide, apply the winner and return the result."""
        if self.result is not None:
            return self.result
        if self._skip > 0:
            self._skip -= 1
        elif math.isfinite(score):
            self._scores[self.arm].append(score)
        now = self._clock()
        if now - self._slice_started < self.settings.slice_s:
            return None
        self._slice += 1
        if self._slice >= 2 * self.settings.slices:
            return self._decide(now)
        try:
            self._port.apply(self.b if self.arm is Arm.B else self.a)
        except ConfigUpdateRejected as exc:
            return self.abort(f"switching to {self.arm.value.upper()} was refused: {exc}")
        self._slice_started = now
        self._skip = self.settings.settle
        return None

    def abort(self, why: str) -> ExperimentResult:
        """End now, restoring A, without a decision."""
        return self._finish(adopted=False, t=math.nan, p=math.nan, reason=f"aborted: {why}",
                            now=self._clock())

    def status(self) -> dict[str, Any]:
        """The running experiment: what, which arm, how far, samples per arm."""
        return {
            "description": self.description,
            "reason": self.reason,
            "arm": self.arm.value,
            "slice": self._slice + 1,
            "slices": 2 * self.settings.slices,
            "started_at": self.started_at,
            "n_a": len(self._scores[Arm.A]),
            "n_b": len(self._scores[Arm.B]),
        }

    def _decide(self, now: float) -> ExperimentResult:
        a, b = self._scores[Arm.A], self._scores[Arm.B]
        if len(a) < 2 or len(b) < 2:
            return self._finish(adopted=False, t=math.nan, p=math.nan, now=now,
                                reason=f"too few samples ({len(a)} A, {len(b)} B): kept A")
        t, p = _welch_less(b, a)
        adopted = p < self.settings.alpha
        verdict = "adopted B" if adopted else "kept A"
        reason = (f"objective {_mean(b):.3g} (B) vs {_mean(a):.3g} (A), Welch t = {t:.3g}, "
                  f"p = {p:.3g} {'<' if adopted else '>='} {self.settings.alpha:g}: {verdict}")
        return self._finish(adopted=adopted, t=t, p=p, reason=reason, now=now)

    def _finish(self, *, adopted: bool, t: float, p: float, reason: str,
                now: float) -> ExperimentResult:
        final = self.b if adopted else self.a
        try:
            self._port.apply(final)
        except ConfigUpdateRejected as exc:  # whatever is in force stays; say so
            reason = f"{reason}; applying {'B' if adopted else 'A'} failed: {exc}"
        a, b = self._scores[Arm.A], self._scores[Arm.B]
        self.result = ExperimentResult(
            description=self.description, a=dict(self.a), b=dict(self.b), adopted=adopted,
            mean_a=_mean(a), mean_b=_mean(b), n_a=len(a), n_b=len(b), t=t, p_value=p,
            started_at=self.started_at, ended_at=now, reason=reason,
        )
        return self.result


def _welch_less(b: list[float], a: list[float]) -> tuple[float, float]:
    """Welch's t statistic and one-sided p-value for "B's mean is lower than A's"."""
    from scipy import stats  # loaded only when an experiment decides

    if _var(a) == 0 and _var(b) == 0:
        # Constant scores in both arms: the test is undefined; the means say it all.
        mean_a, mean_b = _mean(a), _mean(b)
        if mean_b < mean_a:
            return -math.inf, 0.0
        return (0.0 if mean_b == mean_a else math.inf), 1.0
    result = stats.ttest_ind(b, a, equal_var=False, alternative="less")
    return float(result.statistic), float(result.pvalue)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def _var(values: list[float]) -> float:
    mean = _mean(values)
    return math.fsum((v - mean) ** 2 for v in values)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def status_lines(experiments: Any) -> list[str]:
    """The A/B experiments: the running one and the recent decisions (TUI and
    `coordinator status` alike)."""
    experiments = experiments if isinstance(experiments, Mapping) else {}
    running = experiments.get("running")
    results = list(experiments.get("results") or [])
    lines = ["experiments:" + ("" if running or results else " none")]
    if running:
        lines.append(f"  running: {running['description']} (arm {running['arm']}, slice "
                     f"{running['slice']} of {running['slices']}): {running['reason']}")
    lines += [f"  {'adopted' if r['adopted'] else 'kept A'}: {r['description']}: {r['reason']}"
              for r in reversed(results)]
    return lines
