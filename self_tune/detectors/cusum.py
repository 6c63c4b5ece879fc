"""`CusumDetector`: two-sided CUSUM, for level shifts too small for a z-score to see.

Values are standardised against a learned baseline, ``z = (x - mean) / std``, and two sums
accumulate evidence of a shift up or down (Page, 1954):

    S⁺ = max(0, S⁺ + z - k)        S⁻ = max(0, S⁻ - z - k)

and either passing the decision interval `h` is an alarm. The reference `k` (in σ) is half the
smallest shift worth catching quickly; `h` trades detection delay against false alarms. On an
alarm both sums reset and the baseline is learned afresh from the values that follow (`relearn`
of them before the next alarm): a change detector reports the change once, and the new level
becomes the normal one.

The baseline is a running mean and variance (exact for the first `window` values, then
exponentially weighted over about `window` values), learned only while neither sum is past
``h / 2``, so a shift in progress is not absorbed into the baseline before it is caught.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from self_tune.detectors._checks import check_min_int, check_positive
from self_tune.detectors.anomaly import Anomaly, DetectorKind, Severity

__all__ = ["CusumDetector"]


class CusumDetector:
    """Two-sided CUSUM on standardised values.

    Parameters (shared names with `ZScoreDetector`): `metric`, `window` (the baseline's memory,
    in values), `warmup` (values learned before alarms), `critical_score`, `min_std`, `clock`;
    and CUSUM's own `k` (reference, σ), `h` (decision interval, σ) and `relearn` (values
    learned after an alarm before the next one; shorter than `warmup` so a detector that
    alarmed, rightly or not, is not blind for long).

    `Anomaly.score` is the estimated size of the shift in σ, ``k + S / n`` where n is the number
    of values since the sum last stood at zero; at or above `critical_score` it is `Critical`.

    Defaults (k=0.5, h=10) catch a 3σ shift in a median of 4 values after it starts and raise
    about 0.1 false alarms per 10,000 values of Gaussian noise (see benchmarks/anomaly.py).
    """

    __slots__ = (
        "_alarm",
        "_clock",
        "_learned",
        "_mean",
        "_n_neg",
        "_n_pos",
        "_n_seen",
        "_needed",
        "_neg",
        "_pos",
        "_var_sum",
        "critical_score",
        "h",
        "k",
        "metric",
        "min_std",
        "relearn",
        "warmup",
        "window",
    )

    def __init__(
        self,
        *,
        metric: str = "value",
        k: float = 0.5,
        h: float = 10.0,
        window: int = 1000,
        warmup: int = 100,
        relearn: int = 30,
        critical_score: float = 6.0,
        min_std: float = 1e-6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metric = metric
        self.k = check_positive("k", k, allow_zero=True)
        self.h = check_positive("h", h)
        self.window = check_min_int("window", window, 2)
        self.warmup = check_min_int("warmup", warmup, 2)
        if warmup > window:
            raise ValueError(f"warmup must be <= window ({window}), got {warmup!r}")
        self.relearn = check_min_int("relearn", relearn, 2)
        self.critical_score = check_positive("critical_score", critical_score)
        self.min_std = check_positive("min_std", min_std)
        self._clock = clock
        self._n_seen = 0
        self._alarm = False
        self._relearn(self.warmup)

    def _relearn(self, needed: int) -> None:
        self._needed = needed
        self._learned = 0
        self._mean = 0.0
        self._var_sum = 0.0  # Welford's M2 while exact; then weight-scaled (see _learn)
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._pos = self._neg = 0.0
        self._n_pos = self._n_neg = 0

    def reset(self) -> None:
        """Forget everything learned; the next values warm the detector up again."""
        self._n_seen = 0
        self._alarm = False
        self._relearn(self.warmup)

    @property
    def alarm(self) -> bool:
        """Whether the most recent `update` raised an anomaly."""
        return self._alarm

    @property
    def warmed_up(self) -> bool:
        """Whether enough values have been learned to raise alarms."""
        return self._learned >= self._needed

    @property
    def n_seen(self) -> int:
        """How many values `update` has been given since the last reset."""
        return self._n_seen

    @property
    def baseline(self) -> float:
        """The learned mean (0.0 before any value)."""
        return self._mean

    @property
    def scale(self) -> float:
        """The learned standard deviation (never below `min_std`)."""
        n = min(self._learned, self.window)
        if n < 2:
            return self.min_std
        return max(math.sqrt(max(0.0, self._var_sum / (n - 1))), self.min_std)

    @property
    def components(self) -> tuple[float, float]:
        """The two cumulative sums (S⁺, S⁻), in σ."""
        return (self._pos, self._neg)

    def update(self, x: float, *, at: float | None = None) -> Anomaly | None:
        """Add `x`; return an `Anomaly` when either sum passes `h`, else None.

        `at` overrides the clock for the anomaly's time. Non-finite values raise ValueError.
        """
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"{self.metric}: value must be finite, got {x!r}")
        self._n_seen += 1
        self._alarm = False
        if not self.warmed_up:
            self._learn(x)
            return None
        baseline, scale = self._mean, self.scale
        z = (x - baseline) / scale
        self._pos = max(0.0, self._pos + z - self.k)
        self._neg = max(0.0, self._neg - z - self.k)
        self._n_pos = self._n_pos + 1 if self._pos > 0 else 0
        self._n_neg = self._n_neg + 1 if self._neg > 0 else 0
        if self._pos > self.h or self._neg > self.h:
            upward = self._pos >= self._neg
            total, steps = (self._pos, self._n_pos) if upward else (self._neg, self._n_neg)
            shift = self.k + total / max(1, steps)
            self._alarm = True
            self._relearn(self.relearn)
            return Anomaly(
                metric=self.metric,
                value=x,
                baseline=baseline,
                score=shift,
                severity=Severity.CRITICAL if shift >= self.critical_score else Severity.WARNING,
                time=self._clock() if at is None else at,
                detector=DetectorKind.CUSUM,
            )
        if max(self._pos, self._neg) <= self.h / 2:
            self._learn(x)
        return None

    def _learn(self, x: float) -> None:
        self._learned += 1
        n = self._learned
        delta = x - self._mean
        if n <= self.window:
            # Welford: exact mean and M2 of everything so far.
            self._mean += delta / n
            self._var_sum += delta * (x - self._mean)
        else:
            # Past the window, weight the newest value as one of `window`: the estimate
            # follows slow, benign change (a diurnal cycle) at the window's pace.
            alpha = 1.0 / self.window
            self._mean += alpha * delta
            var = self._var_sum / (self.window - 1)
            var = (1.0 - alpha) * (var + alpha * delta * delta)
            self._var_sum = var * (self.window - 1)
