"""Flatline: a stuck sensor repeats exactly the same value for a whole window.

Only for sensors that normally vary: a sensor whose windows are flat more often than
``flat_max_fraction`` (a quantised or dry sensor) never flatlines, and the detector waits
``flat_warmup`` windows to learn that. Severity blue: a maintenance matter.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.features import Features
from cityagent.detectors.verdict import Verdict

__all__ = ("detect_flatline", "is_flat")


def is_flat(f: Features) -> np.ndarray:
    w = f.w
    span = w.vmax - w.vmin
    return (w.n >= f.p["flat_min_readings"]) & (span <= 1e-12 * np.maximum(1.0, np.abs(w.vmax)))


def detect_flatline(state, f: Features) -> Verdict:
    c = state.cols
    rows = f.w.rows
    flat = is_flat(f)
    usual = c["flat_frac"][rows] <= f.p["flat_max_fraction"]
    fire = flat & usual & (c["flat_n"][rows] >= f.p["flat_warmup"])
    score = np.where(fire, 0.9, np.where(flat, 0.3, 0.0))
    sev = np.where(fire, 0, -1).astype(np.int8)
    code = np.where(fire, "fault.flatline", "")
    return Verdict(fire, sev, score, f.w.vmax, f.w.vmax, code, "value")
