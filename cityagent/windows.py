"""Event-time windows per sensor: tumbling windows with a grace period, and hopping panes.

Every reading falls in the tumbling window ``k = ts // size`` of its sensor. A window
*closes* — its final aggregate is handed to the detectors — when the bucket's event time
(its **watermark**: the latest timestamp seen, or the clock when the bucket is idle) passes
``window end + grace``. Closing does not wait for the sensor's own next reading, so the
window of a sensor that went silent still closes and the silence detector can fire.

A reading whose window has already closed is *late*: it is counted in
``BucketState.late_total`` and reported to the caller, never folded in silently or lost
without trace. Lateness is judged at the event time before the batch; a bucket's first batch
has none, and judges each reading against the readings before it (``_admit``). Because ``grace <= size``, a sensor has at most two open windows (slots
``k % 2``).

*Hopping windows* (size = ``panes`` tumbling windows, hop = one window) are kept as panes:
each closed tumbling window's count and sum go to pane slot ``k % panes``; the hopping
aggregate is the sum over the panes still inside the hop (``hopping_mean``).

Compiled: a batch is one call (``cityagent.detectors._jit``) whatever its size; the readings
are visited per sensor in time order, so a sensor's windows close in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.config import WindowConfig
from cityagent.detectors.params import PARAM_NAMES, QUANTUM_MAX, QUANTUM_MAX_FRACTION
from cityagent.state import NO_TS, BucketState

#: No ceiling on a bucket's event time (history: ``cityagent replay``, eval, tests).
NO_LIMIT = int(np.iinfo(np.int64).max)

__all__ = ("ClosedWindows", "add_readings", "close_due", "hopping_mean")


@dataclass(frozen=True)
class ClosedWindows:
    """Final aggregates of closed tumbling windows, one entry per (sensor row, window), in
    the order they closed."""

    rows: np.ndarray  # state rows
    k: np.ndarray  # window index (start = k * size)
    n: np.ndarray  # readings
    total: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    hop_mean: np.ndarray  # mean of the hopping window ending with this one (at its close)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls, capacity: int) -> ClosedWindows:
        return cls(*(np.empty(capacity, dtype=t) for t in ("i8", "i8", "f8", "f8", "f8", "f8",
                                                             "f8")))

    def head(self, count: int) -> ClosedWindows:
        return ClosedWindows(self.rows[:count], self.k[:count], self.n[:count],
                             self.total[:count], self.vmin[:count], self.vmax[:count],
                             self.hop_mean[:count])


def add_readings(state: BucketState, rows: np.ndarray, ts: np.ndarray, x: np.ndarray,
                 cfg: WindowConfig, order: np.ndarray | None = None,
                 params: np.ndarray | None = None) -> tuple[int, ClosedWindows]:
    """Fold readings into their windows; return (late readings, windows that closed).

    ``rows`` are state rows, ``ts`` event times (ms), ``x`` the watched value of each reading
    (NaN: the reading lacks it and is skipped); ``order`` is ``np.lexsort((ts, rows))`` if
    the caller has it; ``params`` the sensors' parameter matrix (``DetectionEngine.
    param_matrix``; None: any step may be a sensor's quantum).
    """
    if params is None:
        params = np.zeros((len(state), len(PARAM_NAMES)))
        params[:, QUANTUM_MAX] = np.inf
    rows = np.asarray(rows, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    x = np.asarray(x, dtype=np.float64)
    if order is None:
        order = np.lexsort((ts, rows))
    out = ClosedWindows.empty(len(rows) + 2 * len(state))
    keep = np.zeros(len(rows), dtype=np.bool_)
    late, newest = _admit(ts, x, keep, state.watermark, NO_LIMIT, cfg.size_ms, cfg.grace_ms)
    closed = _fold(state.columns(), params, rows, ts, x, order, keep, cfg.size_ms, state.panes,
                   *_outputs(out))
    state.late_total += late
    if newest != NO_TS:
        state.watermark = max(state.watermark, newest)
        closed = _close_due(state.columns(), state.watermark, cfg.size_ms, cfg.grace_ms,
                            state.panes, closed, *_outputs(out))
    return late, out.head(closed)


def close_due(state: BucketState, watermark: int, cfg: WindowConfig) -> ClosedWindows:
    """Close every open window whose end + grace is at or before ``watermark``."""
    out = ClosedWindows.empty(2 * len(state))
    closed = _close_due(state.columns(), watermark, cfg.size_ms, cfg.grace_ms, state.panes, 0,
                        *_outputs(out))
    return out.head(closed)


def hopping_mean(state: BucketState, rows: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mean of the hopping window ending with tumbling window ``k`` (its last ``panes``)."""
    c = state.columns()
    return np.array([_hop_mean(c, int(r), int(kk), state.panes)
                     for r, kk in zip(rows.tolist(), k.tolist(), strict=True)], dtype=np.float64)


