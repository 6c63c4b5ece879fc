"""`PID`: a discrete PID controller in the manner of simple-pid.

    output = Kp·e + Ki·∫e dt − Kd·d(measurement)/dt,     e = setpoint − measurement

Derivative on measurement (not on error), so moving the setpoint gives no derivative kick.
Anti-windup: the integral term is clamped to the output limits, and it is not grown while the
output is saturated in the direction the error pushes. The clock is injected and `dt` can be
given explicitly (a simulation steps in simulated seconds; a test never sleeps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["PID"]


def _clamp(value: float, limits: tuple[float | None, float | None]) -> float:
    lower, upper = limits
    if upper is not None and value > upper:
        return upper
    if lower is not None and value < lower:
        return lower
    return value


def _check_gain(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


class PID:
    """A PID controller.

    `kp`, `ki`, `kd` are the gains (a negative gain reverses the action); `setpoint` is the
    target for the measurement; `output_limits` (lower, upper) clamp the output (None: open);
    `clock` is the time source used when `update` gets no `dt` (seconds, monotonic).
    """

    __slots__ = (
        "_clock",
        "_d",
        "_i",
        "_last_measurement",
        "_last_output",
        "_last_time",
        "_limits",
        "_p",
        "kd",
        "ki",
        "kp",
        "setpoint",
    )

    def __init__(
        self,
        kp: float = 1.0,
        ki: float = 0.0,
        kd: float = 0.0,
        *,
        setpoint: float = 0.0,
        output_limits: tuple[float | None, float | None] = (None, None),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kp = _check_gain("kp", kp)
        self.ki = _check_gain("ki", ki)
        self.kd = _check_gain("kd", kd)
        self.setpoint = _check_gain("setpoint", setpoint)
        self._limits: tuple[float | None, float | None] = (None, None)
        self.output_limits = output_limits
        self._clock = clock
        self.reset()

    @property
    def output_limits(self) -> tuple[float | None, float | None]:
        """(lower, upper) bounds on the output; None leaves a side open."""
        return self._limits

    @output_limits.setter
    def output_limits(self, limits: tuple[float | None, float | None]) -> None:
        lower, upper = limits
        if lower is not None and upper is not None and lower > upper:
            raise ValueError(f"output_limits lower must be <= upper, got {limits!r}")
        self._limits = (lower, upper)
        self._i = _clamp(getattr(self, "_i", 0.0), self._limits)

    @property
    def components(self) -> tuple[float, float, float]:
        """The (proportional, integral, derivative) terms of the last output."""
        return (self._p, self._i, self._d)

    @property
    def last_output(self) -> float | None:
        """The last output, or None before the first update."""
        return self._last_output

    def reset(self) -> None:
        """Clear the integral, the derivative's memory and the last output."""
        self._p = self._i = self._d = 0.0
        self._last_measurement: float | None = None
        self._last_output: float | None = None
        self._last_time = self._clock()

    def update(self, measurement: float, dt: float | None = None) -> float:
        """Take one measurement and return the new output.

        `dt` is the time since the last update in seconds; None measures it on the clock.
        Raises ValueError for a non-finite measurement or a dt <= 0.
        """
        measurement = float(measurement)
        if not math.isfinite(measurement):
            raise ValueError(f"measurement must be finite, got {measurement!r}")
        now = self._clock()
        if dt is None:
            dt = now - self._last_time
            if dt <= 0:
                dt = 1e-16  # two updates on one clock tick: no time has passed
        elif not math.isfinite(dt) or dt <= 0:
            raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
        self._last_time = now
        error = self.setpoint - measurement
        d_input = 0.0 if self._last_measurement is None else measurement - self._last_measurement
        self._p = self.kp * error
        self._d = -self.kd * d_input / dt
        unclamped = self._p + self._i + self._d
        saturated_high = self._limits[1] is not None and unclamped >= self._limits[1]
        saturated_low = self._limits[0] is not None and unclamped <= self._limits[0]
        growth = self.ki * error * dt
        # Conditional integration: while saturated, only let the integral unwind.
        if not ((saturated_high and growth > 0) or (saturated_low and growth < 0)):
            self._i = _clamp(self._i + growth, self._limits)
        output = _clamp(self._p + self._i + self._d, self._limits)
        self._last_measurement = measurement
        self._last_output = output
        return output
