"""Judging, compiled: every closed window through the window detectors; flatline; silence.

For each closed window, in the order the windows closed (a sensor's windows in time order):
its features, the verdicts of levels, deviation, change, spike and trend, each verdict's
episode transition, and then learning (the baselines move only after the window was judged
against them). A window of one or two readings that jumped alone is held
(``detectors.deviation``): its levels and its change sum wait for the next window, which
confirms it or leaves the held reading to the spike detector. Flatline is judged per batch
from each sensor's run of identical readings (``detectors.flatline``); silence over every
sensor of the state at the bucket's watermark.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors._jit import fmax, nan_to_num, njit
from cityagent.detectors.baseline import learn
from cityagent.detectors.change import detect_change
from cityagent.detectors.config import DETECTORS
from cityagent.detectors.deviation import detect_deviation
from cityagent.detectors.episodes import EpisodeColumns, step_episodes
from cityagent.detectors.features import Baselines, window_features
from cityagent.detectors.flatline import flatline_verdict
from cityagent.detectors.levels import detect_levels
from cityagent.detectors.params import EXPECTED_INTERVAL_S, SILENCE_FACTOR, SILENCE_MIN_S
from cityagent.detectors.spike import detect_spike
from cityagent.detectors.trend import detect_trend
from cityagent.detectors.verdict import F_QUIET_S, R_DEVIATION_HIGH, R_NONE, R_SILENCE, Verdict
from cityagent.state import NO_TS

__all__ = ("judge_windows", "judge_flatline", "judge_silence")

D_LEVEL = DETECTORS.index("level")
D_DEVIATION = DETECTORS.index("deviation")
D_CHANGE = DETECTORS.index("change")
D_SPIKE = DETECTORS.index("spike")
D_FLATLINE = DETECTORS.index("flatline")
D_SILENCE = DETECTORS.index("silence")
D_TREND = DETECTORS.index("trend")
#: The detectors judged per closed window, in the order of their verdicts.
WINDOW_DETECTORS = (D_LEVEL, D_DEVIATION, D_CHANGE, D_SPIKE, D_TREND)


@njit
def _open_reason(ep: EpisodeColumns, row: int, d: int) -> int:
    """The reason of ``row``'s open episode of detector ``d``; R_NONE when none is open."""
    return np.int64(ep.ep_reason[row, d]) if ep.ep_since[row, d] != NO_TS else R_NONE


@njit
def judge_windows(c, params, rows, k, n, total, vmin, vmax, hop_mean, size_ms: int,
                  end_after: int, ints, floats, count) -> None:
    """Judge closed windows (parallel arrays, one entry per window) against state ``c``."""
    base = Baselines(c.rec_m, c.rec_d, c.rec_n, c.fast_m, c.fast_d, c.tod_m, c.tod_d, c.tod_n,
                     c.quantum, c.gap_ms)
    ep = EpisodeColumns(c.ep_since, c.ep_sev, c.ep_peak, c.ep_clear, c.ep_reason)
    kind, cus_pos, cus_neg, tr_pos, tr_neg = c.kind, c.cus_pos, c.cus_neg, c.tr_pos, c.tr_neg
    flat_frac, flat_n, run_hit = c.flat_frac, c.flat_n, c.run_hit
    for i in range(len(rows)):
        row = rows[i]
        p = params[row]
        f = window_features(base, p, row, k[i], n[i], total[i], vmin[i], vmax[i], size_ms)
        # Which side an open episode is on, so that a window that ends it reports that side
        # (a low-pressure episode ended with the high limit as its expected value).
        level = detect_levels(f, p, kind[row], hop_mean[i], _open_reason(ep, row, D_LEVEL))
        before = c.dev_pend[row]
        deviation, held = detect_deviation(f, p, c.dev_pend, row,
                                           _open_reason(ep, row, D_DEVIATION))
        if held and level.fire:  # one or two readings that jumped: the next window decides
            level = Verdict(False, -1, level.score, level.observed, level.expected,
                            level.reason, level.field)
        confirmed = deviation.fire and (before > f.expected) == (
            deviation.reason == R_DEVIATION_HIGH)
        change = detect_change(cus_pos, cus_neg, row, f, p, held)
        spike = detect_spike(f, p, _open_reason(ep, row, D_SPIKE), before, confirmed)
        trend = detect_trend(tr_pos, tr_neg, row, f, p)
        start, end = f.start_ms, f.end_ms
        step_episodes(ep, row, WINDOW_DETECTORS, (level, deviation, change, spike, trend),
                      start, start, end, end_after, ints, floats, count)
        learn(base, flat_frac, flat_n, run_hit, row, k[i], f, p,
              level.fire or deviation.fire or change.fire or trend.fire,
              ep.ep_since[row, D_FLATLINE])


