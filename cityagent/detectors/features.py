"""What every detector needs about a closed window: robust values, baseline, scale.

A window's *robust value* drops its highest and lowest reading when it has three or more, so
one bad reading (a spike) moves neither the baselines nor the level detectors. The baseline
a deviation is judged against is the sensor's own: per hour of the day when that hour has
enough history (traffic and pressure follow the clock), else the recent one. The *scale* is
the baseline's absolute deviation, never below the kind's floors or the sensor's quantum
(its smallest step), so a constant or quantised series never divides by zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.state import TOD_SLOTS, BucketState
from cityagent.windows import ClosedWindows

__all__ = ("Features", "features_of", "tod_slot", "scale_of", "MAD_TO_SD")

_HOUR_MS = 3_600_000
_CST_MS = 8 * _HOUR_MS
#: A mean absolute deviation times this estimates a standard deviation (normal data).
MAD_TO_SD = 1.2533
_TOD_WARM_FACTOR = 3  # an hour's baseline is used after 3x the warm-up windows
#: A scale learned from few windows is too often too small (five draws can sit close
#: together): the deviation scale is widened by ``1 + SMALL_SAMPLE / windows seen`` (x1.8
#: after 5 windows, x1.2 after 20, x1.04 after 100), so a young baseline does not alarm on
#: ordinary noise.
SMALL_SAMPLE = 4.0


def tod_slot(ts_ms: np.ndarray) -> np.ndarray:
    """Hour of the day, China Standard Time."""
    return ((ts_ms + _CST_MS) // _HOUR_MS) % TOD_SLOTS


def scale_of(d: np.ndarray, expected: np.ndarray, p: dict[str, np.ndarray],
             quantum: np.ndarray) -> np.ndarray:
    floor = np.maximum(p["scale_floor"], p["relative_floor"] * np.abs(np.nan_to_num(expected)))
    q = np.where(np.isfinite(quantum), quantum, 0.0)
    return np.maximum.reduce([MAD_TO_SD * d, floor, q,
                              1e-9 * np.maximum(1.0, np.abs(np.nan_to_num(expected)))])


@dataclass(frozen=True)
class Features:
    w: ClosedWindows
    p: dict[str, np.ndarray]  # parameters of each row's sensor
    kind: np.ndarray  # kind code per row
    start_ms: np.ndarray
    end_ms: np.ndarray
    mean: np.ndarray
    robust: np.ndarray  # mean without the lowest and highest reading (n >= 3)
    high: np.ndarray  # mean without the highest reading (n >= 3): upward limits
    low: np.ndarray  # mean without the lowest reading (n >= 3): downward limits
    slot: np.ndarray  # hour-of-day slot of the window
    use_tod: np.ndarray  # bool: judged against the hour's baseline
    warm: np.ndarray  # bool: the baseline has enough history
    expected: np.ndarray  # the baseline value
    scale: np.ndarray
    rec_scale: np.ndarray  # scale of the recent baseline
    fast_m: np.ndarray  # the fast baseline (CUSUM's reference)
    fast_scale: np.ndarray


def features_of(state: BucketState, w: ClosedWindows, params: dict[str, np.ndarray],
                size_ms: int) -> Features:
    c = state.cols
    rows = w.rows
    p = {name: values[rows] for name, values in params.items()}
    n = w.n
    mean = w.total / n
    big = n >= 3
    with np.errstate(invalid="ignore", divide="ignore"):
        robust = np.where(big, (w.total - w.vmin - w.vmax) / (n - 2), mean)
        high = np.where(big, (w.total - w.vmax) / (n - 1), mean)
        low = np.where(big, (w.total - w.vmin) / (n - 1), mean)
    start = w.k * size_ms
    slot = tod_slot(start)
    tod_n = c["tod_n"][rows, slot].astype(np.float64)
    use_tod = (p["time_of_day"] > 0) & (tod_n >= _TOD_WARM_FACTOR * p["deviation_warmup"])
    rec_m, rec_d = c["rec_m"][rows], c["rec_d"][rows]
    expected = np.where(use_tod, c["tod_m"][rows, slot], rec_m)
    d = np.where(use_tod, c["tod_d"][rows, slot], rec_d)
    quantum = c["quantum"][rows]
    seen = np.where(use_tod, tod_n, c["rec_n"][rows])
    young = 1.0 + SMALL_SAMPLE / np.maximum(seen, 1.0)
    return Features(
        w=w, p=p, kind=c["kind"][rows], start_ms=start, end_ms=start + size_ms, mean=mean,
        robust=robust, high=high, low=low, slot=slot, use_tod=use_tod,
        warm=c["rec_n"][rows] >= p["deviation_warmup"], expected=expected,
        scale=scale_of(d, expected, p, quantum) * young, rec_scale=scale_of(rec_d, rec_m, p, quantum),
        fast_m=c["fast_m"][rows], fast_scale=scale_of(c["fast_d"][rows], c["fast_m"][rows], p,
                                                      quantum),
    )
