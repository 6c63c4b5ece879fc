"""`ZScoreDetector`: a rolling z-score, for sudden spikes in one metric.

Each value is scored against the window of recent values that raised no alarm:
``z = (x - mean) / std`` (or, with ``robust=True``, ``(x - median) / (1.4826 · MAD)``, which a
few outliers in the window cannot drag). ``|z| > threshold`` is an anomaly; the value is then
kept out of the window, so a spike does not teach the detector that spikes are normal.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable

from self_tune.detectors._checks import check_min_int, check_positive
from self_tune.detectors.anomaly import Anomaly, DetectorKind, Severity

__all__ = ["ZScoreDetector"]

# 1.4826 · MAD estimates σ for normal data; 1.2533 · mean |deviation| does too, and is the
# fallback when more than half the window is one value (MAD = 0, e.g. a mostly-zero rate).
_MAD_TO_STD = 1.4826
_MEAN_AD_TO_STD = 1.2533


class ZScoreDetector:
    """Rolling z-score over the last `window` unalarmed values.

    Parameters (the detectors share these names):
      metric          the name carried by the anomalies it reports
      window          how many recent unalarmed values form the baseline
      warmup          values learned before any alarm can be raised (<= window)
      threshold       |z| above this is an anomaly (`Severity.WARNING`)
      critical_score  |z| at or above this is `Severity.CRITICAL`
      robust          median/MAD instead of mean/standard deviation
      min_std         the smallest scale used, so a constant baseline (an error rate that has
                      been 0) still scores a departure instead of dividing by zero
      clock           time source for `Anomaly.time` (wall-clock epoch seconds by default,
                      because anomalies are shown to people and stored)

    Defaults hold about 0.1 false alarms per 10,000 samples of Gaussian noise and flag an 8σ
    spike on its sample (see benchmarks/anomaly.py).
    """

    __slots__ = (
        "_alarm",
        "_clock",
        "_last_score",
        "_n_seen",
        "_since_recompute",
        "_sorted",
        "_sum",
        "_sumsq",
        "_values",
        "critical_score",
        "metric",
        "min_std",
        "robust",
        "threshold",
        "warmup",
        "window",
    )

    def __init__(
        self,
        *,
        metric: str = "value",
        window: int = 300,
        warmup: int = 100,
        threshold: float = 5.0,
        critical_score: float = 10.0,
        robust: bool = False,
        min_std: float = 1e-6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metric = metric
        self.window = check_min_int("window", window, 2)
        self.warmup = check_min_int("warmup", warmup, 2)
        if warmup > window:
            raise ValueError(f"warmup must be <= window ({window}), got {warmup!r}")
        self.threshold = check_positive("threshold", threshold)
        self.critical_score = check_positive("critical_score", critical_score)
        if critical_score < threshold:
            raise ValueError(
                f"critical_score must be >= threshold ({threshold}), got {critical_score!r}"
            )
        self.robust = bool(robust)
        self.min_std = check_positive("min_std", min_std)
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget everything learned; the next values warm the detector up again."""
        self._values: deque[float] = deque()
        self._sorted: list[float] = []
        self._sum = 0.0
        self._sumsq = 0.0
        self._since_recompute = 0
        self._n_seen = 0
        self._alarm = False
        self._last_score = 0.0

    @property
    def alarm(self) -> bool:
        """Whether the most recent `update` raised an anomaly."""
        return self._alarm

    @property
    def warmed_up(self) -> bool:
        """Whether enough values have been learned to raise alarms."""
        return len(self._values) >= self.warmup

    @property
    def n_seen(self) -> int:
        """How many values `update` has been given since the last reset."""
        return self._n_seen

    @property
    def baseline(self) -> float:
        """The expected value: the window's mean (median when robust); 0.0 before any value."""
        if not self._values:
            return 0.0
        if self.robust:
            return _median(self._sorted)
        return self._sum / len(self._values)

    @property
    def scale(self) -> float:
        """The window's spread in the units of the metric (never below `min_std`)."""
        n = len(self._values)
        if n < 2:
            return self.min_std
        if self.robust:
            med = _median(self._sorted)
            deviations = sorted(abs(v - med) for v in self._sorted)
            spread = _MAD_TO_STD * _median(deviations)
            if spread <= 0.0:
                spread = _MEAN_AD_TO_STD * sum(deviations) / n
        else:
            mean = self._sum / n
            spread = math.sqrt(max(0.0, (self._sumsq - n * mean * mean) / (n - 1)))
        return max(spread, self.min_std)

    @property
    def last_score(self) -> float:
        """The signed z-score of the most recent value (0.0 during warm-up)."""
        return self._last_score

    def update(self, x: float, *, at: float | None = None) -> Anomaly | None:
        """Score `x`; return an `Anomaly` when it is one, else learn it and return None.

        `at` overrides the clock for the anomaly's time (a telemetry snapshot's own stamp).
        Non-finite values raise ValueError naming the metric.
        """
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"{self.metric}: value must be finite, got {x!r}")
        self._n_seen += 1
        if not self.warmed_up:
            self._alarm = False
            self._last_score = 0.0
            self._learn(x)
            return None
        baseline, scale = self.baseline, self.scale
        z = (x - baseline) / scale
        self._last_score = z
        if abs(z) <= self.threshold:
            self._alarm = False
            self._learn(x)
            return None
        self._alarm = True
        severity = Severity.CRITICAL if abs(z) >= self.critical_score else Severity.WARNING
        return Anomaly(
            metric=self.metric,
            value=x,
            baseline=baseline,
            score=abs(z),
            severity=severity,
            time=self._clock() if at is None else at,
            detector=DetectorKind.ZSCORE,
        )

    def _learn(self, x: float) -> None:
        self._values.append(x)
        self._sum += x
        self._sumsq += x * x
        if self.robust:
            bisect.insort(self._sorted, x)
        if len(self._values) > self.window:
            old = self._values.popleft()
            self._sum -= old
            self._sumsq -= old * old
            if self.robust:
                del self._sorted[bisect.bisect_left(self._sorted, old)]
            self._since_recompute += 1
            # Running sums drift as values come and go; recomputing once per window keeps
            # the error at one window's worth of rounding.
            if self._since_recompute >= self.window:
                self._since_recompute = 0
                self._sum = math.fsum(self._values)
                self._sumsq = math.fsum(v * v for v in self._values)


def _median(sorted_values: list[float]) -> float:
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return sorted_values[mid]
    return 0.5 * (sorted_values[mid - 1] + sorted_values[mid])