@njit
def judge_silence(c, params, watermark: int, ints, floats, count) -> None:
    """Silence: a sensor quiet for ``silence_factor`` expected intervals (at least
    ``silence_min_s``), found by event time whenever the bucket's watermark moves (a batch, or
    the idle timer), not on the sensor's own readings: it has none. The interval is the
    registry's, else the kind's ``expected_interval_s`` (60 s for the three city kinds), and
    only where that is 0 (the generic profile) the sensor's learned report interval
    (``windows._learn_interval``: one odd gap, an outage or a very old reading, does not move
    it). Severity blue: a maintenance matter (or a power or network cut)."""
    ep = EpisodeColumns(c.ep_since, c.ep_sev, c.ep_peak, c.ep_clear, c.ep_reason)
    last_ts, gap_ms = c.last_ts, c.gap_ms
    for row in range(len(last_ts)):
        last = last_ts[row]
        was = ep.ep_since[row, D_SILENCE] != NO_TS
        if last == NO_TS and not was:
            continue
        p = params[row]
        configured = p[EXPECTED_INTERVAL_S] * 1000.0
        interval = configured if configured > 0 else gap_ms[row]
        limit = fmax(p[SILENCE_FACTOR] * interval, p[SILENCE_MIN_S] * 1000.0)
        quiet = np.float64(watermark - last) if last != NO_TS else 0.0
        silent = last != NO_TS and np.isfinite(limit) and quiet > limit
        if silent or was:
            # observed: quiet so far; for the end, how long the silence lasted, from the last
            # reading before it (the episode's since) to the reading that ended it (the
            # sensor's latest): before 2026-11-24 it was the quiet time at that reading, ~0 s.
            # Ended with no new reading (a longer limit after a restart): quiet until now.
            since = ep.ep_since[row, D_SILENCE]
            length = quiet
            if was and not silent and last != NO_TS and last > since:
                length = np.float64(last - since)
            # expected: the interval judged against, the learned one where the kind has none
            # (it was the kind's 0, for a start and an end alike)
            v = Verdict(silent, 0 if silent else -1, 0.9 if silent else 0.0, length / 1000.0,
                        nan_to_num(interval / 1000.0), R_SILENCE, F_QUIET_S)
            step_episodes(ep, row, (D_SILENCE,), (v,), last, last, watermark, 1, ints, floats,
                          count)


@njit
def judge_flatline(c, params, rows, hit_since, hit_x, watermark: int, ints, floats, count
                   ) -> None:
    """Flatline after a batch, for the sensors it had newer readings of (``track_runs``): an
    episode starts at the run's first reading and ends with the first batch without one.
    While it is open, ``flat_x`` keeps the stuck value for its end event."""
    ep = EpisodeColumns(c.ep_since, c.ep_sev, c.ep_peak, c.ep_clear, c.ep_reason)
    flat_frac, flat_n, run_x, flat_x = c.flat_frac, c.flat_n, c.run_x, c.flat_x
    for i in range(len(rows)):
        row = rows[i]
        v = flatline_verdict(flat_frac, flat_n, run_x, flat_x, row, hit_since[i], hit_x[i],
                             params[row], ep.ep_since[row, D_FLATLINE] != NO_TS)
        since = hit_since[i] if v.fire else ep.ep_since[row, D_FLATLINE]
        step_episodes(ep, row, (D_FLATLINE,), (v,), since, since, watermark, 1, ints, floats,
                      count)
        if v.fire:
            flat_x[row] = v.observed
        elif ep.ep_since[row, D_FLATLINE] == NO_TS:
            flat_x[row] = np.nan
