"""The anomaly detectors: one contract, and the targets issue 12 sets for the defaults."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import pytest

from self_tune import Anomaly, CusumDetector, DetectorKind, Severity, SloDetector, ZScoreDetector

STATISTICAL: dict[str, Callable[..., Any]] = {
    "zscore": ZScoreDetector,
    "zscore-robust": lambda **kw: ZScoreDetector(robust=True, **kw),
    "cusum": CusumDetector,
}


def _warm(det: Any, rng: random.Random, n: int = 300, mean: float = 100.0, sd: float = 5.0) -> None:
    for _ in range(n):
        assert det.update(rng.gauss(mean, sd)) is None


@pytest.mark.parametrize("name", STATISTICAL)
def test_no_alarm_during_warmup(name: str) -> None:
    """Nothing is flagged before the warm-up is over, however wild the values."""
    det = STATISTICAL[name](warmup=10)
    results = [det.update(v) for v in [1, 1000, -50, 3, 9999, 2, 1, 7, 8, 4]]
    assert results == [None] * 10
    assert det.warmed_up


@pytest.mark.parametrize("name", STATISTICAL)
def test_huge_jump_is_flagged_with_its_metric_and_time(name: str) -> None:
    """A value 50σ off the learned baseline comes back as an Anomaly naming metric and time."""
    det = STATISTICAL[name](metric="latency_p95_ms", clock=lambda: 1234.5)
    _warm(det, random.Random(1))
    anomaly = det.update(100.0 + 50 * 5.0)
    assert isinstance(anomaly, Anomaly)
    assert anomaly.metric == "latency_p95_ms"
    assert anomaly.time == 1234.5
    assert anomaly.value == 350.0
    assert abs(anomaly.baseline - 100.0) < 2.0
    assert det.alarm


@pytest.mark.parametrize("name", STATISTICAL)
def test_alarm_clears_on_a_normal_value(name: str) -> None:
    """`alarm` reflects the latest update only."""
    det = STATISTICAL[name]()
    _warm(det, random.Random(2))
    assert det.update(1000.0) is not None
    assert det.update(100.0) is None
    assert not det.alarm


@pytest.mark.parametrize("name", STATISTICAL)
def test_reset_forgets_the_baseline(name: str) -> None:
    """After reset the detector warms up again."""
    det = STATISTICAL[name]()
    _warm(det, random.Random(4))
    det.reset()
    assert not det.warmed_up
    assert det.n_seen == 0
    assert det.update(1e6) is None


@pytest.mark.parametrize("name", STATISTICAL)
def test_zero_variance_baseline_scores_a_departure(name: str) -> None:
    """An error rate that has been exactly 0 is flagged when it moves, without dividing by 0."""
    det = STATISTICAL[name](warmup=50)
    for _ in range(200):
        assert det.update(0.0) is None
    flagged = [det.update(0.2) for _ in range(5)]
    assert any(a is not None for a in flagged)
    assert det.scale > 0


@pytest.mark.parametrize("name", STATISTICAL)
def test_non_finite_value_is_refused_naming_the_metric(name: str) -> None:
    """NaN is a ValueError that names the metric, not a silent alarm."""
    det = STATISTICAL[name](metric="error_rate")
    with pytest.raises(ValueError, match="error_rate"):
        det.update(float("nan"))


@pytest.mark.parametrize("name", STATISTICAL)
def test_bad_constructor_argument_is_named(name: str) -> None:
    """A bad parameter raises ValueError naming it and its value."""
    with pytest.raises(ValueError, match=r"warmup.*-1"):
        STATISTICAL[name](warmup=-1)


@pytest.mark.parametrize("name", STATISTICAL)
def test_at_overrides_the_clock(name: str) -> None:
    """`update(x, at=t)` stamps the anomaly with the snapshot's own time."""
    det = STATISTICAL[name](clock=lambda: 1.0)
    _warm(det, random.Random(5))
    anomaly = det.update(10_000.0, at=99.0)
    assert anomaly is not None and anomaly.time == 99.0


@pytest.mark.parametrize("name", STATISTICAL)
def test_false_alarms_on_noise_are_rare(name: str) -> None:
    """At most 1 false alarm per 10,000 samples of Gaussian noise, with the defaults."""
    rng = random.Random(42)
    det = STATISTICAL[name]()
    alarms = sum(det.update(rng.gauss(50.0, 3.0)) is not None for _ in range(20_000))
    assert alarms <= 2


def test_zscore_flags_an_8_sigma_spike_on_its_sample() -> None:
    """The z-score detector flags an 8σ spike on the very sample where it happens."""
    for seed in range(20):
        rng = random.Random(seed)
        det = ZScoreDetector()
        _warm(det, rng)
        anomaly = det.update(100.0 + 8 * 5.0)
        assert anomaly is not None, seed
        assert anomaly.detector is DetectorKind.ZSCORE


