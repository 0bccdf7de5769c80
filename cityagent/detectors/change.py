"""Sudden change: a two-sided CUSUM on the window's robust value against a fast baseline.

Bursts and flash floods move a sensor by many scales within a window or two; the CUSUM
accumulates standardised excess over a slack ``k`` and fires at ``h``. Sums are capped at
1.5 h so that the episode ends a few windows after the sensor settles. The reference is a
fast baseline (``cusum_rate``, about three windows), so slow wandering — tides, drift — is
not a change; slow anomalies are the deviation detector's.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import clip, njit
from cityagent.detectors.features import Features
from cityagent.detectors.params import CUSUM_H, CUSUM_K
from cityagent.detectors.verdict import (
    F_VALUE,
    R_CHANGE_DROP,
    R_CHANGE_RISE,
    Verdict,
    score_one,
    severity_of_score,
)

__all__ = ("detect_change",)


@njit
def detect_change(cus_pos: np.ndarray, cus_neg: np.ndarray, row: int, f: Features,
                  p: np.ndarray) -> Verdict:
    """Advance the sensor's CUSUM by its window and judge it (writes the sums to state)."""
    k, h = p[CUSUM_K], p[CUSUM_H]
    u = (f.robust - f.fast_m) / f.fast_scale
    if not (f.warm and np.isfinite(u)):
        u = 0.0
    pos = clip(cus_pos[row] + u - k, 0.0, 1.5 * h)
    neg = clip(cus_neg[row] - u - k, 0.0, 1.5 * h)
    cus_pos[row], cus_neg[row] = pos, neg
    ratio = max(pos, neg) / h
    fire = ratio >= 1.0
    score = score_one(ratio)
    sev = severity_of_score(score) if fire else -1
    reason = R_CHANGE_DROP if neg > pos else R_CHANGE_RISE
    return Verdict(fire, sev, score, f.robust, f.fast_m, reason, F_VALUE)