def _outputs(out: ClosedWindows) -> tuple[np.ndarray, ...]:
    return out.rows, out.k, out.n, out.total, out.vmin, out.vmax, out.hop_mean


@njit
def _hop_mean(c, row: int, k: int, panes: int) -> float:
    n = total = 0.0
    for j in range(panes):
        pk = c.pane_k[row, j]
        if k - panes < pk <= k:
            n += c.pane_n[row, j]
            total += c.pane_sum[row, j]
    return total / n


@njit
def _close(c, row: int, slot: int, panes: int, at: int, o_rows, o_k, o_n, o_total, o_min, o_max,
           o_hop) -> int:
    """Close window ``slot`` of ``row`` into output position ``at``; return the next one."""
    k = c.win_k[row, slot]
    c.win_k[row, slot] = -1
    pane = k % panes
    c.pane_k[row, pane] = k
    c.pane_n[row, pane] = c.win_n[row, slot]
    c.pane_sum[row, pane] = c.win_sum[row, slot]
    o_rows[at], o_k[at], o_n[at], o_total[at] = row, k, c.win_n[row, slot], c.win_sum[row, slot]
    o_min[at], o_max[at] = c.win_min[row, slot], c.win_max[row, slot]
    o_hop[at] = _hop_mean(c, row, k, panes)
    return at + 1


@njit
def _may_be_quantum(step: float, prev: float, varied: bool, p: np.ndarray) -> bool:
    """Can a step between consecutive readings be the sensor's resolution (its quantum)?

    Yes once the sensor's baseline has seen it vary (``varied``: its deviation is above 0);
    before that, only up to ``quantum_max`` (in the kind's unit) or ``quantum_max_fraction``
    of the value. A sensor constant for hours that jumps has taught nothing of its resolution,
    and taking the jump for it made the jump one scale, never an anomaly, however large (a
    water level constant at 2.00 m that rose to 3.00 m, or a generic series 5.0 → 105.0,
    raised nothing)."""
    return varied or step <= p[QUANTUM_MAX] or step <= p[QUANTUM_MAX_FRACTION] * abs(prev)


@njit
def _learn_interval(gap_ms: np.ndarray, last_gap_ms: np.ndarray, row: int, gap: float) -> None:
    """Learn a sensor's report interval (``gap_ms``) from the gap of a batch's newer readings.

    The learned interval follows the median of three (this gap, the batch before's and the
    interval learned), so one odd gap moves it not at all: a reading hours older than the
    sensor's others (a buffered reading sent first), or an outage, made a gap of hours, and
    taken whole as the first interval it kept the silence timer ~29 h from calling the
    sensor silent (then decaying 10 % a batch). The first gap alone is not learned; the
    second starts the interval at the smaller of the two.
    """
    learned, last = gap_ms[row], last_gap_ms[row]
    last_gap_ms[row] = gap
    if np.isnan(last):  # a sensor's first gap, or a checkpoint from before this column
        return
    if np.isnan(learned):
        gap_ms[row] = min(last, gap)
        return
    typical = max(min(gap, last), min(max(gap, last), learned))  # the median of the three
    gap_ms[row] = learned + 0.1 * (typical - learned)


