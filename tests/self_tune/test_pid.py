"""PID (simple-pid's manner) and the AIMD / gradient concurrency limiters."""

from __future__ import annotations

import pytest

from self_tune import PID, AIMDLimiter, GradientLimiter


def test_proportional_only_output_is_gain_times_error() -> None:
    """With only Kp, the output is Kp · (setpoint - measurement)."""
    pid = PID(2.0, 0.0, 0.0, setpoint=10.0, clock=lambda: 0.0)
    assert pid.update(7.0, dt=1.0) == pytest.approx(6.0)
    assert pid.components == pytest.approx((6.0, 0.0, 0.0))


def test_integral_accumulates_error_times_dt() -> None:
    """The integral term grows by Ki · error · dt."""
    pid = PID(0.0, 0.5, 0.0, setpoint=1.0, clock=lambda: 0.0)
    pid.update(0.0, dt=2.0)
    assert pid.update(0.0, dt=2.0) == pytest.approx(2.0)


def test_derivative_is_on_measurement_so_a_setpoint_change_does_not_kick() -> None:
    """Moving the setpoint changes P but not D."""
    pid = PID(0.0, 0.0, 1.0, setpoint=0.0, clock=lambda: 0.0)
    pid.update(5.0, dt=1.0)
    pid.setpoint = 100.0
    pid.update(5.0, dt=1.0)
    assert pid.components[2] == 0.0
    pid.update(7.0, dt=1.0)
    assert pid.components[2] == pytest.approx(-2.0)


def test_output_is_clamped_to_limits() -> None:
    """The output never leaves output_limits."""
    pid = PID(100.0, 0.0, 0.0, setpoint=10.0, output_limits=(-1.0, 1.0), clock=lambda: 0.0)
    assert pid.update(0.0, dt=1.0) == 1.0
    assert pid.update(20.0, dt=1.0) == -1.0


def test_anti_windup_keeps_integral_from_growing_while_saturated() -> None:
    """A long saturation does not wind the integral past the limits; it unwinds at once."""
    pid = PID(1.0, 1.0, 0.0, setpoint=100.0, output_limits=(0.0, 10.0), clock=lambda: 0.0)
    for _ in range(1000):
        pid.update(0.0, dt=1.0)
    assert pid.components[1] <= 10.0
    # Overshoot: the measurement passes the setpoint; the output drops on the next step.
    assert pid.update(101.0, dt=1.0) < 10.0


def test_dt_comes_from_the_injected_clock_when_not_given() -> None:
    """Without dt the controller measures time on its clock."""
    now = [0.0]
    pid = PID(0.0, 1.0, 0.0, setpoint=1.0, clock=lambda: now[0])
    now[0] = 3.0
    assert pid.update(0.0) == pytest.approx(3.0)


def test_reset_clears_the_integral() -> None:
    """reset() forgets the accumulated integral."""
    pid = PID(0.0, 1.0, 0.0, setpoint=1.0, clock=lambda: 0.0)
    pid.update(0.0, dt=5.0)
    pid.reset()
    assert pid.components == (0.0, 0.0, 0.0)
    assert pid.last_output is None


def test_bad_arguments_are_named() -> None:
    """Inverted limits, a NaN gain and a zero dt raise ValueError naming the problem."""
    with pytest.raises(ValueError, match="output_limits"):
        PID(output_limits=(5.0, 1.0))
    with pytest.raises(ValueError, match="kp"):
        PID(float("nan"))
    with pytest.raises(ValueError, match="dt"):
        PID().update(1.0, dt=0.0)


def test_pid_drives_a_first_order_plant_to_its_setpoint() -> None:
    """Closed loop on x' = u - x, the measurement settles at the setpoint."""
    pid = PID(1.0, 0.5, 0.05, setpoint=3.0, clock=lambda: 0.0)
    x = 0.0
    for _ in range(400):
        u = pid.update(x, dt=0.1)
        x += (u - x) * 0.1
    assert x == pytest.approx(3.0, abs=0.05)


def test_aimd_halves_on_drop_and_adds_while_used() -> None:
    """AIMD multiplies on a drop and adds one on a good sample while the limit is in use."""
    lim = AIMDLimiter(initial_limit=20, backoff_ratio=0.5)
    assert lim.update(0.1, inflight=15) == 21
    assert lim.update(0.1, inflight=15, dropped=True) == 10
    assert lim.update(0.1, inflight=1) == 10  # not in use: no growth


def test_aimd_treats_a_slow_call_as_a_drop() -> None:
    """An RTT past timeout_s backs off like a drop."""
    lim = AIMDLimiter(initial_limit=20, backoff_ratio=0.5, timeout_s=1.0)
    assert lim.update(2.0, inflight=20) == 10


def test_aimd_respects_bounds() -> None:
    """The limit stays within [min_limit, max_limit]."""
    lim = AIMDLimiter(initial_limit=4, min_limit=2, max_limit=5, backoff_ratio=0.5)
    for _ in range(10):
        lim.update(0.1, inflight=5, dropped=True)
    assert lim.limit == 2
    for _ in range(10):
        lim.update(0.1, inflight=5)
    assert lim.limit == 5


def test_gradient_grows_while_rtt_is_flat() -> None:
    """With no queueing (short RTT = long RTT) the gradient limiter grows the limit."""
    lim = GradientLimiter(initial_limit=10)
    for _ in range(50):
        lim.update(0.1, inflight=lim.limit)
    assert lim.limit > 10


def test_gradient_shrinks_when_rtt_inflates() -> None:
    """When the short RTT rises far above the long one the limit comes down."""
    lim = GradientLimiter(initial_limit=50, long_window=1000)
    for _ in range(200):
        lim.update(0.1, inflight=lim.limit)
    high = lim.limit
    for _ in range(20):
        lim.update(0.5, inflight=lim.limit)
    assert lim.limit < high


def test_gradient_leaves_an_unused_limit_alone() -> None:
    """Application-limited traffic (inflight < limit / 2) does not move the limit."""
    lim = GradientLimiter(initial_limit=40)
    for _ in range(50):
        lim.update(0.1, inflight=2)
    assert lim.limit == 40


def test_limiter_bad_arguments_are_named() -> None:
    """Bad bounds are ValueErrors naming the parameter."""
    with pytest.raises(ValueError, match="initial_limit"):
        AIMDLimiter(initial_limit=0)
    with pytest.raises(ValueError, match="smoothing"):
        GradientLimiter(smoothing=0)
