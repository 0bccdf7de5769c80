"""Event-time windows per sensor: tumbling windows with a grace period, and hopping panes.

Every reading falls in the tumbling window ``k = ts // size`` of its sensor. A window
*closes* — its final aggregate is handed to the detectors — when the bucket's event time
(its **watermark**: the latest timestamp seen, or the clock when the bucket is idle) passes
``window end + grace``. Closing does not wait for the sensor's own next reading, so the
window of a sensor that went silent still closes and the silence detector can fire.

A reading whose window has already closed is *late*: it is counted in
``BucketState.late_total`` and reported to the caller, never folded in silently or lost
without trace. Because ``grace <= size``, a sensor has at most two open windows (slots
``k % 2``).

*Hopping windows* (size = ``panes`` tumbling windows, hop = one window) are kept as panes:
each closed tumbling window's count and sum go to pane slot ``k % panes``; the hopping
aggregate is the sum over the panes still inside the hop (``hopping_mean``).

Vectorised: a batch costs a handful of numpy calls whatever the number of sensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.detectors.config import WindowConfig
from cityagent.state import NO_TS, BucketState

__all__ = ("ClosedWindows", "add_readings", "close_due", "hopping_mean")


@dataclass(frozen=True)
class ClosedWindows:
    """Final aggregates of closed tumbling windows, one entry per (sensor row, window)."""

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
    def concat(cls, parts: list[ClosedWindows]) -> ClosedWindows:
        parts = [p for p in parts if len(p)]
        if not parts:
            return _EMPTY
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("rows", "k", "n", "total", "vmin", "vmax", "hop_mean")))

    def take(self, index: np.ndarray) -> ClosedWindows:
        return ClosedWindows(self.rows[index], self.k[index], self.n[index], self.total[index],
                             self.vmin[index], self.vmax[index], self.hop_mean[index])

    def rounds(self) -> list[ClosedWindows]:
        """Split so that each part has at most one window per sensor, in window order."""
        if len(self) == 0:
            return []
        order = np.lexsort((self.k, self.rows))
        rows = self.rows[order]
        first = np.r_[True, rows[1:] != rows[:-1]]
        starts = np.flatnonzero(first)
        rank = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        if rank.max() == 0:
            return [self.take(order)]
        return [self.take(order[rank == r]) for r in range(int(rank.max()) + 1)]


_EMPTY = ClosedWindows(*(np.empty(0, dtype=t) for t in ("i8", "i8", "f8", "f8", "f8", "f8", "f8")))


def add_readings(state: BucketState, rows: np.ndarray, ts: np.ndarray, x: np.ndarray,
                 cfg: WindowConfig) -> tuple[int, ClosedWindows]:
    """Fold readings into their windows; return (late readings, windows that closed).

    ``rows`` are state rows, ``ts`` event times (ms), ``x`` the watched value of each reading.
    """
    size, grace = cfg.size_ms, cfg.grace_ms
    c = state.cols
    valid = ~np.isnan(x)
    k = ts // size
    if state.watermark != NO_TS:
        late_mask = valid & ((k + 1) * size + grace <= state.watermark)
    else:
        late_mask = np.zeros(len(rows), dtype=bool)
    keep = valid & ~late_mask
    late = int(late_mask.sum())
    if not keep.all():
        rows, ts, x, k = rows[keep], ts[keep], x[keep], k[keep]
    state.late_total += late
    if len(rows) == 0:
        return late, _EMPTY
    _learn_intervals(state, rows, ts)
    _learn_quantum(state, rows, ts, x)
    closed: list[ClosedWindows] = []
    for kk in np.unique(k).tolist():
        sel = k == kk
        r, xv = (rows, x) if sel.all() else (rows[sel], x[sel])
        slot = kk % 2
        stored = c["win_k"][r, slot]
        other = stored != kk
        if other.any():
            occupied = np.unique(r[other & (stored >= 0)])
            if occupied.size:  # an older window in this slot: it is due, close it first
                closed.append(_close(state, occupied, slot, cfg))
            fresh = np.unique(r[other])
            c["win_k"][fresh, slot] = kk
            c["win_n"][fresh, slot] = 0.0
            c["win_sum"][fresh, slot] = 0.0
            c["win_min"][fresh, slot] = np.inf
            c["win_max"][fresh, slot] = -np.inf
        np.add.at(c["win_n"][:, slot], r, 1.0)
        np.add.at(c["win_sum"][:, slot], r, xv)
        np.minimum.at(c["win_min"][:, slot], r, xv)
        np.maximum.at(c["win_max"][:, slot], r, xv)
    state.watermark = max(state.watermark, int(ts.max()))
    closed.append(close_due(state, state.watermark, cfg))
    return late, ClosedWindows.concat(closed)


def close_due(state: BucketState, watermark: int, cfg: WindowConfig) -> ClosedWindows:
    """Close every open window whose end + grace is at or before ``watermark``."""
    win_k = state.cols["win_k"]
    parts = []
    for _ in range(2):  # the earlier of a sensor's two windows first, then the later
        k = win_k
        due = (k >= 0) & ((k + 1) * cfg.size_ms + cfg.grace_ms <= watermark)
        if not due.any():
            break
        first = np.where(due[:, 0] & (~due[:, 1] | (k[:, 0] < k[:, 1])), 0, 1)
        for slot in (0, 1):
            rows = np.flatnonzero(due.any(axis=1) & (first == slot))
            if rows.size:
                parts.append(_close(state, rows, slot, cfg))
    return ClosedWindows.concat(parts)


def _close(state: BucketState, rows: np.ndarray, slot: int, cfg: WindowConfig) -> ClosedWindows:
    c = state.cols
    k = c["win_k"][rows, slot].copy()
    n = c["win_n"][rows, slot].copy()
    total = c["win_sum"][rows, slot].copy()
    c["win_k"][rows, slot] = -1
    pane = k % state.panes
    c["pane_k"][rows, pane] = k
    c["pane_n"][rows, pane] = n
    c["pane_sum"][rows, pane] = total
    return ClosedWindows(
        rows=rows.copy(), k=k, n=n, total=total, vmin=c["win_min"][rows, slot].copy(),
        vmax=c["win_max"][rows, slot].copy(), hop_mean=hopping_mean(state, rows, k),
    )


def hopping_mean(state: BucketState, rows: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mean of the hopping window ending with tumbling window ``k`` (its last ``panes``)."""
    c = state.cols
    pk = c["pane_k"][rows]
    inside = (pk > (k - state.panes)[:, None]) & (pk <= k[:, None])
    n = np.where(inside, c["pane_n"][rows], 0.0).sum(axis=1)
    total = np.where(inside, c["pane_sum"][rows], 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / n


def _learn_intervals(state: BucketState, rows: np.ndarray, ts: np.ndarray) -> None:
    """Update each sensor's latest timestamp and its learned report interval."""
    c = state.cols
    uniq, inverse = np.unique(rows, return_inverse=True)
    count = np.bincount(inverse).astype(np.float64)
    newest = np.full(uniq.size, NO_TS, dtype=np.int64)
    np.maximum.at(newest, inverse, ts)
    prev = c["last_ts"][uniq]
    seen = (prev != NO_TS) & (newest > prev)
    if seen.any():
        gap = (newest[seen] - prev[seen]) / count[seen]
        old = c["gap_ms"][uniq[seen]]
        c["gap_ms"][uniq[seen]] = np.where(np.isnan(old), gap, old + 0.1 * (gap - old))
    c["last_ts"][uniq] = np.maximum(prev, newest)


def _learn_quantum(state: BucketState, rows: np.ndarray, ts: np.ndarray, x: np.ndarray) -> None:
    """Each sensor's quantum: the smallest non-zero step between its consecutive readings.

    For a quantised sensor (1 cm, 0.01 MPa) that is its resolution, and no deviation smaller
    than it can be an anomaly; for a continuous one it soon becomes negligible.
    """
    c = state.cols
    order = np.lexsort((ts, rows))
    r, v = rows[order], x[order]
    first = np.r_[True, r[1:] != r[:-1]]
    prev = np.empty_like(v)
    prev[1:] = v[:-1]
    prev[first] = c["last_x"][r[first]]  # the sensor's latest value before this batch
    step = np.abs(v - prev)
    ok = np.isfinite(step) & (step > 0)
    if ok.any():
        np.minimum.at(c["quantum"], r[ok], step[ok])
    last = np.r_[r[1:] != r[:-1], True]
    c["last_x"][r[last]] = v[last]
