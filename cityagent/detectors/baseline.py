"""Learning after judging: robust baselines, the quantum, how often a sensor is flat.

Location and scale are updated Huber-style: a window moves them by at most three scales, so
one wild window cannot drag a baseline, and a sensor's own anomaly is learned ten times
slower (``anomaly_rate_factor``) so a long event is not absorbed into "normal". During
warm-up the update is a running mean, so a new sensor is judged after a few windows.
"""

from __future__ import annotations

import math

import numpy as np

from cityagent.detectors._jit import clip, njit
from cityagent.detectors.features import Baselines, Features
from cityagent.detectors.flatline import is_flat
from cityagent.detectors.params import (
    ANOMALY_RATE_FACTOR,
    BASELINE_RATE,
    CUSUM_RATE,
    DEVIATION_WARMUP,
    FLAT_LEARN_AFTER_S,
    TIME_OF_DAY,
)
from cityagent.state import NO_TS

__all__ = ("learn",)


@njit
def _huber(m: float, d: float, x: float, rate: float, scale: float, warming: bool):
    """(location, absolute deviation) after one more value ``x``."""
    if math.isnan(m):
        return x, 0.0
    err = x - m
    # No cap while warming up: the scale itself is still being learned.
    cap = math.inf if warming else 3.0 * scale
    return m + rate * clip(err, -cap, cap), d + rate * (min(abs(err), cap) - d)


@njit
def learn(c: Baselines, flat_frac: np.ndarray, flat_n: np.ndarray, run_hit: np.ndarray,
          row: int, k: int, f: Features, p: np.ndarray, anomalous: bool,
          stuck_since: int) -> None:
    """Learn the baselines from window ``k`` of ``row``; ``anomalous``: a detector fired on it;
    ``stuck_since``: the start of the sensor's open flatline episode (NO_TS: none)."""
    x = f.robust
    if not np.isfinite(x):
        return
    rate = p[BASELINE_RATE] * (p[ANOMALY_RATE_FACTOR] if anomalous else 1.0)
    n = c.rec_n[row]
    warming = n < p[DEVIATION_WARMUP]
    moved = abs(x - c.rec_m[row])
    if anomalous and not warming and c.rec_d[row] == 0 and moved > 0 and not np.isfinite(
            c.quantum[row]):
        # A constant sensor moved, and was judged for it (its first step is no quantum until
        # then: windows._may_be_quantum). From now on the move is its step: with a scale of
        # zero its baseline could never follow a new level, and the episode would never end.
        c.quantum[row] = moved
    r = 1.0 / (n + 1.0) if warming else rate
    c.rec_m[row], c.rec_d[row] = _huber(c.rec_m[row], c.rec_d[row], x, r, f.rec_scale, warming)
    c.rec_n[row] = n + 1.0
    fast = max(p[CUSUM_RATE], 1.0 / (n + 1.0))
    c.fast_m[row], c.fast_d[row] = _huber(c.fast_m[row], c.fast_d[row], x, fast, f.fast_scale,
                                          warming)
    if p[TIME_OF_DAY] > 0:
        slot = f.slot
        tn = np.float64(c.tod_n[row, slot])
        m, d = _huber(np.float64(c.tod_m[row, slot]), np.float64(c.tod_d[row, slot]), x,
                      max(rate, 1.0 / (tn + 1.0)), f.scale, tn < p[DEVIATION_WARMUP])
        c.tod_m[row, slot], c.tod_d[row, slot] = m, d
        c.tod_n[row, slot] = min(tn + 1.0, 1e6)
    if f.n >= 1:
        flat = 1.0 if is_flat(run_hit, row, k) else 0.0
        seen = flat_n[row]
        # How often a window holds a run of flat_min_readings identical readings (flatline).
        # A plain mean while warming up, then a slow average. A window of a stuck episode
        # teaches nothing in the episode's first flat_learn_after_s, so a sensor stuck again
        # soon after is found again, and ten times less after that, so a long fault is not
        # learned as normal but a sensor that has become constant (a dry gauge) is, slowly.
        weight = 1.0
        if stuck_since != NO_TS:
            stuck_ms = f.start_ms - stuck_since
            weight = 0.0 if stuck_ms < p[FLAT_LEARN_AFTER_S] * 1000.0 else 0.1
        step = max(1.0 / (seen + 1.0), 0.02) * weight
        flat_frac[row] += step * (flat - flat_frac[row])
        flat_n[row] = seen + 1.0
