"""Deviation from the sensor's own baseline: a robust z-score of the window's robust value.

The baseline is a robust running location and absolute deviation (Huber-style: each window
moves them by at most three scales), per hour of the day for traffic and pressure once that
hour has history, else the recent one. Fires at ``|z| >= deviation_z`` once the baseline is
warm; the scale never falls below the kind's floors or the sensor's quantum, so a constant
or quantised series does not alarm on its smallest step.

A window of fewer than ``CONFIRM_BELOW`` readings has no robust value (nothing to drop: it
is its readings' mean), so one transient reading *is* the window. Such a window is *held*:
it fires only when confirmed, by the sensor's previous window having been held on the same
side or by a deviation episode on that side already open. A held window's value is kept
(``dev_pend``) for the next window, which confirms it (a lasting change, found one window
later) or is back, when the held value may be a spike (``detectors.spike``). The domain
levels of a held window wait too (``judge``): one reading of a gauge 4 m up is a glitch
until the next reading says otherwise. Before 2026-11-25 a sensor reporting once a minute
(the kinds' default interval) raised a pipe-pressure deviation for every pump or valve
transient of 0.024 MPa or more (six scales of the 0.004 MPa floor): 0.20 false alarms per
sensor-day in ``cityagent eval --tick 60``. A window of three or more readings is judged
alone, as before. ``deviation_confirm`` (per kind, detection.toml) is on for the city kinds
and off for the generic profile of ``cityagent replay``: a series of unknown kind has no
known transients, and a benchmark's point anomaly in a series of a reading a window is one
reading.
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
def detect_deviation(f: Features, p: np.ndarray, pend: np.ndarray, row: int,
                     open_reason: int):
    """(verdict, held) on window ``f`` of ``row``. ``pend``: the state's ``dev_pend`` column
    (the row's previous window's value if it was held; updated here); ``open_reason``: the
    reason of the row's open deviation episode (``R_NONE``: none); ``held``: the window
    deviates but waits for the next one."""
    z = (f.robust - f.expected) / f.scale
    if not (f.warm and np.isfinite(z)):
        z = 0.0
    ratio = abs(z) / p[DEVIATION_Z]
    reason = R_DEVIATION_LOW if z < 0 else R_DEVIATION_HIGH
    fire = ratio >= 1.0
    held = False
    if fire and f.n < CONFIRM_BELOW and p[DEVIATION_CONFIRM] > 0:
        before = pend[row]
        same_side = np.isfinite(before) and (before < f.expected) == (z < 0)
        fire = same_side or open_reason == reason
        held = not fire
    pend[row] = f.robust if held else np.nan
    score = score_one(ratio)
    sev = severity_of_score(score) if fire else -1
    return Verdict(fire, sev, score, f.robust, f.expected, reason, F_VALUE), held
