"""The fleet-size law reads the demand forecast (`forecast.agents`) as feed-forward, like the
concurrency law reads its forecast: the fleet grows before the backlog arrives, and does not
shrink while the forecast says the agents will be needed."""

from __future__ import annotations

from intelligence.forecast import TelemetryForecast
from self_tune.objective import Objective
from self_tune.policies import FleetSizeLaw, Signals
from self_tune.telemetry import TelemetrySnapshot


def signals(**values: float) -> Signals:
    return Signals(TelemetrySnapshot(taken_at=0.0, values=values), objective=Objective())


def test_a_forecast_of_more_work_grows_the_fleet_before_the_backlog_arrives() -> None:
    now = {"fleet.backlog": 2.0, "fleet.agents_idle": 0.0, "fleet.attempt_duration.p50_s": 60.0}
    law = FleetSizeLaw()
    assert law.propose(signals(**now), current=2) is None  # 2 tasks, 2 agents: enough today
    proposal = law.propose(signals(**now, **{"forecast.agents": 6.0, "forecast.lead_s": 60.0}),
                           current=2)
    assert proposal is not None and proposal.value == 3
    assert "forecast" in proposal.reason


def test_idle_agents_are_kept_while_the_forecast_needs_them() -> None:
    quiet = {"fleet.backlog": 0.0, "fleet.agents_idle": 2.0}
    law = FleetSizeLaw()
    shrink = law.propose(signals(**quiet), current=3)
    assert shrink is not None and shrink.value == 2
    assert law.propose(signals(**quiet, **{"forecast.agents": 3.0}), current=3) is None
    lower = law.propose(signals(**quiet, **{"forecast.agents": 1.0}), current=3)
    assert lower is not None and lower.value == 2


def test_the_telemetry_forecast_of_a_rising_backlog_reaches_the_law() -> None:
    """The forecast the sampler derives from a rising backlog is what the law reads."""
    forecast = TelemetryForecast(interval_s=5.0, lead_s=60.0)
    derived: dict[str, float] = {}
    for step in range(40):
        values = {"fleet.backlog": 1.0 + 2.0 * step, "fleet.attempt_duration.mean_s": 60.0}
        derived = forecast(values)
    assert derived["forecast.agents"] > 2
    law = FleetSizeLaw()
    now = {"fleet.backlog": 2.0, "fleet.agents_idle": 0.0, "fleet.attempt_duration.p50_s": 60.0}
    assert law.propose(signals(**now), current=2) is None
    grown = law.propose(signals(**now, **derived), current=2)
    assert grown is not None and grown.value == 3
