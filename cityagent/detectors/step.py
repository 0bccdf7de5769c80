"""A batch in one compiled call: watched values → runs → windows → judging.

``DetectionEngine.process`` used to make six compiled calls per batch (runs, folding,
closing, then judging windows, silence and flatline) with Python in between. Each call that
is handed a bucket's state (a namedtuple of ~40 arrays) spends ~3 µs unpacking it before it
does any work, and the Python between them allocated the same buffers afresh for every
batch: ~45 µs a message whatever its size, which was most of the cost of the small messages
an API under moderate load sends (a few readings each; ``docs/detection.md``, Speed). This
is the same functions, in the same order, inside one call, so the results are the same.
The idle timer's ``advance`` is the same call without readings, so only one large function
is compiled (the first compile on a machine would otherwise take three times as long).

Buffers are passed in (``Scratch``): the kernels allocate nothing (``_jit``).
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.flatline import track_runs
from cityagent.detectors.judge import judge_flatline, judge_silence, judge_windows
from cityagent.state import NO_TS
from cityagent.windows import _admit, _close_due, _fold

__all__ = ("Scratch", "step_batch", "watched_values")


class Scratch:
    """Work buffers of ``step_batch``, kept between batches and grown when a batch needs more."""

    def __init__(self) -> None:
        self.keep = np.zeros(0, dtype=np.bool_)
        self.x = np.zeros(0)
        self.run_rows = np.zeros(0, dtype=np.int64)
        self.run_since = np.zeros(0, dtype=np.int64)
        self.run_x = np.zeros(0)
        self.closed: tuple[np.ndarray, ...] = ()
        self._closed_capacity = -1

    def fit(self, readings: int, sensors: int) -> None:
        """Room for a batch of ``readings`` into a state of ``sensors``: at most one run per
        sensor; at most one closed window per reading plus the two open per sensor."""
        if len(self.keep) < readings:
            size = max(readings, 2 * len(self.keep), 64)
            self.keep = np.zeros(size, dtype=np.bool_)
            self.x = np.zeros(size)
        if len(self.run_rows) < sensors:
            size = max(sensors, 2 * len(self.run_rows), 64)
            self.run_rows = np.zeros(size, dtype=np.int64)
            self.run_since = np.zeros(size, dtype=np.int64)
            self.run_x = np.zeros(size)
        need = readings + 2 * sensors
        if self._closed_capacity < need:
            size = max(need, 2 * self._closed_capacity, 64)
            self.closed = tuple(np.zeros(size, dtype=t)
                                for t in ("i8", "i8", "f8", "f8", "f8", "f8", "f8"))
            self._closed_capacity = size


@njit
def watched_values(kinds, columns, x, m: int) -> None:
    """``x[i]`` = the value reading ``i``'s kind watches: ``columns[kind]`` (one column per
    kind code; an empty one when the batch lacks that kind's field: NaN)."""
    for i in range(m):
        column = columns[kinds[i]]
        x[i] = column[i] if len(column) > i else np.nan


@njit
def step_batch(c, params, rows, kinds, columns, ts, lon, lat, district, order, watermark: int,
               ceiling: int, size_ms: int, grace_ms: int, panes: int, end_after: int, keep, x,
               run_rows, run_since, run_x, o_rows, o_k, o_n, o_total, o_min, o_max, o_hop, ints,
               floats, count):
    """Fold a batch into state ``c`` and judge what it closes; (late, windows closed, watermark).

    Without readings (``rows`` empty) it advances the state to ``watermark`` instead: the
    windows due then close and silence is judged (``DetectionEngine.advance``).

    Readings move the watermark to their newest time, but not past ``ceiling`` (the worker's
    clock): a sensor whose clock runs ahead then only delays its own windows, instead of
    making every other sensor of the bucket late. Readings late at the watermark before the
    batch (in a bucket's first batch: at the newest reading before each) are counted and
    take part in nothing, flatline runs included (``windows._admit``).

    The steps and their order are ``DetectionEngine.process``'s (its docstring and the
    modules named): positions, late readings, runs of identical readings (before the windows
    move on), folding and closing windows, judging the closed windows, silence, flatline.
    """
    m = len(rows)
    for i in range(m):
        row = rows[i]
        c.lon[row], c.lat[row], c.district[row] = lon[i], lat[i], district[i]
    watched_values(kinds, columns, x, m)
    xs = x[:m]
    late, newest = _admit(ts, xs, keep, watermark, ceiling, size_ms, grace_ms)
    runs = track_runs(c, params, rows, ts, xs, order, keep, size_ms, run_rows, run_since, run_x)
    closed = _fold(c, params, rows, ts, xs, order, keep, size_ms, panes, o_rows, o_k, o_n,
                   o_total, o_min, o_max, o_hop)
    if newest != NO_TS or m == 0:  # no readings: the idle timer moves the watermark
        watermark = max(watermark, newest if m == 0 else min(newest, ceiling))
        closed = _close_due(c, watermark, size_ms, grace_ms, panes, closed, o_rows, o_k, o_n,
                            o_total, o_min, o_max, o_hop)
    judge_windows(c, params, o_rows[:closed], o_k[:closed], o_n[:closed], o_total[:closed],
                  o_min[:closed], o_max[:closed], o_hop[:closed], size_ms, end_after, ints,
                  floats, count)
    judge_silence(c, params, watermark, ints, floats, count)
    judge_flatline(c, params, run_rows[:runs], run_since[:runs], run_x[:runs], watermark, ints,
                   floats, count)
    return late, closed, watermark
