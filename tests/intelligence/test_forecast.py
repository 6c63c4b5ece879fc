"""`DemandForecaster`: exponential smoothing with trend and, when present, seasonality,
evaluated on replayed (seeded) traces against the last-value forecast; its recommendations;
its forecast on the self-tuning loop's telemetry."""

from __future__ import annotations

import math
import random

import pytest

from intelligence.forecast import (
    DemandForecaster,
    TelemetryForecast,
    detect_season,
    recommend_agents,
    recommend_concurrency,
)
from self_tune.service import SelfTuning


def trace(kind: str, n: int = 400, seed: int = 3) -> list[float]:
    """A request-rate trace, one value per interval: `daily` (a cycle of 24), `ramp` (a
    steady rise), `both`, or `flat` (noise around a level)."""
    rng = random.Random(seed)
    out = []
    for t in range(n):
        cycle = 10 * math.sin(2 * math.pi * t / 24)
        value = {
            "daily": 20 + cycle,
            "ramp": 5 + 0.1 * t,
            "both": 5 + 0.05 * t + 0.8 * cycle,
            "flat": 10.0,
        }[kind]
        out.append(max(0.0, value + rng.gauss(0, 1)))
    return out


def mean_errors(values: list[float], lead: int, start: int = 80) -> tuple[float, float]:
    """(forecaster, last value) mean absolute error `lead` intervals ahead, replaying."""
    forecaster = DemandForecaster()
    ours = naive = 0.0
    n = 0
    for t in range(len(values) - lead):
        forecaster.update(values[t])
        if t >= start:
            predicted = forecaster.forecast(lead)
            assert predicted is not None
            ours += abs(predicted - values[t + lead])
            naive += abs(values[t] - values[t + lead])
            n += 1
    return ours / n, naive / n


@pytest.mark.parametrize("kind", ["daily", "ramp", "both"])
@pytest.mark.parametrize("lead", [1, 6])
def test_it_beats_the_last_value_on_trends_and_cycles(kind: str, lead: int) -> None:
    """On a cycle, a trend or both, its error is below the last value's, further ahead too."""
    ours, naive = mean_errors(trace(kind), lead)
    assert ours < naive * 0.9, (ours, naive)


def test_it_does_no_worse_than_the_last_value_on_noise() -> None:
    """Without trend or cycle it smooths the noise (the last value carries all of it)."""
    ours, naive = mean_errors(trace("flat"), 1)
    assert ours <= naive


def test_a_cycle_is_found_only_where_there_is_one() -> None:
    """The autocorrelation finds the 24-sample cycle, and none in noise or a ramp."""
    assert detect_season(trace("daily", 96)) == 24
    assert detect_season(trace("both", 96)) == 24
    assert detect_season(trace("flat", 96)) is None
    assert detect_season(trace("ramp", 96)) is None
    forecaster = DemandForecaster()
    for value in trace("daily", 100):
        forecaster.update(value)
    assert forecaster.period == 24


def test_it_sees_a_ramp_coming_before_the_last_value_does() -> None:
    """Lead time: on a rising rate, the forecast 12 intervals ahead is, on average, where the
    true rate will be at least 5 intervals later (the last value is where it is now)."""
    slope = 0.1
    for seed in range(5):
        values = trace("ramp", 300, seed=seed)
        forecaster = DemandForecaster(season_length=None)
        ahead = []
        for t, value in enumerate(values):
            forecaster.update(value)
            predicted = forecaster.forecast(12)
            if t >= 50 and predicted is not None:
                ahead.append((predicted - (5 + slope * t)) / slope)
        lead_steps = sum(ahead) / len(ahead)
        assert lead_steps >= 5, (seed, lead_steps)


def test_parameters_are_validated_and_reset_forgets() -> None:
    """Bad parameters name themselves; reset() starts over."""
    for bad in ({"alpha": 0}, {"phi": 1.5}, {"season_length": 1}, {"warmup": 2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DemandForecaster(**bad)  # type: ignore[arg-type]
    forecaster = DemandForecaster(season_length=None)
    assert forecaster.forecast() is None
    forecaster.update(3.0)
    assert forecaster.forecast() == 3.0
    forecaster.reset()
    assert not forecaster.ready
    with pytest.raises(ValueError, match="x"):
        forecaster.update(math.nan)


def test_recommendations_follow_littles_law() -> None:
    """Slots = rate × call time × headroom; agents clear the backlog within the horizon."""
    assert recommend_concurrency(40.0, 0.5) == 25  # 40/s × 0.5 s × 1.25
    assert recommend_concurrency(0.0, 0.5) == 1
    assert recommend_concurrency(1e9, 1.0) == 4096
    assert recommend_agents(30, attempt_s=60, horizon_s=600) == 3
    assert recommend_agents(0, attempt_s=60, horizon_s=600, arrivals_per_s=0.1) == 6


def test_the_forecast_rides_on_the_telemetry() -> None:
    """As a sampler's derived function it adds forecast.* metrics from each sample."""
    feed = TelemetryForecast(interval_s=5.0, lead_s=30.0)
    assert feed({}) == {}
    out: dict[str, float] = {}
    for t in range(50):
        out = feed({"requests_per_s": 2.0 + 0.1 * t, "latency_p50_ms": 400.0,
                    "fleet.backlog": 12.0, "fleet.attempt_duration.mean_s": 20.0})
    assert out["forecast.requests_per_s"] > 2.0 + 0.1 * 49  # a rising rate, 6 steps ahead
    assert out["forecast.concurrency"] == recommend_concurrency(out["forecast.requests_per_s"],
                                                                0.4)
    assert out["forecast.agents"] == recommend_agents(out["forecast.backlog"], 20.0, 30.0)
    assert feed.rate_rps() == out["forecast.requests_per_s"]


class RisingTraffic:
    """A snapshot source whose request counter grows faster every sample."""

    name = "pipeline"

    def __init__(self) -> None:
        self.total = 0.0
        self.step = 0

    def read(self) -> dict[str, float]:
        self.step += 1
        self.total += 10.0 * self.step
        return {"requests_total": self.total, "latency_p50_ms": 100.0}


def test_the_tuning_loop_publishes_the_forecast_and_feeds_it_forward() -> None:
    """SelfTuning's sampler publishes forecast.requests_per_s, and its status shows it."""
    now = [0.0]
    tuning = SelfTuning([RisingTraffic()], interval_s=1.0, clock=lambda: now[0],
                        monotonic=lambda: now[0])
    for _ in range(12):
        now[0] += 1.0
        tuning.tick()
    assert tuning.last_snapshot is not None
    values = tuning.last_snapshot.values
    assert values["forecast.requests_per_s"] > values["requests_per_s"]
    assert tuning.status()["forecast"]["forecast.requests_per_s"] > 0
