"""Per-reading state of the replay's row scores: spread, autocorrelation, innovations, CUSUM.

The detection engine learns its baselines from *window* values. A window's robust value
varies far less than a single reading when the window holds many readings, so judging
single readings by the window scale inflates their scores; and the engine's change detector
(a CUSUM over windows, against a fast baseline) misses level shifts when a window holds one
reading. The replay's per-row score therefore keeps, next to the engine and outside it, a
little state per sensor learned from individual readings:

* **spread**: a mean absolute deviation of single readings from the engine's baseline
  ``|x - expected|``, an EWMA over readings (a plain mean for the first ``1 / SPREAD_RATE``
  readings), each deviation capped at ``SPREAD_CLIP`` scales so one wild reading cannot
  blow it up, and learned ``ANOMALY_WEIGHT`` times slower from readings that scored as
  anomalous, so a level shift does not teach the scale that the shift is noise;
* **autocorrelation and innovations**: the deviations ``d = x - expected`` of a smooth
  series (a daily cycle, a slow wave) are far from independent: the baseline lags the
  series, and ``d`` stays on one side of it for hours. A CUSUM of such deviations fills up
  whatever its slack (with a daily sine sampled every 5 minutes, three rows in four scored
  0.5 or more, every score pinned at the cap). So each sensor learns the lag-1
  autocorrelation ``rho`` of its deviations and judges the *innovation*
  ``e = d - rho · d_previous``, the part of a reading its previous one did not foretell,
  on the innovations' own spread. For independent noise ``rho`` is ~0 and ``e`` is ``d``;
  for a smooth series ``e`` is the noise, and a jump stands out of it;
* **CUSUM**: a two-sided cumulative sum of standardised innovations
  ``z = clip(e / innovation scale, ±U_CLIP)`` with slack ``CUSUM_K``, scored against
  ``CUSUM_H``, so a shift of a few scales — too small for the deviation score — shows within
  a few readings of a noisy series. For a smooth series (its autocorrelation in use) the
  CUSUM discounts the innovations' recent mean (``zbar``, an EWMA at ``DRIFT_RATE``): a drift
  slower than the whitening can remove (a wave over hundreds of readings, one a window)
  would fill the sums too. Readings scoring 0.5 or more teach it at ``ANOMALY_WEIGHT``, so a
  real shift is not discounted away while it is reported.

Everything is causal: a reading is scored with the state before the slice of event time
it belongs to (like the engine's baselines), then folded in; its previous deviation is the
one of the sensor's reading just before it (in the slice or before). The functions are
vectorised over the readings of a slice; a sensor with several readings in a slice is folded
in one step (weights summed). ``score_slice_reference`` puts them together as the replay
scores a slice; ``SliceScorer`` does the same in one compiled call, which the replay uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from cityagent.batch import ReadingBatch
from cityagent.detectors._jit import clip, fmax, fmin, nan_to_num, njit
from cityagent.detectors.features import MAD_TO_SD, scale_one, tod_slot_one
from cityagent.detectors.levels import reading_level_score
from cityagent.detectors.params import (
    DEVIATION_WARMUP,
    DEVIATION_Z,
    RELATIVE_FLOOR,
    SCALE_FLOOR,
    TIME_OF_DAY,
)
from cityagent.detectors.verdict import score_of, score_one

if TYPE_CHECKING:
    from cityagent.detection import DetectionEngine
    from cityagent.state import BucketState

__all__ = (
    "RowState",
    "Residuals",
    "spread_of",
    "autocorrelation",
    "residuals",
    "innovation_scores",
    "change_scores",
    "fold",
    "score_slice_reference",
    "SliceScorer",
    "warm_up",
    "SPREAD_RATE",
    "MIN_READINGS",
    "SPREAD_CLIP",
    "ANOMALY_WEIGHT",
    "RHO_RATE",
    "MIN_PAIRS",
    "RHO_CLIP",
    "RHO_MIN",
    "RHO_MAX",
    "INNOVATION_Z",
    "CUSUM_K",
    "CUSUM_H",
    "U_CLIP",
    "DRIFT_RATE",
)

#: Learning rate of the spread per reading (about 50 readings).
SPREAD_RATE = 0.02
#: Readings (weighted) a sensor's spread needs before it replaces the window scale; also
#: what the innovations' spread needs before innovations are judged on it.
MIN_READINGS = 10.0
#: A reading's deviation counts at most this many scales towards the spread.
SPREAD_CLIP = 4.0
#: Weight of a reading that scored 0.5 or more when it is folded into the spread.
ANOMALY_WEIGHT = 0.1
#: Learning rate of the autocorrelation per pair of consecutive residuals (~200 pairs).
RHO_RATE = 0.005
#: Pairs (weighted) the autocorrelation needs before it is used (0 until then).
MIN_PAIRS = 20.0
#: Residuals count at most this much when the autocorrelation learns: the first readings
#: of a level shift (3 scales, before they score as anomalous) would otherwise teach it
#: that the series is smooth, and the shift would whiten itself away.
RHO_CLIP = 2.0
#: Autocorrelation up to RHO_MIN counts as none (what a few hundred pairs of independent
#: noise, or a shift's first readings, give); above it the used value rises to RHO_MAX.
RHO_MIN = 0.2
RHO_MAX = 0.99
#: An innovation scores 0.5 at this many innovation scales (the deviation detector's 6).
INNOVATION_Z = 6.0
#: CUSUM slack and threshold, in scales per reading (score 0.5 at CUSUM_H).
CUSUM_K = 0.5
CUSUM_H = 8.0
#: The sums are capped so a change episode ends a few readings after the sensor settles.
CUSUM_CAP = 1.5 * CUSUM_H
#: A residual adds at most this many scales to a sum: one spike is not a level shift.
U_CLIP = 5.0
#: Learning rate of a smooth series' innovation drift per reading (about 20 readings).
DRIFT_RATE = 0.05


@dataclass(eq=False)
class RowState:
    """One row per sensor (index as the caller numbers its sensors)."""

    n: np.ndarray  # readings folded into the spread (anomalous ones weigh ANOMALY_WEIGHT)
    spread: np.ndarray  # mean absolute deviation of single readings from the baseline
    pos: np.ndarray  # upward CUSUM
    neg: np.ndarray  # downward CUSUM
    last_d: np.ndarray  # deviation x - expected of the sensor's latest warm reading (NaN: none)
    pairs: np.ndarray  # pairs of consecutive residuals folded (weighted like n)
    lag: np.ndarray  # mean of u_previous · u (u: a deviation in scales, clipped to RHO_CLIP)
    var: np.ndarray  # mean of u_previous²
    inn_n: np.ndarray  # innovations folded (weighted like n)
    inn: np.ndarray  # mean absolute innovation (in the series' unit, like the spread)
    zbar: np.ndarray  # recent mean of the standardised innovations (a smooth series' drift)

    @classmethod
    def new(cls, sensors: int) -> RowState:
        zeros = [np.zeros(sensors) for _ in range(10)]
        return cls(*zeros[:4], np.full(sensors, np.nan), *zeros[4:])

    def reset(self, rows: np.ndarray) -> None:
        """Give ``rows`` their initial values: sensors the engine forgot start afresh."""
        fresh = RowState.new(1)
        for name in self.__dataclass_fields__:
            getattr(self, name)[rows] = getattr(fresh, name)[0]


class Residuals(NamedTuple):
    """Per reading of a slice, against the state before it (in the series' unit)."""

    d: np.ndarray  # the deviation x - expected (NaN: no baseline)
    prev: np.ndarray  # the deviation of the sensor's warm reading before it (NaN: none)
    e: np.ndarray  # the innovation d - rho · prev (d where there is no prev)
    e_scale: np.ndarray  # the innovations' scale (NaN: not learned yet: fewer than
    # MIN_READINGS innovations or MIN_PAIRS pairs)


def spread_of(st: RowState, idx: np.ndarray) -> np.ndarray:
    """Each reading's sensor spread; NaN while it rests on too few readings to trust."""
    return np.where(st.n[idx] >= MIN_READINGS, st.spread[idx], np.nan)


def autocorrelation(st: RowState, idx: np.ndarray) -> np.ndarray:
    """Each reading's sensor's lag-1 autocorrelation of residuals as used to whiten them:
    0 up to RHO_MIN, then rising linearly to 1 (at most RHO_MAX)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        learned = st.lag[idx] / st.var[idx]
        rho = np.clip((learned - RHO_MIN) / (1.0 - RHO_MIN), 0.0, RHO_MAX)
    return np.where((st.pairs[idx] >= MIN_PAIRS) & (st.var[idx] > 0) & np.isfinite(rho), rho,
                    0.0)


def _by_sensor(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slice's readings grouped by sensor, each sensor's in slice (time) order: the
    order, and which of the ordered readings are a sensor's first and last."""
    order = np.argsort(idx, kind="stable")
    ordered = idx[order]
    change = ordered[1:] != ordered[:-1]
    return order, np.r_[True, change], np.r_[change, True]


def residuals(st: RowState, idx: np.ndarray, x: np.ndarray, expected: np.ndarray,
              scale: np.ndarray, floor: np.ndarray) -> Residuals:
    """Deviations and innovations of a slice's readings (``floor``: the least change that
    means anything, per reading, as the engine's ``reading_scores`` gives it; the
    innovations' scale never goes below it)."""
    with np.errstate(invalid="ignore"):
        d = x - expected
    warm_d = np.where(np.isfinite(scale), d, np.nan)
    prev = np.empty(len(idx))
    if len(idx):
        order, first, _ = _by_sensor(idx)
        before = np.empty(len(idx))
        before[1:] = warm_d[order][:-1]
        before[first] = st.last_d[idx[order][first]]
        prev[order] = before
    e = np.where(np.isfinite(prev), d - autocorrelation(st, idx) * prev, d)
    learned = (st.inn_n[idx] >= MIN_READINGS) & (st.pairs[idx] >= MIN_PAIRS)
    e_scale = np.where(learned, np.maximum(MAD_TO_SD * st.inn[idx], np.nan_to_num(floor)),
                       np.nan)
    return Residuals(d, prev, e, e_scale)


def innovation_scores(r: Residuals) -> np.ndarray:
    """How far each innovation lies out, as a score: 0.5 at INNOVATION_Z scales."""
    usable = np.isfinite(r.e_scale) & (r.e_scale > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.abs(r.e) / r.e_scale / INNOVATION_Z
    return np.where(usable & np.isfinite(ratio), score_of(ratio), 0.0)


def _standardised(r: Residuals) -> np.ndarray:
    """The CUSUM's input: innovations on their own scale, clipped to ±U_CLIP; 0 until that
    scale and the autocorrelation are learned (raw deviations of a smooth series would fill
    the sums)."""
    usable = np.isfinite(r.e_scale) & (r.e_scale > 0) & np.isfinite(r.e)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(usable, r.e / r.e_scale, 0.0)
    return np.clip(z, -U_CLIP, U_CLIP)


def change_scores(st: RowState, idx: np.ndarray, r: Residuals, scale: np.ndarray) -> np.ndarray:
    """The CUSUM score of each reading: its sensor's sums before the slice plus its own
    standardised innovation.

    A reading's own innovation counts, so the first reading after a shift already adds to
    the sums; readings of the same slice do not see each other (as with the engine's
    baselines).
    """
    z = _standardised(r) - _drift(st, idx)
    pos = np.clip(st.pos[idx] + z - CUSUM_K, 0.0, CUSUM_CAP)
    neg = np.clip(st.neg[idx] - z - CUSUM_K, 0.0, CUSUM_CAP)
    return np.where(np.isfinite(scale), score_of(np.maximum(pos, neg) / CUSUM_H), 0.0)


def _drift(st: RowState, idx: np.ndarray) -> np.ndarray:
    """What the CUSUM discounts from each standardised innovation: for a smooth series (its
    autocorrelation in use) the innovations' recent mean, else 0."""
    return np.where(autocorrelation(st, idx) > 0, st.zbar[idx], 0.0)


def _ewma(old: np.ndarray, n: np.ndarray, m: np.ndarray, mean: np.ndarray,
          rate: float) -> np.ndarray:
    """``old`` after ``m`` (weighted) more values of mean ``mean``: an EWMA over values, or
    a plain mean while fewer than ``1 / rate`` were seen (whichever learns faster)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.nan_to_num(np.minimum((1.0 - rate) ** m, n / (n + m)), nan=1.0)
    return keep * old + (1.0 - keep) * mean


def fold(st: RowState, idx: np.ndarray, scale: np.ndarray, r: Residuals,
         score: np.ndarray) -> None:
    """Learn from a slice's readings after they were scored (spread, autocorrelation,
    innovations' spread, CUSUM, latest residual; per sensor).

    ``r``: the slice's residuals (a NaN deviation: no baseline yet, nothing to learn);
    ``scale``: the scale its score used (NaN: not warm — the spread still learns,
    the rest does not); ``score``: its final score (0.5 or more learns slowly).
    """
    ok = np.isfinite(r.d)
    if not ok.any():
        return
    idx, scale, score = idx[ok], scale[ok], score[ok]
    r = Residuals(*(a[ok] for a in r))
    sensors, inv = np.unique(idx, return_inverse=True)
    limit = np.where(np.isfinite(scale), SPREAD_CLIP * scale, np.inf)
    dev = np.minimum(np.abs(r.d), limit)
    weight = np.where(score >= 0.5, ANOMALY_WEIGHT, 1.0)
    m = np.bincount(inv, weights=weight, minlength=len(sensors))
    st.spread[sensors] = _ewma(st.spread[sensors], st.n[sensors], m,
                               np.bincount(inv, weights=weight * dev) / m, SPREAD_RATE)
    st.n[sensors] += m
    warm = np.isfinite(scale)
    if not warm.any():
        return
    w = np.where(warm, weight, 0.0)
    mw = np.bincount(inv, weights=w, minlength=len(sensors))
    has = mw > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        e_limit = np.where(np.isfinite(r.e_scale), SPREAD_CLIP * r.e_scale, np.inf)
        mean_e = np.bincount(inv, weights=w * np.minimum(np.abs(r.e), e_limit)) / mw
    st.inn[sensors[has]] = _ewma(st.inn[sensors], st.inn_n[sensors], mw, mean_e,
                                 SPREAD_RATE)[has]
    st.inn_n[sensors] += mw
    paired = warm & np.isfinite(r.prev)
    wp = np.where(paired, weight, 0.0)
    mp = np.bincount(inv, weights=wp, minlength=len(sensors))
    hp = mp > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        prev = np.clip(np.where(paired, r.prev / scale, 0.0), -RHO_CLIP, RHO_CLIP)
        u = np.clip(np.where(paired, r.d / scale, 0.0), -RHO_CLIP, RHO_CLIP)
        lag = np.bincount(inv, weights=wp * prev * u) / mp
        var = np.bincount(inv, weights=wp * prev * prev) / mp
    st.lag[sensors[hp]] = _ewma(st.lag[sensors], st.pairs[sensors], mp, lag, RHO_RATE)[hp]
    st.var[sensors[hp]] = _ewma(st.var[sensors], st.pairs[sensors], mp, var, RHO_RATE)[hp]
    st.pairs[sensors] += mp
    raw = _standardised(r)
    z = raw - _drift(st, idx)
    zw = np.bincount(inv, weights=w, minlength=len(sensors))
    zs = np.bincount(inv, weights=w * raw, minlength=len(sensors))
    hz = zw > 0
    st.zbar[sensors[hz]] = (st.zbar[sensors] + (1 - (1 - DRIFT_RATE) ** zw)
                            * (zs / np.where(hz, zw, 1.0) - st.zbar[sensors]))[hz]
    up = np.bincount(inv, weights=np.where(warm, z - CUSUM_K, 0.0), minlength=len(sensors))
    down = np.bincount(inv, weights=np.where(warm, -z - CUSUM_K, 0.0), minlength=len(sensors))
    st.pos[sensors] = np.clip(st.pos[sensors] + up, 0.0, CUSUM_CAP)
    st.neg[sensors] = np.clip(st.neg[sensors] + down, 0.0, CUSUM_CAP)
    order, _, last = _by_sensor(idx)
    latest = order[last & warm[order]]
    st.last_d[idx[latest]] = r.d[latest]


# -- compiled: one call per slice -------------------------------------------------------------
#
# The functions above cost a few dozen numpy calls per slice. A file of one series has one
# reading per slice, so they were ~95 % of its replay (~2,000 rows/s). ``score_slice`` does
# the same arithmetic in one compiled call: the engine's per-reading deviation score
# (``DetectionEngine.reading_scores``) and everything above, in the same order of
# operations, so the scores and the state are the same to the bit
# (``tests/cityagent/test_replay_scores.py`` compares them with ``score_slice_reference``).

#: Per reading, what the scoring pass keeps for the folding pass.
_D, _PREV, _E, _E_SCALE, _SCALE, _Z, _SCORE = range(7)
#: Per sensor of the slice: sums over its readings, and what folding derives from them.
(_M, _WDEV, _MW, _WE, _MP, _LAG, _VAR, _ZS, _UP, _DOWN, _PREV_WD, _DRIFT) = range(12)
#: Per sensor of the slice (integers): the sensor, its last reading with a deviation.
_SENSOR, _LAST_OK = range(2)


@njit
def _rho_one(pairs: float, lag: float, var: float) -> float:
    """``autocorrelation`` of one sensor."""
    rho = clip((lag / var - RHO_MIN) / (1.0 - RHO_MIN), 0.0, RHO_MAX)
    if pairs >= MIN_PAIRS and var > 0 and np.isfinite(rho):
        return rho
    return 0.0


@njit
def _ewma_one(old: float, n: float, m: float, mean: float, rate: float) -> float:
    """``_ewma`` of one sensor."""
    keep = fmin((1.0 - rate) ** m, n / (n + m))
    if keep != keep:
        keep = 1.0
    return keep * old + (1.0 - keep) * mean


@njit
def _deviation_one(row: int, x: float, ts: int, own: float, kind: np.ndarray,
                   rec_n: np.ndarray, rec_m: np.ndarray, rec_d: np.ndarray,
                   quantum: np.ndarray, tod_n: np.ndarray, tod_m: np.ndarray,
                   tod_d: np.ndarray, params: np.ndarray) -> tuple[float, float, float, float]:
    """``DetectionEngine.reading_scores`` of one reading of a known sensor:
    (score, expected, scale, floor)."""
    p = params[row]
    slot = tod_slot_one(ts)
    tn = np.float64(tod_n[row, slot])
    if p[TIME_OF_DAY] > 0 and tn >= 3 * p[DEVIATION_WARMUP]:
        expected, d = np.float64(tod_m[row, slot]), np.float64(tod_d[row, slot])
    else:
        expected, d = rec_m[row], rec_d[row]
    if np.isfinite(own):
        d = own
    q = quantum[row]
    scale = scale_one(d, expected, p, q)
    ratio = abs(x - expected) / scale / p[DEVIATION_Z]
    warm = rec_n[row] >= p[DEVIATION_WARMUP]
    s = score_one(ratio) if warm and np.isfinite(ratio) else 0.0
    s = fmax(s, reading_level_score(kind[row], x, p))
    scale_out = scale if warm and np.isfinite(expected) else math.nan
    floor = fmax(fmax(p[SCALE_FLOOR], p[RELATIVE_FLOOR] * abs(nan_to_num(expected))),
                 q if np.isfinite(q) else 0.0)
    return nan_to_num(s), expected, scale_out, floor if np.isfinite(scale_out) else math.nan


@njit
def _score_slice(k: int, sensor: np.ndarray, row: np.ndarray, x_engine: np.ndarray,
                 x: np.ndarray, ts: np.ndarray, kind: np.ndarray, rec_n: np.ndarray,
                 rec_m: np.ndarray, rec_d: np.ndarray, quantum: np.ndarray,
                 tod_n: np.ndarray, tod_m: np.ndarray, tod_d: np.ndarray, params: np.ndarray,
                 n: np.ndarray, spread: np.ndarray, pos: np.ndarray, neg: np.ndarray,
                 last_d: np.ndarray, pairs: np.ndarray, lag: np.ndarray, var: np.ndarray,
                 inn_n: np.ndarray, inn: np.ndarray, zbar: np.ndarray, slot_of: np.ndarray,
                 rd: np.ndarray, acc: np.ndarray, ints: np.ndarray, out: np.ndarray) -> int:
    """Score ``k`` readings of a slice into ``out`` and fold them into the row state; return
    how many of them came before their sensor's baseline was warm (no scale: only the
    domain levels score them).

    ``row``: each reading's state row in the engine (-1: not seen yet); ``slot_of``: -1 per
    sensor, and -1 again on return; ``rd``, ``acc``, ``ints``: scratch of at least ``k``
    columns (a kernel without reference counting allocates nothing).
    """
    slots = 0
    cold = 0
    # Score every reading against the state before the slice.
    for i in range(k):
        s = sensor[i]
        slot = slot_of[s]
        if slot < 0:
            slot = slots
            slots += 1
            slot_of[s] = slot
            ints[_SENSOR, slot] = s
            ints[_LAST_OK, slot] = -1
            prev = last_d[s]
        else:
            prev = acc[_PREV_WD, slot]
        if row[i] < 0:
            dev, expected, scale, floor = 0.0, math.nan, math.nan, math.nan
        else:
            own = spread[s] if n[s] >= MIN_READINGS else math.nan
            dev, expected, scale, floor = _deviation_one(
                row[i], x_engine[i], ts[i], own, kind, rec_n, rec_m, rec_d, quantum, tod_n,
                tod_m, tod_d, params)
        d = x[i] - expected
        acc[_PREV_WD, slot] = d if np.isfinite(scale) else math.nan
        rho = _rho_one(pairs[s], lag[s], var[s])
        e = d - rho * prev if np.isfinite(prev) else d
        if inn_n[s] >= MIN_READINGS and pairs[s] >= MIN_PAIRS:
            e_scale = fmax(MAD_TO_SD * inn[s], nan_to_num(floor))
        else:
            e_scale = math.nan
        usable = np.isfinite(e_scale) and e_scale > 0
        ratio = abs(e) / e_scale / INNOVATION_Z
        innovation = score_one(ratio) if usable and np.isfinite(ratio) else 0.0
        z = clip(e / e_scale if usable and np.isfinite(e) else 0.0, -U_CLIP, U_CLIP)
        zd = z - (zbar[s] if rho > 0 else 0.0)
        up = clip(pos[s] + zd - CUSUM_K, 0.0, CUSUM_CAP)
        down = clip(neg[s] - zd - CUSUM_K, 0.0, CUSUM_CAP)
        change = score_one(fmax(up, down) / CUSUM_H) if np.isfinite(scale) else 0.0
        score = fmax(fmax(dev, innovation), change)
        out[i] = score
        if not np.isfinite(scale):
            cold += 1
        rd[_D, i], rd[_PREV, i], rd[_E, i], rd[_E_SCALE, i] = d, prev, e, e_scale
        rd[_SCALE, i], rd[_Z, i], rd[_SCORE, i] = scale, z, score
    for slot in range(slots):
        for a in range(_PREV_WD):
            acc[a, slot] = 0.0
    # Sum what each sensor learns, in reading order (as np.bincount adds).
    for i in range(k):
        d = rd[_D, i]
        if not np.isfinite(d):
            continue
        slot = slot_of[sensor[i]]
        ints[_LAST_OK, slot] = i
        scale, e, e_scale, prev = rd[_SCALE, i], rd[_E, i], rd[_E_SCALE, i], rd[_PREV, i]
        warm = np.isfinite(scale)
        weight = ANOMALY_WEIGHT if rd[_SCORE, i] >= 0.5 else 1.0
        limit = SPREAD_CLIP * scale if warm else math.inf
        acc[_M, slot] += weight
        acc[_WDEV, slot] += weight * fmin(abs(d), limit)
        w = weight if warm else 0.0
        e_limit = SPREAD_CLIP * e_scale if np.isfinite(e_scale) else math.inf
        acc[_MW, slot] += w
        acc[_WE, slot] += w * fmin(abs(e), e_limit)
        paired = warm and np.isfinite(prev)
        wp = weight if paired else 0.0
        u_prev = clip(prev / scale if paired else 0.0, -RHO_CLIP, RHO_CLIP)
        u = clip(d / scale if paired else 0.0, -RHO_CLIP, RHO_CLIP)
        acc[_MP, slot] += wp
        acc[_LAG, slot] += wp * u_prev * u
        acc[_VAR, slot] += wp * u_prev * u_prev
        acc[_ZS, slot] += w * rd[_Z, i]
    # Fold the sums into each sensor's state (spread, innovations' spread, autocorrelation).
    for slot in range(slots):
        if ints[_LAST_OK, slot] < 0:
            continue
        s = ints[_SENSOR, slot]
        m, mw, mp = acc[_M, slot], acc[_MW, slot], acc[_MP, slot]
        spread[s] = _ewma_one(spread[s], n[s], m, acc[_WDEV, slot] / m, SPREAD_RATE)
        n[s] += m
        if mw > 0:
            inn[s] = _ewma_one(inn[s], inn_n[s], mw, acc[_WE, slot] / mw, SPREAD_RATE)
        inn_n[s] += mw
        if mp > 0:
            lag[s] = _ewma_one(lag[s], pairs[s], mp, acc[_LAG, slot] / mp, RHO_RATE)
            var[s] = _ewma_one(var[s], pairs[s], mp, acc[_VAR, slot] / mp, RHO_RATE)
        pairs[s] += mp
        # The CUSUM discounts the drift as the autocorrelation now stands.
        acc[_DRIFT, slot] = zbar[s] if _rho_one(pairs[s], lag[s], var[s]) > 0 else 0.0
    for i in range(k):
        if not np.isfinite(rd[_D, i]):
            continue
        slot = slot_of[sensor[i]]
        warm = np.isfinite(rd[_SCALE, i])
        z = rd[_Z, i] - acc[_DRIFT, slot]
        acc[_UP, slot] += z - CUSUM_K if warm else 0.0
        acc[_DOWN, slot] += -z - CUSUM_K if warm else 0.0
    for slot in range(slots):
        s = ints[_SENSOR, slot]
        slot_of[s] = -1
        last = ints[_LAST_OK, slot]
        if last < 0:
            continue
        zw = acc[_MW, slot]
        if zw > 0:
            zbar[s] = zbar[s] + (1 - (1 - DRIFT_RATE) ** zw) * (acc[_ZS, slot] / zw - zbar[s])
        pos[s] = clip(pos[s] + acc[_UP, slot], 0.0, CUSUM_CAP)
        neg[s] = clip(neg[s] + acc[_DOWN, slot], 0.0, CUSUM_CAP)
        if np.isfinite(rd[_SCALE, last]):
            last_d[s] = rd[_D, last]
    return cold


def score_slice_reference(engine: DetectionEngine, state: BucketState, rows: RowState,
                          chunk: ReadingBatch, sensor: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Score a slice's readings against the state before it, then learn the per-reading
    state, with the numpy functions above (``SliceScorer`` gives the same, faster).

    The score is the largest of the engine's deviation (and domain) score, judged with each
    sensor's per-reading spread, the innovation's score and the per-reading CUSUM's.
    """
    deviation, expected, scale, floor = engine.reading_scores(state, chunk,
                                                               spread_of(rows, sensor))
    r = residuals(rows, sensor, x, expected, scale, floor)
    score = np.maximum.reduce([deviation, innovation_scores(r),
                               change_scores(rows, sensor, r, scale)])
    fold(rows, sensor, scale, r, score)
    return score


class SliceScorer:
    """``score_slice_reference`` in one compiled call per slice.

    Keeps between slices each sensor's state row in the engine (a sensor has one from the
    slice after its first), looked up again when the engine's rows move (``BucketState.
    layout``: sensors were forgotten), and the kernel's scratch buffers. ``sensor_ids``: the
    ids of the replay's sensor numbers (``sensor`` in each call indexes them, as it does
    ``rows``).
    """

    def __init__(self, engine: DetectionEngine, state: BucketState, rows: RowState,
                 sensor_ids: Sequence[str]) -> None:
        self.engine, self.state, self.rows = engine, state, rows
        self.sensor_ids = sensor_ids
        self._engine_row = np.full(len(sensor_ids), -1, dtype=np.int64)
        self._slot_of = np.full(len(sensor_ids), -1, dtype=np.int64)
        self._layout = state.layout  # of the engine rows in _engine_row
        #: Readings scored before their sensor's baseline was warm (only domain levels then).
        self.cold = 0
        self._grow(64)

    def _grow(self, size: int) -> None:
        self._rd = np.empty((_SCORE + 1, size))
        self._acc = np.empty((_DRIFT + 1, size))
        self._ints = np.empty((_LAST_OK + 1, size), dtype=np.int64)

    def __call__(self, chunk: ReadingBatch, sensor: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The slice's scores (``chunk``: its readings; ``sensor``: their sensor numbers;
        ``x``: their watched values), learned from once they are scored."""
        k = len(sensor)
        if k > self._rd.shape[1]:
            self._grow(max(k, 2 * self._rd.shape[1]))
        sensor = np.asarray(sensor, dtype=np.int64)
        if self._layout != self.state.layout:  # rows removed: every row number may be stale
            self._engine_row[:] = -1
            self._layout = self.state.layout
        rows = self._engine_row[sensor]
        unknown = rows < 0
        if unknown.any():
            index = self.state.index
            for s in np.unique(sensor[unknown]).tolist():
                self._engine_row[s] = index.get(self.sensor_ids[s], -1)
            rows = self._engine_row[sensor]
        c, st = self.state.cols, self.rows
        out = np.empty(k)
        self.cold += _score_slice(k, sensor, rows, self.engine.watched_values(chunk),
                     np.asarray(x, dtype=np.float64), np.asarray(chunk.ts_ms, dtype=np.int64),
                     c["kind"], c["rec_n"], c["rec_m"], c["rec_d"], c["quantum"], c["tod_n"],
                     c["tod_m"], c["tod_d"], self.engine.param_matrix(self.state), st.n,
                     st.spread, st.pos, st.neg, st.last_d, st.pairs, st.lag, st.var, st.inn_n,
                     st.inn, st.zbar, self._slot_of, self._rd, self._acc, self._ints, out)
        return out


def warm_up(engine: DetectionEngine) -> float:
    """Load (or, on a machine's first run, compile) ``SliceScorer``'s kernel; return the
    seconds taken. The replay calls this before it starts its clock."""
    started = time.perf_counter()
    one = np.ones(1)
    chunk = ReadingBatch(np.array(["warm-up"]), np.array(["generic"]), np.zeros(1, np.int64),
                         one, one, np.zeros(1, np.int64), {"value": one})
    SliceScorer(engine, engine.new_state(), RowState.new(1), ["warm-up"])(chunk, np.zeros(1),
                                                                          one)
    return time.perf_counter() - started
