"""Demand forecasting: what the request rate and the task backlog will be, ahead of time.

    forecaster = DemandForecaster(season_length="auto")
    for rate in samples:                    # one value per telemetry interval
        forecaster.update(rate)
    forecaster.forecast(steps=12)           # the value 12 intervals from now (None: too early)

`DemandForecaster` is exponential smoothing with a damped additive trend (Holt) and, when the
series has one, an additive seasonal cycle (Holt-Winters). With `season_length="auto"` the
first `warmup` values are kept and the cycle is looked for by autocorrelation; a cycle is
used only when the correlation at its lag is strong (`min_season_correlation`). Pure Python,
no heavy import.

`recommend_concurrency` (Little's law: slots = rate × time per call) and `recommend_agents`
(the agents that clear the forecast backlog within the horizon) turn forecasts into sizes.
`TelemetryForecast` does this on each telemetry sample and returns the forecast as metrics,
for the self-tuning loop's controllers to take as feed-forward: it owns no knob.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = [
    "DemandForecaster",
    "TelemetryForecast",
    "detect_season",
    "recommend_agents",
    "recommend_concurrency",
]


def detect_season(
    values: Sequence[float], *, max_lag: int | None = None, min_correlation: float = 0.5
) -> int | None:
    """The period (in samples) of the strongest cycle in `values`, or None without a clear
    one: the first peak (lag ≥ 2) of the detrended series' autocorrelation that comes near
    the highest peak, if that reaches `min_correlation` and three cycles fit."""
    n = len(values)
    max_lag = n // 3 if max_lag is None else min(max_lag, n // 3)
    if max_lag < 2:
        return None
    # Detrend by a least-squares line, so a rising series does not look periodic everywhere.
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sxx
    resid = [v - mean_y - slope * (i - mean_x) for i, v in enumerate(values)]
    energy = sum(r * r for r in resid)
    if energy <= 1e-12:
        return None
    corr = {  # the usual (biased) estimate: noise at long lags does not look like a cycle
        lag: sum(resid[i] * resid[i - lag] for i in range(lag, n)) / energy
        for lag in range(1, max_lag + 1)
    }
    # A period is a peak of the autocorrelation: a smooth series correlates highly at short
    # lags too, but falls from lag 1 on. The first peak nearly as high as the best one wins
    # (a multiple of the period correlates as well as the period itself).
    peaks = [
        lag
        for lag in range(2, max_lag + 1)
        if corr[lag] >= corr[lag - 1] and corr[lag] >= corr.get(lag + 1, -math.inf)
    ]
    if not peaks:
        return None
    best = max(corr[lag] for lag in peaks)
    if best < min_correlation:
        return None
    return next(lag for lag in peaks if corr[lag] >= 0.9 * best)


class DemandForecaster:
    """Holt-Winters exponential smoothing, online (see the module docstring).

    `alpha`, `beta`, `gamma` smooth the level, the trend and the seasonal cycle; `phi` damps
    the trend over the forecast horizon (1: no damping). `season_length` is the cycle in
    samples, None for none, or "auto" to look for one in the first `warmup` samples.
    Forecasts never go below `floor` (rates and backlogs are not negative).
    Raises ValueError naming a bad parameter.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.05,
        gamma: float = 0.2,
        phi: float = 0.98,
        season_length: int | Literal["auto"] | None = "auto",
        warmup: int = 72,
        min_season_correlation: float = 0.5,
        floor: float = 0.0,
    ) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("phi", phi)):
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        fixed = season_length is not None and season_length != "auto"
        if fixed and (not isinstance(season_length, int) or season_length < 2):
            raise ValueError(
                f"season_length must be an int >= 2, 'auto' or None, got {season_length!r}"
            )
        if not isinstance(warmup, int) or warmup < 4:
            raise ValueError(f"warmup must be an int >= 4, got {warmup!r}")
        self.alpha, self.beta, self.gamma, self.phi = alpha, beta, gamma, phi
        self.season_length = season_length
        self.warmup = warmup
        self.min_season_correlation = min_season_correlation
        self.floor = floor
        self.reset()

    def reset(self) -> None:
        """Forget everything learned."""
        self._level: float | None = None
        self._trend = 0.0
        self._season: list[float] = []
        self._period: int | None = (
            self.season_length if isinstance(self.season_length, int) else None
        )
        self._history: list[float] = []
        self._phase = 0  # where in its cycle the next value falls
        self._count = 0
        self._decided = self.season_length != "auto"

    # -- learning ------------------------------------------------------------------------------

    def update(self, x: float) -> None:
        """Learn one observation (the value of the last interval)."""
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"x must be a finite number, got {x!r}")
        self._count += 1
        if not self._decided:
            self._history.append(x)
            if len(self._history) < self.warmup:
                self._smooth(x)
                return
            period = detect_season(
                self._history, min_correlation=self.min_season_correlation,
            )
            self._decided = True
            if period is not None:
                self._period = period
                history, self._history = self._history, []
                self._level, self._trend, self._season, self._phase = None, 0.0, [], 0
                for value in history:  # learn the warm-up again, now with its cycle
                    self._smooth(value)
                return
            self._history = []
            return
        self._smooth(x)

    def _smooth(self, x: float) -> None:
        period = self._period
        if period is not None and len(self._season) < period:
            # The first cycle sets the seasonal indices around its own mean.
            self._season.append(x)
            if len(self._season) == period:
                mean = sum(self._season) / period
                self._season = [s - mean for s in self._season]
                self._level, self._trend = mean, 0.0
            return
        if self._level is None:
            self._level, self._trend = x, 0.0
            return
        season = self._season[self._phase] if period else 0.0
        previous = self._level
        self._level = self.alpha * (x - season) + (1 - self.alpha) * (
            previous + self.phi * self._trend
        )
        self._trend = self.beta * (self._level - previous) + (1 - self.beta) * self.phi * (
            self._trend
        )
        if period:
            self._season[self._phase] = self.gamma * (x - self._level) + (1 - self.gamma) * season
            self._phase = (self._phase + 1) % period

    # -- results -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a forecast is available."""
        return self._level is not None

    @property
    def period(self) -> int | None:
        """The seasonal cycle in use, in samples (None: no seasonality)."""
        return self._period if self._season and self._level is not None else None

    @property
    def components(self) -> dict[str, float | int | None]:
        """Level, trend and period, as learned now."""
        return {"level": self._level, "trend": self._trend, "period": self.period}

    def forecast(self, steps: int = 1) -> float | None:
        """The value `steps` intervals ahead (1: the next), or None before any data."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps!r}")
        if self._level is None:
            return None
        damped = sum(self.phi**k for k in range(1, steps + 1))
        value = self._level + damped * self._trend
        period = self._period
        if period and len(self._season) == period:
            value += self._season[(self._phase + steps - 1) % period]
        return max(self.floor, value)


def recommend_concurrency(
    rate_rps: float, call_s: float, *, headroom: float = 1.25, low: int = 1, high: int = 4096
) -> int:
    """Inference slots for `rate_rps` arrivals each holding a slot `call_s` seconds
    (Little's law), with `headroom`, within [low, high]."""
    needed = math.ceil(max(0.0, rate_rps) * max(0.0, call_s) * headroom)
    return max(low, min(high, needed))


def recommend_agents(
    backlog: float,
    attempt_s: float,
    horizon_s: float,
    *,
    arrivals_per_s: float = 0.0,
    low: int = 1,
    high: int = 256,
) -> int:
    """Agents that finish the forecast `backlog` plus the tasks arriving meanwhile
    (`arrivals_per_s`) within `horizon_s`, each task taking `attempt_s`, within [low, high]."""
    if horizon_s <= 0:
        raise ValueError(f"horizon_s must be > 0, got {horizon_s!r}")
    work_s = (max(0.0, backlog) + max(0.0, arrivals_per_s) * horizon_s) * max(0.0, attempt_s)
    return max(low, min(high, math.ceil(work_s / horizon_s)))


class TelemetryForecast:
    """The forecast as telemetry: call it with one sample's metrics; it learns the request
    rate (`rate_metric`) and the backlog (`backlog_metric`) and returns

    - `forecast.requests_per_s`, `forecast.backlog`: the values `lead_s` ahead,
    - `forecast.concurrency`: slots for the forecast rate at the measured `latency_metric`,
    - `forecast.agents`: agents for the forecast backlog at the measured attempt duration,

    each only once it can be computed. It fits a `Sampler`'s `derived` functions; `rate_rps()`
    fits the `TuningController`'s `forecast`. `interval_s` is the sampling interval.
    """

    def __init__(
        self,
        *,
        interval_s: float,
        lead_s: float = 60.0,
        rate_metric: str = "requests_per_s",
        backlog_metric: str = "fleet.backlog",
        latency_metric: str = "latency_p50_ms",
        attempt_metric: str = "fleet.attempt_duration.mean_s",
        season_length: int | Literal["auto"] | None = "auto",
    ) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a finite number > 0, got {interval_s!r}")
        if not (math.isfinite(lead_s) and lead_s > 0):
            raise ValueError(f"lead_s must be a finite number > 0, got {lead_s!r}")
        self.interval_s = interval_s
        self.lead_s = lead_s
        self.steps = max(1, round(lead_s / interval_s))
        self.rate = DemandForecaster(season_length=season_length)
        self.backlog = DemandForecaster(season_length=season_length)
        self._metrics = (rate_metric, backlog_metric, latency_metric, attempt_metric)

    def __call__(self, values: Mapping[str, float]) -> dict[str, float]:
        rate_metric, backlog_metric, latency_metric, attempt_metric = self._metrics
        out: dict[str, float] = {}
        if rate_metric in values:
            self.rate.update(values[rate_metric])
        if backlog_metric in values:
            self.backlog.update(values[backlog_metric])
        rate = self.rate.forecast(self.steps)
        if rate is not None:
            out["forecast.requests_per_s"] = rate
            latency_ms = values.get(latency_metric)
            if latency_ms is not None and latency_ms > 0:
                out["forecast.concurrency"] = recommend_concurrency(rate, latency_ms / 1000)
        backlog = self.backlog.forecast(self.steps)
        if backlog is not None:
            out["forecast.backlog"] = backlog
            attempt_s = values.get(attempt_metric)
            if attempt_s is not None and attempt_s > 0:
                out["forecast.agents"] = recommend_agents(backlog, attempt_s, self.lead_s)
        if out:
            out["forecast.lead_s"] = self.lead_s
        return out

    def rate_rps(self) -> float | None:
        """The forecast arrivals per second `lead_s` ahead (None: not yet)."""
        return self.rate.forecast(self.steps)
