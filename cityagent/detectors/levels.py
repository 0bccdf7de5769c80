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

Scores climb a ladder: 0.5 at the first threshold, 0.7, 0.85, 0.95 at the next ones.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.config import KIND_CODES
from cityagent.detectors.features import Features
from cityagent.detectors.verdict import Verdict, score_of

__all__ = ("detect_levels", "traffic_index", "LADDER")

#: Score at each rung of a ladder of thresholds.
LADDER = (0.5, 0.7, 0.85, 0.95)
_TRAFFIC, _WATER, _PRESSURE = KIND_CODES["traffic"], KIND_CODES["water_level"], KIND_CODES["pipe_pressure"]


def traffic_index(speed_kmh: np.ndarray, free_flow_kmh: np.ndarray) -> np.ndarray:
    """The 0-10 traffic performance index from the speed's shortfall against free flow."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.clip(speed_kmh / free_flow_kmh, 0.0, 1.0)
    return np.clip((1.0 - ratio) / 0.7 * 10.0, 0.0, 10.0)


def _ladder(value: np.ndarray, steps: list[np.ndarray], severities: list[int],
            scores: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Severity, score and the passed threshold of ``value`` against rising ``steps``."""
    sev = np.full(value.shape, -1, dtype=np.int8)
    passed = np.full(value.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.clip(0.5 * value / steps[0], 0.0, 0.499)
        score = np.where(np.isfinite(score), score, 0.0)
        for i, step in enumerate(steps):
            hit = value >= step
            sev[hit] = severities[i]
            passed[hit] = step[hit]
            nxt = steps[i + 1] if i + 1 < len(steps) else step + np.maximum(step - steps[i - 1], 1e-9)
            top = scores[i + 1] if i + 1 < len(scores) else 1.0
            frac = np.clip((value - step) / (nxt - step), 0.0, 1.0)
            score = np.where(hit, scores[i] + (top - scores[i]) * frac, score)
    return sev, np.minimum(score, 1.0), passed


def detect_levels(f: Features, tpi: np.ndarray) -> Verdict:
    """Domain levels per kind; ``tpi`` is the traffic index of each row (NaN elsewhere)."""
    m = len(f.kind)
    p = f.p
    sev = np.full(m, -1, dtype=np.int8)
    score = np.zeros(m)
    observed = np.full(m, np.nan)
    expected = np.full(m, np.nan)
    code = np.full(m, "", dtype=object)
    field = np.full(m, "", dtype=object)

    w = f.kind == _WATER
    if w.any():
        warn, guar, rec = p["warning_m"][w], p["guaranteed_m"][w], p["record_m"][w]
        blue = warn - p["blue_fraction"][w] * (guar - warn)
        s, sc, passed = _ladder(f.high[w], [blue, warn, guar, rec], [0, 1, 2, 3], LADDER)
        sev[w], score[w], observed[w], expected[w] = s, sc, f.high[w], passed
        code[w] = np.array(["water.approaching", "water.warning", "water.guaranteed",
                            "water.record", ""], dtype=object)[s]
        field[w] = "level_m"

    pr = f.kind == _PRESSURE
    if pr.any():
        floor, crit, high = p["floor_mpa"][pr], p["critical_mpa"][pr], p["high_mpa"][pr]
        # Low side: a ladder on the pressure's depth below the floor.
        lo = f.low[pr]
        s_lo, sc_lo, _ = _ladder(-lo, [-floor, -crit], [2, 3], (0.85, 0.95))
        with np.errstate(invalid="ignore", divide="ignore"):
            sc_lo = np.where(s_lo >= 0, sc_lo, np.minimum(score_of(floor / lo), 0.499))
        s_hi, sc_hi, _ = _ladder(f.high[pr], [high], [1], (0.7,))
        use_hi = sc_hi > sc_lo
        sev[pr] = np.where(use_hi, s_hi, s_lo)
        score[pr] = np.where(use_hi, sc_hi, sc_lo)
        observed[pr] = np.where(use_hi, f.high[pr], lo)
        expected[pr] = np.where(use_hi, high, np.where(lo < crit, crit, floor))
        code[pr] = np.where(use_hi, "pressure.high",
                            np.where(s_lo == 3, "pressure.critical", "pressure.low"))
        field[pr] = "pressure_mpa"

    t = (f.kind == _TRAFFIC) & np.isfinite(tpi)
    if t.any():
        steps = [p["tpi_yellow"][t], p["tpi_orange"][t], p["tpi_red"][t]]
        s, sc, passed = _ladder(tpi[t], steps, [1, 2, 3], LADDER[1:])
        sev[t], score[t], observed[t], expected[t] = s, sc, tpi[t], passed
        code[t] = np.where(s >= 0, "traffic.congestion", "")
        field[t] = "traffic_index"

    fire = sev >= 0
    return Verdict(fire, sev, score, observed, expected, code.astype(str), field.astype(str))
