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
in one step (weights summed), so the cost per engine step is a handful of numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cityagent.detectors.features import MAD_TO_SD
from cityagent.detectors.verdict import score_of

__all__ = (
    "RowState",
    "Residuals",
    "spread_of",
    "autocorrelation",
    "residuals",
    "innovation_scores",
    "change_scores",
    "fold",
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
