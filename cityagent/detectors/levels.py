"""Levels the domain uses: 蓝/黄/橙/红 water levels, the pressure floor, traffic congestion.

* Water level (per gauge 警戒 *warning* and 保证 *guaranteed* levels from the registry):
  blue when approaching 警戒 (from ``warning - blue_fraction x (guaranteed - warning)``),
  yellow at 警戒, orange at 保证, red at the record high. Judged on the window's mean
  without its highest reading, so one spike is not a flood.
* Pipe pressure: orange below the network's 0.14 MPa service floor, red below the critical
  level, yellow above the high limit (mean without the lowest / highest reading).
* Traffic: the 0-10 traffic performance index (TPI) from the hopping-window mean speed
  against the road's free-flow speed, ``(1 - speed / free_flow) / 0.7 x 10``; yellow,
  orange and red from the ``congestion_tpi`` thresholds.

Scores climb a ladder: 0.5 at the first threshold, 0.7, 0.85, 0.95 at the next ones; a rung's
score climbs towards the next rung's over the gap to the next threshold, the top rung's
towards 1.0 over the gap below it. So a score is in [0, 1] and never lower at a higher
severity (red ≥ orange ≥ yellow ≥ blue), which is how alerts of a scope are ordered.
Pressure above the high limit is a rung of its own (yellow) with no threshold above it: its
score climbs from 0.7 at the limit towards orange's 0.85 over one step of the pressure
ladder (floor − critical, 0.07 MPa by default) and stays there, below any red.
"""

from __future__ import annotations

import math

import numpy as np

from cityagent.detectors._jit import clip, fmax, fmin, nan_to_num, njit
from cityagent.detectors.config import KIND_CODES
from cityagent.detectors.features import Features
from cityagent.detectors.params import (
    BLUE_FRACTION,
    CRITICAL_MPA,
    FLOOR_MPA,
    FREE_FLOW_KMH,
    GUARANTEED_M,
    HIGH_MPA,
    RECORD_M,
    TPI_ORANGE,
    TPI_RED,
    TPI_YELLOW,
    WARNING_M,
)
from cityagent.detectors.verdict import (
    F_LEVEL_M,
    F_NONE,
    F_PRESSURE_MPA,
    F_TRAFFIC_INDEX,
    R_NONE,
    R_PRESSURE_CRITICAL,
    R_PRESSURE_HIGH,
    R_PRESSURE_LOW,
    R_TRAFFIC_CONGESTION,
    R_WATER_APPROACHING,
    Verdict,
    score_one,
)

__all__ = ("detect_levels", "reading_level_score", "traffic_index", "traffic_index_one", "LADDER")

#: Score at each rung of a ladder of thresholds.
LADDER = (0.5, 0.7, 0.85, 0.95)
_TRAFFIC_LADDER = LADDER[1:]  # congestion starts at yellow
_TRAFFIC, _WATER, _PRESSURE = KIND_CODES["traffic"], KIND_CODES["water_level"], KIND_CODES["pipe_pressure"]


