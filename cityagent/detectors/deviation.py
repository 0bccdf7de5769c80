"""Deviation from the sensor's own baseline: a robust z-score of the window's robust value.

The baseline is a robust running location and absolute deviation (Huber-style: each window
moves them by at most three scales), per hour of the day for traffic and pressure once that
hour has history, else the recent one. Fires at ``|z| >= deviation_z`` once the baseline is
warm; the scale never falls below the kind's floors or the sensor's quantum, so a constant
or quantised series does not alarm on its smallest step.

A window of fewer than ``CONFIRM_BELOW`` readings has no robust value (nothing to drop: it
is its readings' mean), so one transient reading *is* the window. Such a window fires only
when it is confirmed: the sensor's previous window deviated on the same side too, or a
deviation episode on that side is already open. Before 2026-11-25 a sensor reporting once a
minute (the kinds' default interval) raised a pipe-pressure deviation for every pump or
valve transient of 0.024 MPa or more (six scales of the 0.004 MPa floor): 0.20 false alarms
per sensor-day in ``cityagent eval --tick 60``. A lasting change is still found, one window
later; a window of three or more readings is judged alone, as before. ``deviation_confirm``
(per kind, detection.toml) is on for the city kinds and off for the generic profile of
``cityagent replay``: a series of unknown kind has no known transients, and a benchmark's
point anomaly in a series of a reading a window is one reading.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.features import Features
from cityagent.detectors.params import DEVIATION_CONFIRM, DEVIATION_Z
from cityagent.detectors.verdict import (
    F_VALUE,
    R_DEVIATION_HIGH,
    R_DEVIATION_LOW,
    Verdict,
    score_one,
    severity_of_score,
)

__all__ = ("detect_deviation", "CONFIRM_BELOW")

#: A window of fewer readings than this needs confirmation: the robust value drops a
#: window's highest and lowest reading only from three readings on (``features``).
CONFIRM_BELOW = 3


@njit
def detect_deviation(f: Features, p: np.ndarray, side: np.ndarray, row: int,
                     open_reason: int) -> Verdict:
    """The verdict on window ``f`` of ``row``; ``side``: the state's ``dev_side`` column (the
    side the row's previous window deviated on; updated here); ``open_reason``: the reason of
    the row's open deviation episode (``R_NONE``: none)."""
    z = (f.robust - f.expected) / f.scale
    if not (f.warm and np.isfinite(z)):
        z = 0.0
    ratio = abs(z) / p[DEVIATION_Z]
    reason = R_DEVIATION_LOW if z < 0 else R_DEVIATION_HIGH
    now = (-1 if z < 0 else 1) if ratio >= 1.0 else 0
    fire = now != 0
    if fire and f.n < CONFIRM_BELOW and p[DEVIATION_CONFIRM] > 0:
        fire = side[row] == now or open_reason == reason
    side[row] = now
    score = score_one(ratio)
    sev = severity_of_score(score) if fire else -1
    return Verdict(fire, sev, score, f.robust, f.expected, reason, F_VALUE)
