"""Sudden change: a two-sided CUSUM on the window's robust value against a fast baseline.

Bursts and flash floods move a sensor by many scales within a window or two; the CUSUM
accumulates standardised excess over a slack ``k`` and fires at ``h``. Sums are capped at
1.5 h so that the episode ends a few windows after the sensor settles. The reference is a
fast baseline (``cusum_rate``, about three windows), so slow wandering — tides, drift — is
not a change; slow anomalies are the deviation detector's.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.features import Features
from cityagent.detectors.verdict import Verdict, score_of, severity_of_score
from cityagent.state import BucketState

__all__ = ("detect_change",)


def detect_change(state: BucketState, f: Features) -> Verdict:
    """Advance each sensor's CUSUM by its window and judge it (writes the sums to state)."""
    rows = f.w.rows
    k, h = f.p["cusum_k"], f.p["cusum_h"]
    with np.errstate(invalid="ignore"):
        u = (f.robust - f.fast_m) / f.fast_scale
    u = np.where(f.warm & np.isfinite(u), u, 0.0)
    c = state.cols
    pos = np.clip(c["cus_pos"][rows] + u - k, 0.0, 1.5 * h)
    neg = np.clip(c["cus_neg"][rows] - u - k, 0.0, 1.5 * h)
    c["cus_pos"][rows], c["cus_neg"][rows] = pos, neg
    top = np.maximum(pos, neg)
    ratio = top / h
    fire = ratio >= 1.0
    score = score_of(ratio)
    sev = np.where(fire, severity_of_score(score), -1).astype(np.int8)
    code = np.where(neg > pos, "change.drop", "change.rise")
    return Verdict(fire, sev, score, f.robust, f.fast_m, code, "value")
