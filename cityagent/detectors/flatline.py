"""Flatline: a stuck sensor repeats exactly the same value, reading after reading.

Counted per sensor as a *run* of identical readings (in event-time order, across window
boundaries): state columns ``run_x`` (the run's value), ``run_since`` (event time of its
first reading) and ``run_n`` (its length). The detector fires as soon as a run reaches
``flat_min_readings`` readings — judged on every batch, like silence, not at a window's
close — so a sensor that freezes mid-window is found ``flat_min_readings - 1`` report
intervals after it froze (30 s at one reading every 10 s), not after the next whole window.
The episode begins at the run's first reading and ends at the first reading that differs;
``flat_x`` keeps the stuck value while it is open, so that the end event can say what it was
(``expected``) next to what the sensor reads now (``observed``).

Only for sensors that normally vary: ``run_hit`` marks, per open window slot (``k % 2``),
the windows in which a run reached ``flat_min_readings``; the baselines learn from it how
often this sensor's windows hold such a run (``flat_frac``), and a sensor where that happens
more often than ``flat_max_fraction`` (a quantised or dry sensor) never flatlines. The
detector waits ``flat_warmup`` windows to learn that. A stuck episode's windows teach it
nothing for ``flat_learn_after_s`` (so a sensor stuck again soon after is found again), then
ten times slower. Severity blue: a maintenance matter.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import njit
from cityagent.detectors.params import FLAT_MAX_FRACTION, FLAT_MIN_READINGS, FLAT_WARMUP
from cityagent.detectors.verdict import F_VALUE, R_FLATLINE, Verdict
from cityagent.state import NO_TS

__all__ = ("track_runs", "flatline_verdict", "is_flat")


@njit
def _same(a: float, b: float) -> bool:
    """Exactly one value (to 1e-12 relative: float noise of a repeated reading)."""
    return abs(a - b) <= 1e-12 * max(1.0, abs(a))


@njit
def track_runs(c, params, rows, ts, x, order, keep, size_ms: int, out_rows, out_since,
               out_x) -> int:
    """Extend each sensor's run of identical readings with a batch (before its windows).

    ``order`` visits the readings per sensor in time order (``np.lexsort((ts, rows))``).
    Readings that are NaN, late (not marked in ``keep``: ``windows._admit``) or not newer
    than the sensor's latest reading (``last_ts``) are ignored. Writes, for each sensor with a newer reading, its row and the start of the
    first run that reached ``flat_min_readings`` in this batch (NO_TS when none did) and
    that run's value to ``out_rows`` / ``out_since`` / ``out_x``; returns how many.
    """
    run_x, run_n, run_since, run_hit, last_ts = c.run_x, c.run_n, c.run_since, c.run_hit, c.last_ts
    m = len(order)
    out = 0
    j = 0
    while j < m:
        row = rows[order[j]]
        end = j
        while end < m and rows[order[end]] == row:
            end += 1
        need = params[row, FLAT_MIN_READINGS]
        prev, n, since = run_x[row], run_n[row], run_since[row]
        hit_since = NO_TS
        hit_x = np.nan
        seen = False
        for q in range(j, end):
            i = order[q]
            if not keep[i] or not np.isfinite(x[i]) or ts[i] <= last_ts[row]:
                continue
            seen = True
            if _same(x[i], prev):
                n += 1.0
            else:
                n, since = 1.0, ts[i]
            prev = x[i]
            if n >= need:
                k = ts[i] // size_ms
                run_hit[row, k % 2] = k
                if hit_since == NO_TS or since < hit_since:
                    hit_since, hit_x = since, prev
        if seen:
            run_x[row], run_n[row], run_since[row] = prev, n, since
            out_rows[out], out_since[out], out_x[out] = row, hit_since, hit_x
            out += 1
        j = end
    return out


@njit
def flatline_verdict(flat_frac: np.ndarray, flat_n: np.ndarray, run_x: np.ndarray,
                     flat_x: np.ndarray, row: int, hit_since: int, hit_x: float, p: np.ndarray,
                     ongoing: bool) -> Verdict:
    """Flatline of a sensor after a batch: did a run reach ``flat_min_readings``?

    Whether the sensor normally varies (``flat_frac``) decides whether a run *starts* an
    episode; an episode (``ongoing``) lasts while the run does. The stuck windows teach
    ``flat_frac`` only after ``flat_learn_after_s``, ten times slower (``baseline.learn``);
    before 2026-11-24 they taught it from the first, and the episode ended once it passed
    ``flat_max_fraction``, ~10 windows into a fault that had not ended.

    ``observed`` is the stuck value (``hit_x``) when a run reached the limit in the batch, else
    the sensor's latest reading: a batch whose run ended before its last reading (a whole
    window of a replay) reported that later reading as the stuck value. ``expected`` is the
    stuck value too, but in the batch that ends an episode, the value it was stuck at
    (``flat_x``, kept while the episode is open; ``judge_flatline``): before 2026-11-24 the
    end event said expected = observed = the latest reading, and the stuck value was lost.
    """
    run = hit_since != NO_TS
    fire = run and (ongoing or (flat_frac[row] <= p[FLAT_MAX_FRACTION]
                                and flat_n[row] >= p[FLAT_WARMUP]))
    score = 0.9 if fire else (0.3 if run else 0.0)
    x = hit_x if run else run_x[row]
    stuck = flat_x[row] if ongoing and not fire and np.isfinite(flat_x[row]) else x
    return Verdict(fire, 0 if fire else -1, score, x, stuck, R_FLATLINE, F_VALUE)


@njit
def is_flat(run_hit: np.ndarray, row: int, k: int) -> bool:
    """Did a run reach ``flat_min_readings`` in window ``k`` of ``row``?"""
    return run_hit[row, k % 2] == k
