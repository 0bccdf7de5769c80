"""Deviation from the sensor's own baseline: a robust z-score of the window's robust value.

The baseline is a robust running location and absolute deviation (Huber-style: each window
moves them by at most three scales), per hour of the day for traffic and pressure once that
hour has history, else the recent one. Fires at ``|z| >= deviation_z`` once the baseline is
warm; the scale never falls below the kind's floors or the sensor's quantum, so a constant
or quantised series does not alarm on its smallest step.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.features import Features
from cityagent.detectors.params import DEVIATION_Z
from cityagent.detectors.verdict import (
    F_VALUE,
    R_DEVIATION_HIGH,
    R_DEVIATION_LOW,
    Verdict,
    score_one,
    severity_of_score,
)

__all__ = ("detect_deviation",)


@njit
def detect_deviation(f: Features, p: np.ndarray) -> Verdict:
    z = (f.robust - f.expected) / f.scale
    if not (f.warm and np.isfinite(z)):
        z = 0.0
    ratio = abs(z) / p[DEVIATION_Z]
    fire = ratio >= 1.0
    score = score_one(ratio)
    sev = severity_of_score(score) if fire else -1
    reason = R_DEVIATION_LOW if z < 0 else R_DEVIATION_HIGH
    return Verdict(fire, sev, score, f.robust, f.expected, reason, F_VALUE)
