"""Spike: one reading far outside the baseline while the rest of its window is normal.

A sensor fault (a glitch, an electrical spike), not an event: the body of the window (its
robust value) stays within the deviation threshold. Severity blue: a maintenance matter.

A window of two readings has no robust value, but its other reading is its body: one
reading out, the other normal (judged as one reading, in ``reading_scale``) is a spike too.
Before 2026-11-25 such a window could hold no spike, and only the deviation detector found
a traffic speed of 2 km/h there, as a deviation of the window's mean; a window of one or two
readings now needs confirmation to raise a deviation (``detectors.deviation``), and
``cityagent eval --tick 30`` missed one spike in 15. A window of one reading cannot tell a
spike from a level change by itself: it is held (``detectors.deviation``), and when the next
window does not confirm it, the held reading is judged as a spike then, against the same
``spike_z`` reading scales (a pump transient of 0.04 MPa, 10 scales, is neither).

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
def _ratio(f: Features, p: np.ndarray, extreme: float, upward: bool) -> float:
    """The extreme's ratio to ``spike_z``; 0 when the window cannot hold a spike (cold
    baseline, a single reading, or its body is itself a deviation). The body is the robust
    value from three readings on, and in a window of two the other reading."""
    if f.n >= 3:
        body = abs(f.robust - f.expected) / f.scale
    elif f.n == 2:
        body = abs((f.vmin if upward else f.vmax) - f.expected) / f.reading_scale
    else:
        return 0.0
    ok = f.warm and np.isfinite(extreme) and body < p[DEVIATION_Z]
    return extreme / p[SPIKE_Z] if ok else 0.0


@njit
def _held_spike(f: Features, p: np.ndarray, held: float) -> Verdict:
    """The previous window's held value (one or two readings, not confirmed) as a spike."""
    ratio = 0.0
    if f.warm and np.isfinite(held):
        ratio = abs(held - f.expected) / f.reading_scale / p[SPIKE_Z]
    fire = ratio >= 1.0
    return Verdict(fire, 0 if fire else -1, score_one(ratio), held, f.expected,
                   R_SPIKE_UP if held > f.expected else R_SPIKE_DOWN, F_VALUE)


@njit
def detect_spike(f: Features, p: np.ndarray, open_reason: int, held: float,
                 confirmed: bool) -> Verdict:
    """Judge the window's extreme; ``open_reason`` is the sensor's open spike episode's
    (R_NONE when none): a window that does not fire reports that episode's side, so an end
    of an upward spike says how high the window went, not how low. ``held``: the previous
    window's value if it was held (NaN: it was not); ``confirmed``: this window confirmed it."""
    if np.isfinite(held) and not confirmed:
        previous = _held_spike(f, p, held)
        if previous.fire:
            return previous
    up = (f.vmax - f.expected) / f.reading_scale
    down = (f.expected - f.vmin) / f.reading_scale
    upward = up >= down
    ratio = _ratio(f, p, up if upward else down, upward)
    fire = ratio >= 1.0
    if not fire and open_reason != R_NONE:
        upward = open_reason == R_SPIKE_UP
        ratio = _ratio(f, p, up if upward else down, upward)
    return Verdict(fire, 0 if fire else -1, score_one(ratio), f.vmax if upward else f.vmin,
                   f.expected, R_SPIKE_UP if upward else R_SPIKE_DOWN, F_VALUE)
