"""Flatline: a stuck sensor repeats exactly the same value for a whole window.

Only for sensors that normally vary: a sensor whose windows are flat more often than
``flat_max_fraction`` (a quantised or dry sensor) never flatlines, and the detector waits
``flat_warmup`` windows to learn that. Severity blue: a maintenance matter.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.features import Features
from cityagent.detectors.params import FLAT_MAX_FRACTION, FLAT_MIN_READINGS, FLAT_WARMUP
from cityagent.detectors.verdict import F_VALUE, R_FLATLINE, R_NONE, Verdict

__all__ = ("detect_flatline", "is_flat")


@njit
def is_flat(f: Features, p: np.ndarray) -> bool:
    return f.n >= p[FLAT_MIN_READINGS] and f.vmax - f.vmin <= 1e-12 * max(1.0, abs(f.vmax))


@njit
def detect_flatline(flat_frac: np.ndarray, flat_n: np.ndarray, row: int, f: Features,
                    p: np.ndarray) -> Verdict:
    flat = is_flat(f, p)
    usual = flat_frac[row] <= p[FLAT_MAX_FRACTION]
    fire = flat and usual and flat_n[row] >= p[FLAT_WARMUP]
    score = 0.9 if fire else (0.3 if flat else 0.0)
    return Verdict(fire, 0 if fire else -1, score, f.vmax, f.vmax,
                   R_FLATLINE if fire else R_NONE, F_VALUE)
