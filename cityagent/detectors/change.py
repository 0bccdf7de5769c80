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

__all__ = ("detect_change", "cusum_step")


@njit
def cusum_step(sum_pos: np.ndarray, sum_neg: np.ndarray, row: int, u: float, k: float,
               h: float):
    """Advance a two-sided CUSUM of row ``row`` by the standardised excess ``u`` (slack
    ``k``, threshold ``h``, sums capped at 1.5 h; writes the sums). Returns (fire, severity,
    score, falling) — the detectors built on it (change, trend) differ only in their ``u``."""
    pos = clip(sum_pos[row] + u - k, 0.0, 1.5 * h)
    neg = clip(sum_neg[row] - u - k, 0.0, 1.5 * h)
    sum_pos[row], sum_neg[row] = pos, neg
    return judge_sums(pos, neg, h)


@njit
def judge_sums(pos: float, neg: float, h: float):
    """(fire, severity, score, falling) of CUSUM sums ``pos``, ``neg`` against ``h``."""
    ratio = max(pos, neg) / h if h > 0 else 0.0
    fire = ratio >= 1.0
    score = score_one(ratio)
    return fire, severity_of_score(score) if fire else -1, score, neg > pos


@njit
def detect_change(cus_pos: np.ndarray, cus_neg: np.ndarray, row: int, f: Features,
                  p: np.ndarray, held: bool) -> Verdict:
    """Advance the sensor's CUSUM by its window and judge it (writes the sums to state).
    A held window (one or two readings that jumped alone, ``detectors.deviation``) does not
    advance it: one reading far out was a whole window's excess, and at a reading a minute a
    gauge's glitch was a `change.rise`; if the next window confirms the jump, it counts."""
    u = (f.robust - f.fast_m) / f.fast_scale
    if not (f.warm and np.isfinite(u)):
        u = 0.0
    if held:
        fire, sev, score, falling = judge_sums(cus_pos[row], cus_neg[row], p[CUSUM_H])
    else:
        fire, sev, score, falling = cusum_step(cus_pos, cus_neg, row, u, p[CUSUM_K],
                                               p[CUSUM_H])
    reason = R_CHANGE_DROP if falling else R_CHANGE_RISE
    return Verdict(fire, sev, score, f.robust, f.fast_m, reason, F_VALUE)
