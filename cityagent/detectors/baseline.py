"""Learning after judging: robust baselines, the quantum, how often a sensor is flat.

Location and scale are updated Huber-style: a window moves them by at most three scales, so
one wild window cannot drag a baseline, and a sensor's own anomaly is learned ten times
slower (``anomaly_rate_factor``) so a long event is not absorbed into "normal". During
warm-up the update is a running mean, so a new sensor is judged after a few windows.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.features import Features
from cityagent.detectors.flatline import is_flat
from cityagent.state import BucketState

__all__ = ("learn",)


def _huber(m: np.ndarray, d: np.ndarray, x: np.ndarray, rate: np.ndarray,
           scale: np.ndarray, warming: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fresh = np.isnan(m)
    err = np.where(fresh, 0.0, x - m)
    # No cap while warming up: the scale itself is still being learned.
    cap = np.where(warming, np.inf, 3.0 * scale)
    m_new = np.where(fresh, x, m + rate * np.clip(err, -cap, cap))
    d_new = np.where(fresh, 0.0, d + rate * (np.minimum(np.abs(err), cap) - d))
    return m_new, d_new


def learn(state: BucketState, f: Features, anomalous: np.ndarray, flatlined: np.ndarray) -> None:
    c = state.cols
    rows = f.w.rows
    p = f.p
    x = f.robust
    ok = np.isfinite(x)
    if not ok.all():
        rows, x, anomalous, flatlined = rows[ok], x[ok], anomalous[ok], flatlined[ok]
        f = _subset(f, ok)
        p = f.p
    slow = np.where(anomalous, p["anomaly_rate_factor"], 1.0)
    rate = p["baseline_rate"] * slow

    n = c["rec_n"][rows]
    r = np.where(n < p["deviation_warmup"], 1.0 / (n + 1.0), rate)
    warming = n < p["deviation_warmup"]
    c["rec_m"][rows], c["rec_d"][rows] = _huber(c["rec_m"][rows], c["rec_d"][rows], x, r,
                                                f.rec_scale, warming)
    c["rec_n"][rows] = n + 1.0
    fast = np.maximum(p["cusum_rate"], 1.0 / (n + 1.0))
    c["fast_m"][rows], c["fast_d"][rows] = _huber(c["fast_m"][rows], c["fast_d"][rows], x, fast,
                                                  f.fast_scale, warming)

    tod = p["time_of_day"] > 0
    if tod.any():
        tr, slot = rows[tod], f.slot[tod]
        tn = c["tod_n"][tr, slot].astype(np.float64)
        tr_rate = np.maximum(rate[tod], 1.0 / (tn + 1.0))
        m, d = _huber(c["tod_m"][tr, slot].astype(np.float64),
                      c["tod_d"][tr, slot].astype(np.float64), x[tod], tr_rate, f.scale[tod],
                      tn < p["deviation_warmup"][tod])
        c["tod_m"][tr, slot], c["tod_d"][tr, slot] = m, d
        c["tod_n"][tr, slot] = np.minimum(tn + 1.0, 1e6)

    counted = f.w.n >= p["flat_min_readings"]
    if counted.any():
        cr = rows[counted]
        flat = is_flat(f)[counted].astype(np.float64)
        seen = c["flat_n"][cr]
        # A plain mean while warming up, then a slow average; a window flagged as stuck
        # counts ten times less, so a long fault is not learned as normal but a quantised
        # sensor's frequent flat windows still are.
        rate = np.maximum(1.0 / (seen + 1.0), 0.02) * np.where(flatlined[counted], 0.1, 1.0)
        c["flat_frac"][cr] += rate * (flat - c["flat_frac"][cr])
        c["flat_n"][cr] = seen + 1.0


def _subset(f: Features, ok: np.ndarray) -> Features:
    from dataclasses import fields, replace

    changes = {}
    for fld in fields(f):
        value = getattr(f, fld.name)
        if fld.name == "w":
            changes["w"] = value.take(ok)
        elif fld.name == "p":
            changes["p"] = {k: v[ok] for k, v in value.items()}
        else:
            changes[fld.name] = value[ok]
    return replace(f, **changes)
