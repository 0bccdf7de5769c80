"""Trend: a slow, persistent departure from the sensor's own baseline (leaks, drift).

A two-sided CUSUM of the deviation detector's robust z-score — the window's robust value
against the sensor's slow baseline (per hour of the day where used), in its scale::

    z    = (robust - expected) / scale
    pos  = clip(pos + z - trend_k, 0, 1.5 trend_h)      neg = clip(neg - z - trend_k, 0, ...)
    fire = max(pos, neg) >= trend_h

Where ``change`` compares a window with a fast baseline (~3 windows) and so never sees a slow
ramp, and ``deviation`` waits for one window ``deviation_z`` scales out (which a ramp the
baseline keeps learning reaches late), this sums small excesses window after window: a ramp
of ``s`` scales per window fires after about ``sqrt(2 trend_h / s)`` windows instead of
``deviation_z / s``. State: ``tr_pos``, ``tr_neg``. Capped at 1.5 ``trend_h`` so the episode
ends a few windows after the sensor is back at its baseline.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.change import cusum_step
from cityagent.detectors.features import Features
from cityagent.detectors.params import TIME_OF_DAY, TREND_H, TREND_K
from cityagent.detectors.verdict import (
    F_VALUE,
    R_TREND_DOWN,
    R_TREND_UP,
    Verdict,
)

__all__ = ("detect_trend",)


@njit
def detect_trend(tr_pos: np.ndarray, tr_neg: np.ndarray, row: int, f: Features,
                 p: np.ndarray) -> Verdict:
    """Advance the sensor's trend CUSUM by its window and judge it (writes the sums)."""
    z = (f.robust - f.expected) / f.scale
    # Only on robust window values (three readings or more: a single reading's transients
    # add up), and for kinds that follow the clock only against the hour's own baseline: the
    # recent baseline lags the daily pattern, and the lag would add up as a trend.
    daily = p[TIME_OF_DAY] > 0
    if not (f.warm and f.n >= 3 and (f.use_tod or not daily) and np.isfinite(z)):
        z = 0.0
    fire, sev, score, falling = cusum_step(tr_pos, tr_neg, row, z, p[TREND_K], p[TREND_H])
    reason = R_TREND_DOWN if falling else R_TREND_UP
    return Verdict(fire, sev, score, f.robust, f.expected, reason, F_VALUE)
