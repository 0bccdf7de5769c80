"""What every detector needs about a closed window: robust values, baseline, scale.

A window's *robust value* drops its highest and lowest reading when it has three or more, so
one bad reading (a spike) moves neither the baselines nor the level detectors. The baseline
a deviation is judged against is the sensor's own: per hour of the day when that hour has
enough history (traffic and pressure follow the clock), else the recent one. The *scale* is
the baseline's absolute deviation, never below the kind's floors or the sensor's quantum
(its smallest step), so a constant or quantised series never divides by zero.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from cityagent.detectors._jit import fmax, nan_to_num, njit
from cityagent.detectors.params import (
    DEVIATION_WARMUP,
    RELATIVE_FLOOR,
    SCALE_FLOOR,
    TIME_OF_DAY,
)
from cityagent.state import TOD_SLOTS

__all__ = ("Baselines", "Features", "window_features", "tod_slot", "tod_slot_one", "scale_of", "scale_one",
           "MAD_TO_SD")

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

#: The state columns the baselines are kept in (a few arrays, not the whole state: passing
#: every column to each compiled helper costs more in reference counting than the work),
#: and the learned report interval (how many readings a window's value averages).
Baselines = namedtuple("Baselines",
                       "rec_m rec_d rec_n fast_m fast_d tod_m tod_d tod_n quantum gap_ms")

#: One closed window of one sensor, as the detectors see it.
Features = namedtuple("Features", (
    "n vmin vmax"  # readings, lowest and highest
    " start_ms end_ms slot"  # the window, and its hour-of-day slot
    " mean robust high low"  # mean; without the extremes; without the highest / lowest (n >= 3)
    " use_tod warm"  # judged against the hour's baseline; the baseline has enough history
    " expected scale rec_scale fast_m fast_scale"  # baseline, its scale; recent; fast (CUSUM)
    " reading_scale"  # the baseline's scale for one reading rather than a window's value
))


def tod_slot(ts_ms: np.ndarray) -> np.ndarray:
    """Hour of the day, China Standard Time."""
    return ((ts_ms + _CST_MS) // _HOUR_MS) % TOD_SLOTS


@njit
def tod_slot_one(ts_ms: int) -> int:
    return ((ts_ms + _CST_MS) // _HOUR_MS) % TOD_SLOTS


def scale_of(d: np.ndarray, expected: np.ndarray, p: dict[str, np.ndarray],
             quantum: np.ndarray) -> np.ndarray:
    """``scale_one`` over arrays (the per-reading scores of the replay tool)."""
    floor = np.maximum(p["scale_floor"], p["relative_floor"] * np.abs(np.nan_to_num(expected)))
    q = np.where(np.isfinite(quantum), quantum, 0.0)
    return np.maximum.reduce([MAD_TO_SD * d, floor, q,
                              1e-9 * np.maximum(1.0, np.abs(np.nan_to_num(expected)))])


@njit
def scale_one(d: float, expected: float, p: np.ndarray, quantum: float) -> float:
    """A baseline's scale: its absolute deviation as a standard deviation, floored."""
    size = abs(nan_to_num(expected))
    floor = fmax(p[SCALE_FLOOR], p[RELATIVE_FLOOR] * size)
    q = quantum if np.isfinite(quantum) else 0.0
    return fmax(fmax(fmax(MAD_TO_SD * d, floor), q), 1e-9 * fmax(1.0, size))


@njit
def readings_per_window(gap_ms: float, size_ms: int, n: float) -> float:
    """How many readings the sensor's window values average: the window size over its
    learned report interval, else (no interval learned yet) this window's count."""
    if np.isfinite(gap_ms) and gap_ms > 0:
        return size_ms / gap_ms
    return n


@njit
def window_features(c: Baselines, p: np.ndarray, row: int, k: int, n: float, total: float,
                    vmin: float, vmax: float, size_ms: int) -> Features:
    """The features of window ``k`` of state row ``row``."""
    mean = total / n
    if n >= 3:
        robust = (total - vmin - vmax) / (n - 2)
        high = (total - vmax) / (n - 1)
        low = (total - vmin) / (n - 1)
    else:
        robust = high = low = mean
    start = k * size_ms
    slot = tod_slot_one(start)
    tod_n = np.float64(c.tod_n[row, slot])
    use_tod = p[TIME_OF_DAY] > 0 and tod_n >= _TOD_WARM_FACTOR * p[DEVIATION_WARMUP]
    rec_m, rec_d, quantum = c.rec_m[row], c.rec_d[row], c.quantum[row]
    if use_tod:
        expected, d, seen = np.float64(c.tod_m[row, slot]), np.float64(c.tod_d[row, slot]), tod_n
    else:
        expected, d, seen = rec_m, rec_d, c.rec_n[row]
    young = 1.0 + SMALL_SAMPLE / max(seen, 1.0)
    fast_m = c.fast_m[row]
    # The baseline learns from window values, each the mean of the window's readings but
    # its highest and lowest: with m readings a window, single readings spread about
    # sqrt(m - 2) times as far as those values (independent noise). The floors and the
    # quantum already bound single readings, so only the learned part is widened.
    per_window = readings_per_window(c.gap_ms[row], size_ms, n)
    widen = np.sqrt(max(per_window - 2.0, 1.0))
    return Features(
        n, vmin, vmax, start, start + size_ms, slot, mean, robust, high, low, use_tod,
        c.rec_n[row] >= p[DEVIATION_WARMUP], expected, scale_one(d, expected, p, quantum) * young,
        scale_one(rec_d, rec_m, p, quantum), fast_m, scale_one(c.fast_d[row], fast_m, p, quantum),
        scale_one(d * widen, expected, p, quantum) * young,
    )