def test_zscore_keeps_a_spike_out_of_its_baseline() -> None:
    """A flagged spike is not learned: the baseline stays where it was."""
    det = ZScoreDetector()
    _warm(det, random.Random(6))
    before = det.baseline
    det.update(10_000.0)
    assert det.baseline == before


def test_robust_zscore_survives_outliers_in_warmup() -> None:
    """With robust=True a few huge values during warm-up do not blind the detector."""
    rng = random.Random(7)
    plain, robust = ZScoreDetector(), ZScoreDetector(robust=True)
    for i in range(300):
        v = 1e5 if i % 50 == 0 else rng.gauss(100.0, 5.0)
        plain.update(v)
        robust.update(v)
    assert robust.update(160.0) is not None
    assert plain.update(160.0) is None


def test_zscore_severity_is_critical_past_critical_score() -> None:
    """|z| beyond critical_score is Critical; between threshold and it, a Warning."""
    det = ZScoreDetector(threshold=5.0, critical_score=10.0)
    _warm(det, random.Random(8))
    warning = det.update(100.0 + 6.5 * det.scale)
    critical = det.update(100.0 + 30 * det.scale)
    assert warning is not None and warning.severity is Severity.WARNING
    assert critical is not None and critical.severity is Severity.CRITICAL


def test_cusum_median_delay_for_a_3_sigma_shift_is_at_most_5() -> None:
    """The CUSUM's median delay for a 3σ level shift is at most 5 samples."""
    delays = []
    for seed in range(60):
        rng = random.Random(seed)
        det = CusumDetector()
        _warm(det, rng)
        for i in range(100):
            if det.update(rng.gauss(115.0, 5.0)) is not None:
                delays.append(i)
                break
        else:
            delays.append(100)
    assert statistics.median(delays) <= 5


def test_cusum_catches_a_1_sigma_shift_the_zscore_cannot() -> None:
    """A sustained 1σ shift is caught by CUSUM within 100 samples; the z-score sees nothing."""
    rng = random.Random(9)
    cusum, zscore = CusumDetector(), ZScoreDetector()
    for _ in range(300):
        v = rng.gauss(100.0, 5.0)
        cusum.update(v)
        zscore.update(v)
    shifted = [rng.gauss(105.0, 5.0) for _ in range(100)]
    assert any(cusum.update(v) is not None for v in shifted)
    assert not any(zscore.update(v) is not None for v in shifted)


def test_cusum_detects_downward_shifts_too() -> None:
    """Two-sided: a drop is caught as well as a rise."""
    rng = random.Random(10)
    det = CusumDetector()
    _warm(det, rng)
    hits = [det.update(rng.gauss(85.0, 5.0)) for _ in range(20)]
    anomaly = next(a for a in hits if a is not None)
    assert anomaly.value < anomaly.baseline


def test_cusum_resets_its_sums_and_relearns_after_an_alarm() -> None:
    """After an alarm the sums are zero and the new level becomes the baseline."""
    rng = random.Random(11)
    det = CusumDetector(warmup=50, relearn=50)
    _warm(det, rng)
    while det.update(rng.gauss(130.0, 5.0)) is None:
        pass
    assert det.components == (0.0, 0.0)
    assert not det.warmed_up
    for _ in range(60):
        assert det.update(rng.gauss(130.0, 5.0)) is None
    assert abs(det.baseline - 130.0) < 3.0


def test_cusum_score_estimates_the_shift_size() -> None:
    """The anomaly's score is the estimated shift in σ (about 4 for a 4σ shift)."""
    rng = random.Random(12)
    scores = []
    for _ in range(20):
        det = CusumDetector()
        _warm(det, rng)
        while (a := det.update(rng.gauss(120.0, 5.0))) is None:
            pass
        scores.append(a.score)
    assert 2.5 < statistics.median(scores) < 5.5


def test_slo_breach_is_critical_whatever_the_baseline() -> None:
    """A p95 over its objective is Critical on the first sample, with no warm-up."""
    det = SloDetector(metric="latency_p95_ms", limit=500.0, clock=lambda: 7.0)
    assert det.update(499.0) is None
    anomaly = det.update(750.0)
    assert anomaly is not None
    assert anomaly.severity is Severity.CRITICAL
    assert anomaly.detector is DetectorKind.SLO
    assert anomaly.score == pytest.approx(1.5)
    assert det.alarm


def test_slo_on_an_error_rate_of_zero_limit() -> None:
    """A zero limit (no errors allowed) still scores a breach without dividing by zero."""
    det = SloDetector(metric="error_rate", limit=0.0)
    anomaly = det.update(0.05)
    assert anomaly is not None and anomaly.score == pytest.approx(0.05)


def test_anomaly_to_dict_is_plain_json() -> None:
    """Anomaly.to_dict gives strings for the enums."""
    a = Anomaly(
        metric="m",
        value=1.0,
        baseline=0.0,
        score=3.0,
        severity=Severity.WARNING,
        time=1.0,
        detector=DetectorKind.CUSUM,
    )
    assert a.to_dict()["severity"] == "Warning"
    assert a.to_dict()["detector"] == "cusum"
