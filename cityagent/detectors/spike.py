"""Spike: one reading far outside the baseline while the rest of its window is normal.

A sensor fault (a glitch, an electrical spike), not an event: the body of the window (its
robust value) stays within the deviation threshold. Needs three readings in the window to
tell a spike from a level change. Severity blue: a maintenance matter.

The extreme is measured in the baseline's scale *for one reading* (``reading_scale``), not
in the scale of window values: a window's value averages its readings, so with many readings
a window (one a second, 60 a window) it varies ~7.6 times less than a reading does, and the
largest of 60 ordinary readings reached 15 window scales in most windows of pure noise. The
body, an average, is judged in the window scale as the deviation detector judges it.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.features import Features
from cityagent.detectors.params import DEVIATION_Z, SPIKE_Z
from cityagent.detectors.verdict import (
    F_VALUE,
    R_NONE,
    R_SPIKE_DOWN,
    R_SPIKE_UP,
    Verdict,
    score_one,
)

__all__ = ("detect_spike",)


@njit
def _ratio(f: Features, p: np.ndarray, extreme: float, body: float) -> float:
    """The extreme's ratio to ``spike_z``; 0 when the window cannot hold a spike (cold
    baseline, under three readings, or its body is itself a deviation)."""
    ok = f.warm and f.n >= 3 and np.isfinite(extreme) and body < p[DEVIATION_Z]
    return extreme / p[SPIKE_Z] if ok else 0.0


@njit
def detect_spike(f: Features, p: np.ndarray, open_reason: int) -> Verdict:
    """Judge the window's extreme; ``open_reason`` is the sensor's open spike episode's
    (R_NONE when none): a window that does not fire reports that episode's side, so an end
    of an upward spike says how high the window went, not how low."""
    up = (f.vmax - f.expected) / f.reading_scale
    down = (f.expected - f.vmin) / f.reading_scale
    body = abs(f.robust - f.expected) / f.scale
    upward = up >= down
    ratio = _ratio(f, p, up if upward else down, body)
    fire = ratio >= 1.0
    if not fire and open_reason != R_NONE:
        upward = open_reason == R_SPIKE_UP
        ratio = _ratio(f, p, up if upward else down, body)
    return Verdict(fire, 0 if fire else -1, score_one(ratio), f.vmax if upward else f.vmin,
                   f.expected, R_SPIKE_UP if upward else R_SPIKE_DOWN, F_VALUE)