@njit
def _admit(ts, x, keep, watermark: int, ceiling: int, size: int, grace: int):
    """Mark in ``keep`` the readings a batch takes into windows; return (late, newest ts).

    A reading is *late* when its window closed at the bucket's event time (``watermark``):
    its end + grace is at or before it. NaN readings (the value their kind watches is
    missing) are neither taken nor late. A bucket with no event time yet (its first batch,
    with no checkpoint) judges its readings one by one in the order they came, each against
    the newest reading before it (not past ``ceiling``, a live worker's clock), as if each
    had come in a message of its own: history in time order is all taken, but a reading
    hours older than one before it is late, as it would be one batch later. Before, such a
    reading opened and closed a window of its own and raised level and silence alarms dated
    hours back.
    """
    first = watermark == NO_TS
    late = 0
    newest = NO_TS
    for i in range(len(ts)):
        keep[i] = False
        if x[i] != x[i]:
            continue
        if watermark != NO_TS and (ts[i] // size + 1) * size + grace <= watermark:
            late += 1
            continue
        keep[i] = True
        newest = max(newest, ts[i])
        if first:
            watermark = min(newest, ceiling)
    return late, newest


@njit
def _fold(c, params, rows, ts, x, order, keep, size: int, panes: int, o_rows, o_k, o_n, o_total,
          o_min, o_max, o_hop) -> int:
    """Learn intervals and quanta, then fold the readings ``keep`` marks (``_admit``); return
    how many windows closed (kernels allocate nothing: ``cityagent.detectors._jit``).
    """
    m = len(rows)
    # Per sensor, in time order: its report interval and its quantum (smallest step).
    j = 0
    while j < m:
        row = rows[order[j]]
        end = j
        while end < m and rows[order[end]] == row:
            end += 1
        newer = 0
        latest = NO_TS
        prev = c.last_x[row]
        before = c.last_ts[row]
        for q in range(j, end):
            i = order[q]
            if not keep[i]:
                continue
            if ts[i] > before:  # an older reading (within grace) is no interval
                newer += 1
            latest = max(latest, ts[i])
            step = abs(x[i] - prev)
            if np.isfinite(step) and 0 < step < c.quantum[row] and _may_be_quantum(
                    step, prev, c.rec_d[row] > 0, params[row]):
                c.quantum[row] = step
            prev = x[i]
        if latest != NO_TS:
            c.last_x[row] = prev
            if before != NO_TS and latest > before:
                _learn_interval(c.gap_ms, c.last_gap_ms, row, (latest - before) / newer)
            c.last_ts[row] = max(before, latest)
        j = end
    # Fold; a reading of a newer window whose slot holds an older one closes that one first.
    closed = 0
    for q in range(m):
        i = order[q]
        if not keep[i]:
            continue
        row = rows[i]
        k = ts[i] // size
        slot = k % 2
        if c.win_k[row, slot] != k:
            other = c.win_k[row, 1 - slot]
            if 0 <= other < c.win_k[row, slot]:  # the other slot is older still: it goes first
                closed = _close(c, row, 1 - slot, panes, closed, o_rows, o_k, o_n, o_total,
                                o_min, o_max, o_hop)
            if c.win_k[row, slot] >= 0:
                closed = _close(c, row, slot, panes, closed, o_rows, o_k, o_n, o_total, o_min,
                                o_max, o_hop)
            c.win_k[row, slot] = k
            c.win_n[row, slot] = 0.0
            c.win_sum[row, slot] = 0.0
            c.win_min[row, slot] = np.inf
            c.win_max[row, slot] = -np.inf
        c.win_n[row, slot] += 1.0
        c.win_sum[row, slot] += x[i]
        c.win_min[row, slot] = min(c.win_min[row, slot], x[i])
        c.win_max[row, slot] = max(c.win_max[row, slot], x[i])
    return closed


@njit
def _close_due(c, watermark: int, size: int, grace: int, panes: int, closed: int,
               o_rows, o_k, o_n, o_total, o_min, o_max, o_hop) -> int:
    """Close every window due at ``watermark``, a sensor's earlier window first."""
    for row in range(len(c.win_k)):
        k0, k1 = c.win_k[row, 0], c.win_k[row, 1]
        due0 = k0 >= 0 and (k0 + 1) * size + grace <= watermark
        due1 = k1 >= 0 and (k1 + 1) * size + grace <= watermark
        if due0 and (not due1 or k0 < k1):
            closed = _close(c, row, 0, panes, closed, o_rows, o_k, o_n, o_total, o_min, o_max,
                            o_hop)
            due0 = False
        if due1:
            closed = _close(c, row, 1, panes, closed, o_rows, o_k, o_n, o_total, o_min, o_max,
                            o_hop)
        if due0:
            closed = _close(c, row, 0, panes, closed, o_rows, o_k, o_n, o_total, o_min, o_max,
                            o_hop)
    return closed
