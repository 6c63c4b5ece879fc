"""Anomaly detectors over raw metric values: z-score, CUSUM, and absolute objectives.

One contract: keyword constructor arguments under shared names (`metric`, `window`, `warmup`,
`critical_score`, `min_std`, `clock`), `update(x) -> Anomaly | None`, `reset()`, and read-only
properties (`alarm`, `baseline`, `scale`, `warmed_up`, `n_seen`).
"""

from self_tune.detectors.anomaly import Anomaly, DetectorKind, Severity
from self_tune.detectors.cusum import CusumDetector
from self_tune.detectors.slo import SloDetector
from self_tune.detectors.zscore import ZScoreDetector

__all__ = ["Anomaly", "CusumDetector", "DetectorKind", "Severity", "SloDetector", "ZScoreDetector"]