def traffic_index(speed_kmh: np.ndarray, free_flow_kmh: np.ndarray) -> np.ndarray:
    """The 0-10 traffic performance index from the speed's shortfall against free flow."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.clip(speed_kmh / free_flow_kmh, 0.0, 1.0)
    return np.clip((1.0 - ratio) / 0.7 * 10.0, 0.0, 10.0)


@njit
def traffic_index_one(speed_kmh: float, free_flow_kmh: float) -> float:
    ratio = clip(speed_kmh / free_flow_kmh, 0.0, 1.0)
    return clip((1.0 - ratio) / 0.7 * 10.0, 0.0, 10.0)


@njit
def _ladder(value: float, steps, severities, scores):
    """(severity, score, passed threshold) of ``value`` against rising ``steps``."""
    sev = -1
    passed = math.nan
    score = clip(0.5 * value / steps[0], 0.0, 0.499)
    if not np.isfinite(score):
        score = 0.0
    last = len(steps) - 1
    for i in range(len(steps)):
        step = steps[i]
        if value >= step:
            sev = severities[i]
            passed = step
            prev = steps[i - 1] if i >= 1 else steps[last]
            nxt = steps[i + 1] if i < last else step + fmax(step - prev, 1e-9)
            top = scores[i + 1] if i + 1 < len(scores) else 1.0
            score = scores[i] + (top - scores[i]) * clip((value - step) / (nxt - step), 0.0, 1.0)
    return sev, fmin(score, 1.0), passed


@njit
def _above_high(value: float, high: float, step: float):
    """(severity, score) of pressure ``value`` against the high limit: yellow above it, the
    score from 0.7 at the limit to 0.85 (orange's first) ``step`` above it, then flat.

    A one-rung ladder has no gap to climb over: before 2026-11-24 the score jumped to 1.0 just
    above the limit, so a yellow high pressure outranked a red (critical) one (0.95-1.0).
    """
    if value > high:
        rise = clip((value - high) / step, 0.0, 1.0) if step > 0 else 1.0
        return 1, LADDER[1] + (LADDER[2] - LADDER[1]) * rise
    score = clip(0.5 * value / high, 0.0, 0.499)
    return -1, score if np.isfinite(score) else 0.0


@njit
def _water_ladder(value: float, p: np.ndarray):
    """(severity, score, passed threshold, blue level) of a water level ``value``."""
    warn, guar = p[WARNING_M], p[GUARANTEED_M]
    blue = warn - p[BLUE_FRACTION] * (guar - warn)
    sev, score, passed = _ladder(value, (blue, warn, guar, p[RECORD_M]), (0, 1, 2, 3), LADDER)
    return sev, score, passed, blue


@njit
def _below_floor(value: float, p: np.ndarray):
    """(severity, score) of pressure ``value`` against the floor: orange below it, red below
    the critical level.

    A ladder on the pressure's depth below the floor. The limits are strict (below the floor,
    above the high limit: a pressure of exactly 0.14 MPa meets the service floor), and the
    ladder's rungs are reached at them, so each rung is the nearest number past its limit.
    """
    floor, crit = p[FLOOR_MPA], p[CRITICAL_MPA]
    sev, score, _ = _ladder(-value, (-np.nextafter(floor, -np.inf), -np.nextafter(crit, -np.inf)),
                            (2, 3), (0.85, 0.95))
    if sev < 0:
        score = fmin(score_one(floor / value), 0.499)
    return sev, score


@njit
def reading_level_score(kind: int, x: float, p: np.ndarray) -> float:
    """The level detector's score of one reading ``x``, judged as a window of that one value
    (its low and high end alike): the per-row domain score of ``cityagent replay --scores``.

    Water climbs the gauge's ladder (blue 0.5 ... red 0.95); pressure scores the worse of its
    two sides, the floor's (orange 0.85, red 0.95) and the high limit's (yellow 0.7 to 0.85),
    so a row scores what its window would, at least 0.5 where the detector fires. Traffic is
    judged on the hopping window's mean speed, not on a reading: 0, as for generic series.
    """
    if kind == _WATER:
        return nan_to_num(_water_ladder(x, p)[1])
    if kind == _PRESSURE:
        low = _below_floor(x, p)[1]
        high = _above_high(x, p[HIGH_MPA], p[FLOOR_MPA] - p[CRITICAL_MPA])[1]
        return nan_to_num(fmax(low, high))
    return 0.0


@njit
def detect_levels(f: Features, p: np.ndarray, kind: int, hop_mean: float,
                  open_reason: int) -> Verdict:
    """Domain levels of one window; ``hop_mean`` is its hopping-window mean (traffic).

    A window that does not fire is what ends an episode, so it reports the limit the value is
    back within (the first rung: blue for water, yellow for traffic, the floor or the high
    limit for pressure) and, for pressure, the side of the open episode (``open_reason``;
    R_NONE when none). Before 2026-11-24 such a window's expected was NaN (0.0 in the end
    event) for water and traffic, and for pressure that of whichever side scored higher: a
    low-pressure episode ended with the 0.80 MPa high limit as its expected value.
    """
    if kind == _WATER:
        sev, score, passed, blue = _water_ladder(f.high, p)
        reason = R_WATER_APPROACHING + sev if sev >= 0 else R_NONE
        return Verdict(sev >= 0, sev, score, f.high, passed if sev >= 0 else blue, reason,
                       F_LEVEL_M)
    if kind == _PRESSURE:
        floor, crit, high = p[FLOOR_MPA], p[CRITICAL_MPA], p[HIGH_MPA]
        lo = f.low
        s_lo, sc_lo = _below_floor(lo, p)
        s_hi, sc_hi = _above_high(f.high, high, floor - crit)
        high_side = sc_hi > sc_lo
        if s_lo < 0 and s_hi < 0 and open_reason != R_NONE:  # the open episode's side
            high_side = open_reason == R_PRESSURE_HIGH
        if high_side:
            return Verdict(s_hi >= 0, s_hi, sc_hi, f.high, high, R_PRESSURE_HIGH, F_PRESSURE_MPA)
        reason = R_PRESSURE_CRITICAL if s_lo == 3 else R_PRESSURE_LOW
        return Verdict(s_lo >= 0, s_lo, sc_lo, lo, crit if lo < crit else floor, reason,
                       F_PRESSURE_MPA)
    if kind == _TRAFFIC:
        tpi = traffic_index_one(hop_mean, p[FREE_FLOW_KMH])
        if np.isfinite(tpi):
            sev, score, passed = _ladder(tpi, (p[TPI_YELLOW], p[TPI_ORANGE], p[TPI_RED]),
                                         (1, 2, 3), _TRAFFIC_LADDER)
            reason = R_TRAFFIC_CONGESTION if sev >= 0 else R_NONE
            return Verdict(sev >= 0, sev, score, tpi, passed if sev >= 0 else p[TPI_YELLOW],
                           reason, F_TRAFFIC_INDEX)
    return Verdict(False, -1, 0.0, math.nan, math.nan, R_NONE, F_NONE)
