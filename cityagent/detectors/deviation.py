"""Deviation from the sensor's own baseline: a robust z-score of the window's robust value.

The baseline is a robust running location and absolute deviation (Huber-style: each window
moves them by at most three scales), per hour of the day for traffic and pressure once that
hour has history, else the recent one. Fires at ``|z| >= deviation_z`` once the baseline is
warm; the scale never falls below the kind's floors or the sensor's quantum, so a constant
or quantised series does not alarm on its smallest step.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.features import Features
from cityagent.detectors.verdict import Verdict, score_of, severity_of_score

__all__ = ("detect_deviation",)


def detect_deviation(f: Features) -> Verdict:
    with np.errstate(invalid="ignore"):
        z = (f.robust - f.expected) / f.scale
    z = np.where(f.warm & np.isfinite(z), z, 0.0)
    ratio = np.abs(z) / f.p["deviation_z"]
    fire = ratio >= 1.0
    score = score_of(ratio)
    sev = np.where(fire, severity_of_score(score), -1).astype(np.int8)
    code = np.where(z < 0, "deviation.low", "deviation.high")
    return Verdict(fire, sev, score, f.robust, f.expected, code, "value")
