"""Per-reading state of the replay's row scores: each sensor's reading spread and CUSUM.

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
* **CUSUM**: a two-sided cumulative sum of standardised residuals
  ``u = clip((x - expected) / scale, ±U_CLIP)`` with slack ``CUSUM_K``, scored against
  ``CUSUM_H``, so a shift of a few scales — too small for the deviation score — shows within
  a few readings.

Everything is causal: a reading is scored with the state before the slice of event time
it belongs to (like the engine's baselines), then folded in. The functions are vectorised
over the readings of a slice; a sensor with several readings in a slice is folded in one
step (weights summed), so the cost per engine step is a handful of numpy calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.detectors.verdict import score_of

__all__ = (
    "RowState",
    "spread_of",
    "change_scores",
    "fold",
    "SPREAD_RATE",
    "MIN_READINGS",
    "SPREAD_CLIP",
    "ANOMALY_WEIGHT",
    "CUSUM_K",
    "CUSUM_H",
    "U_CLIP",
)

#: Learning rate of the spread per reading (about 50 readings).
SPREAD_RATE = 0.02
#: Readings (weighted) a sensor's spread needs before it replaces the window scale.
MIN_READINGS = 10.0
#: A reading's deviation counts at most this many scales towards the spread.
SPREAD_CLIP = 4.0
#: Weight of a reading that scored 0.5 or more when it is folded into the spread.
ANOMALY_WEIGHT = 0.1
#: CUSUM slack and threshold, in scales per reading (score 0.5 at CUSUM_H).
CUSUM_K = 0.5
CUSUM_H = 8.0
#: The sums are capped so a change episode ends a few readings after the sensor settles.
CUSUM_CAP = 1.5 * CUSUM_H
#: A residual adds at most this many scales to a sum: one spike is not a level shift.
U_CLIP = 5.0


@dataclass(eq=False)
class RowState:
    """One row per sensor (index as the caller numbers its sensors)."""

    n: np.ndarray  # readings folded into the spread (anomalous ones weigh ANOMALY_WEIGHT)
    spread: np.ndarray  # mean absolute deviation of single readings from the baseline
    pos: np.ndarray  # upward CUSUM
    neg: np.ndarray  # downward CUSUM

    @classmethod
    def new(cls, sensors: int) -> RowState:
        return cls(np.zeros(sensors), np.zeros(sensors), np.zeros(sensors), np.zeros(sensors))


def spread_of(st: RowState, idx: np.ndarray) -> np.ndarray:
    """Each reading's sensor spread; NaN while it rests on too few readings to trust."""
    return np.where(st.n[idx] >= MIN_READINGS, st.spread[idx], np.nan)


def _residuals(x: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Standardised, clipped residuals; 0 where there is no scale (sensor not warm)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.clip((x - expected) / scale, -U_CLIP, U_CLIP)
    return np.where(np.isfinite(u), u, 0.0)


def change_scores(st: RowState, idx: np.ndarray, x: np.ndarray, expected: np.ndarray,
                  scale: np.ndarray) -> np.ndarray:
    """The CUSUM score of each reading: its sensor's sums before the slice plus its residual.

    A reading's own residual counts, so the first reading after a shift already adds to the
    sums; readings of the same slice do not see each other (as with the engine's baselines).
    """
    u = _residuals(x, expected, scale)
    pos = np.clip(st.pos[idx] + u - CUSUM_K, 0.0, CUSUM_CAP)
    neg = np.clip(st.neg[idx] - u - CUSUM_K, 0.0, CUSUM_CAP)
    return np.where(np.isfinite(scale), score_of(np.maximum(pos, neg) / CUSUM_H), 0.0)


def fold(st: RowState, idx: np.ndarray, x: np.ndarray, expected: np.ndarray,
         scale: np.ndarray, score: np.ndarray) -> None:
    """Learn from a slice's readings after they were scored (spread and CUSUM, per sensor).

    ``expected``: the baseline each reading was compared with (NaN: none yet, nothing to
    learn); ``scale``: the scale its score used (NaN: not warm — the spread still learns,
    the CUSUM does not); ``score``: its final score (0.5 or more learns slowly).
    """
    ok = np.isfinite(expected) & np.isfinite(x)
    if not ok.any():
        return
    idx, x, expected, scale, score = idx[ok], x[ok], expected[ok], scale[ok], score[ok]
    sensors, inv = np.unique(idx, return_inverse=True)
    limit = np.where(np.isfinite(scale), SPREAD_CLIP * scale, np.inf)
    dev = np.minimum(np.abs(x - expected), limit)
    weight = np.where(score >= 0.5, ANOMALY_WEIGHT, 1.0)
    m = np.bincount(inv, weights=weight)
    mean_dev = np.bincount(inv, weights=weight * dev) / m
    n = st.n[sensors]
    # The share of the old spread kept: an EWMA over m readings, or a plain mean while the
    # sensor has fewer than 1 / SPREAD_RATE readings (whichever learns faster).
    keep = np.minimum((1.0 - SPREAD_RATE) ** m, n / (n + m))
    st.spread[sensors] = keep * st.spread[sensors] + (1.0 - keep) * mean_dev
    st.n[sensors] = n + m
    warm = np.isfinite(scale)
    u = _residuals(x, expected, scale)
    up = np.bincount(inv, weights=np.where(warm, u - CUSUM_K, 0.0))
    down = np.bincount(inv, weights=np.where(warm, -u - CUSUM_K, 0.0))
    st.pos[sensors] = np.clip(st.pos[sensors] + up, 0.0, CUSUM_CAP)
    st.neg[sensors] = np.clip(st.neg[sensors] + down, 0.0, CUSUM_CAP)
