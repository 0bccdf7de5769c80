"""The replay's per-row score: per-reading spread, innovations and CUSUM (cityagent.rowscore).

The series are written as ``timestamp,value`` files and replayed with the auto window: every
5 minutes is one reading per window (the NAB case), every 10 s six readings per window.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cityagent import rowscore
from cityagent.replay import read_replay_file, replay
from cityagent.rowscore import (
    RowState,
    autocorrelation,
    change_scores,
    fold,
    innovation_scores,
    residuals,
    spread_of,
)

T0 = datetime(2014, 4, 1, tzinfo=UTC)
WARM = 20  # deviation_warmup: rows scored 0 at the start of a one-reading-per-window series


def scores_of(tmp_path: Path, values, step_s: float = 300.0) -> np.ndarray:
    lines = ["timestamp,value"]
    for i, v in enumerate(values):
        lines.append(f"{T0 + timedelta(seconds=i * step_s):%Y-%m-%d %H:%M:%S},{float(v)!r}")
    path = tmp_path / "series.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    scores = replay(read_replay_file(path)).scores
    assert scores.shape == (len(values),) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    return scores


def first_high(scores: np.ndarray, start: int) -> int:
    """The first row from ``start`` on that scores 0.5 or more."""
    high = np.flatnonzero(scores[start:] >= 0.5)
    assert high.size, "never scored 0.5"
    return start + int(high[0])


# -- end to end -------------------------------------------------------------------------------


@pytest.mark.parametrize("step_s", [300.0, 10.0])
def test_iid_noise_scores_low(tmp_path: Path, step_s: float) -> None:
    # With six readings a window the window scale is over 2x too narrow for single
    # readings; judged by it, ~1.5 % of ordinary readings scored 0.5 or more.
    values = np.random.default_rng(21).normal(10.0, 1.0, 3000)
    s = scores_of(tmp_path, values, step_s)[WARM * 6:]
    assert (s >= 0.5).mean() < 0.003, (s >= 0.5).sum()
    assert np.percentile(s, 95) < 0.25 and s.mean() < 0.08


@pytest.mark.parametrize("delta", [3.0, -3.0, 8.0])
def test_a_step_shows_within_a_few_rows(tmp_path: Path, delta: float) -> None:
    # A shift of 3 sd is half the deviation threshold; the window CUSUM never saw it with one
    # reading per window. The per-reading CUSUM does within a few rows.
    values = np.random.default_rng(5).normal(10.0, 1.0, 300)
    values[200:] += delta
    s = scores_of(tmp_path, values)
    assert s[WARM:200].max() < 0.5
    first = first_high(s, 200)
    assert first <= 205  # CUSUM: (h + 1.17) / (3 - k) = 3.7 rows on average
    assert (s[first:225] >= 0.5).all()


def test_a_step_in_a_dense_series_shows_within_two_windows(tmp_path: Path) -> None:
    values = np.random.default_rng(8).normal(10.0, 1.0, 1200)
    values[900:] += 3.0  # row 900 starts a window (six readings each)
    s = scores_of(tmp_path, values, step_s=10.0)
    assert s[200:900].max() < 0.5
    assert (s[912:960] >= 0.5).mean() > 0.9


def test_a_single_spike_scores_high_at_its_row_only(tmp_path: Path) -> None:
    values = np.random.default_rng(13).normal(10.0, 1.0, 300)
    values[150] += 10.0
    s = scores_of(tmp_path, values)
    assert s[150] > 0.6
    assert np.delete(s, 150).max() < 0.5
    assert s[151:156].max() < 0.4  # the spike does not start a change episode


@pytest.mark.parametrize("value, step_s", [(42.5, 300.0), (0.1, 10.0), (0.0, 300.0),
                                          (-3.3, 10.0)])
def test_a_constant_series_scores_exactly_zero(tmp_path: Path, value: float,
                                               step_s: float) -> None:
    s = scores_of(tmp_path, [value] * 400, step_s)
    assert not np.isnan(s).any() and float(s.max()) == 0.0


def test_a_quantised_series_is_not_alarmed_by_its_steps(tmp_path: Path) -> None:
    # Integer readings that are mostly 10 (sd 0.3): the spread of single readings is about
    # 0.1, but one step is 1; the quantum keeps the step from looking like 8 spreads.
    values = np.round(np.random.default_rng(2).normal(10.0, 0.3, 1000))
    values[700:] += 3.0  # three quanta up: a real shift
    s = scores_of(tmp_path, values)
    assert s[:700].max() < 0.5
    first = first_high(s, 700)
    assert first <= 705 and (s[first:720] >= 0.5).all()


def test_a_coarsely_quantised_noisy_series_scores_like_noise(tmp_path: Path) -> None:
    values = np.round(np.random.default_rng(4).normal(10.0, 2.0, 1000))
    s = scores_of(tmp_path, values)
    assert (s >= 0.5).sum() <= 2 and np.percentile(s, 95) < 0.25


def test_a_shift_in_one_sensor_leaves_the_others_low(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    lines = ["sensor_id,timestamp,value"]
    for i in range(300):
        t = f"{T0 + timedelta(minutes=i):%Y-%m-%dT%H:%M:%SZ}"
        lines.append(f"a,{t},{10 + rng.normal() + (3 if i >= 200 else 0):.4f}")
        lines.append(f"b,{t},{10 + rng.normal():.4f}")
    path = tmp_path / "two.csv"
    path.write_text("\n".join(lines) + "\n")
    inp = read_replay_file(path)
    s = replay(inp).scores
    a, b = s[inp.batch.sensor_id == "a"], s[inp.batch.sensor_id == "b"]
    assert (a[205:230] >= 0.5).all() and b.max() < 0.5


def test_a_daily_cycle_scores_low_and_its_anomaly_high(tmp_path: Path) -> None:
    # A daily sine of 10 sd sampled every 5 minutes: the baseline lags it, and the
    # deviations stay on one side for hours. Judged as independent noise, three rows in four
    # scored 0.5 or more (the CUSUM pinned at its cap) and the anomaly did not stand out.
    rng = np.random.default_rng(2)
    i = np.arange(288 * 14)
    values = 50 + 10 * np.sin(2 * np.pi * i / 288) + rng.normal(0, 1, len(i))
    values[2880:2883] += 15.0
    s = scores_of(tmp_path, values)
    high = np.flatnonzero(s >= 0.5)
    assert set(high) <= {2880, 2881, 2882, 2883}, high  # the anomaly and its drop back
    assert s[2880] > 0.7
    assert np.percentile(s, 95) < 0.2


def test_a_fast_wave_sampled_every_second_scores_low_and_its_burst_high(tmp_path: Path) -> None:
    # Sixty readings a window of a five-minute wave (amplitude 10 sd): the same trap, dense.
    rng = np.random.default_rng(1)
    i = np.arange(3000)
    values = 10 + np.sin(i / 50) + rng.normal(0, 0.1, len(i))
    values[2001:2010] += 8.0
    s = scores_of(tmp_path, values, step_s=1.0)
    assert set(np.flatnonzero(s >= 0.5)) <= set(range(2001, 2011))
    assert s[2001] > 0.9 and (s[2001:2010] >= 0.5).all()


# -- the per-reading state ----------------------------------------------------------------------


def fold_one(st: RowState, x: float, expected: float, scale: float, score: float = 0.0,
             floor: float = 0.0) -> None:
    idx = np.zeros(1, dtype=np.int64)
    xs, exp, sc = np.array([x]), np.array([expected]), np.array([scale])
    fold(st, idx, sc, residuals(st, idx, xs, exp, sc, np.array([floor])),
         np.array([score]))


def learned(sensors: int = 1, spread: float = 1.0, rho: float = 0.0) -> RowState:
    """A state that has seen plenty of readings: spread and innovations' spread ``spread``,
    raw autocorrelation ``rho``."""
    st = RowState.new(sensors)
    st.n[:] = st.inn_n[:] = st.pairs[:] = 500.0
    st.spread[:] = st.inn[:] = spread
    st.var[:] = 1.0
    st.lag[:] = rho
    return st


def test_the_spread_is_a_plain_mean_at_first_and_trusted_after_ten_readings() -> None:
    st = RowState.new(1)
    zero = np.zeros(1, dtype=np.int64)
    for dev in (1.0, 3.0, 2.0):
        fold_one(st, 10.0 + dev, 10.0, np.nan)
        assert np.isnan(spread_of(st, zero)[0])
    assert st.spread[0] == pytest.approx(2.0) and st.n[0] == 3
    for _ in range(7):
        fold_one(st, 12.0, 10.0, np.nan)
    assert spread_of(st, zero)[0] == pytest.approx(2.0)
    # not warm: no CUSUM, no innovations, no autocorrelation learned
    assert (st.pos[0], st.neg[0], st.inn_n[0], st.pairs[0]) == (0.0, 0.0, 0.0, 0.0)


def test_an_anomalous_reading_barely_moves_the_spread() -> None:
    st = learned(spread=1.0)
    fold_one(st, 1000.0, 0.0, 1.25, score=0.99)
    # capped at 4 scales (5.0) and weighted 0.1: 1 + 0.1 * 0.02 * (5 - 1) at most
    assert 1.0 < st.spread[0] < 1.01
    assert 1.0 < st.inn[0] < 1.01
    assert st.pos[0] == pytest.approx(rowscore.U_CLIP - rowscore.CUSUM_K)


def test_readings_of_one_slice_fold_as_their_sum_and_do_not_see_each_other() -> None:
    st = learned(sensors=3, spread=0.8)  # innovations' scale 1.2533 * 0.8 = 1.0026
    idx = np.array([0, 2, 0, 0])
    x = np.array([12.0, 8.0, 13.0, 11.0])
    expected, scale, floor = np.full(4, 10.0), np.ones(4), np.zeros(4)
    r = residuals(st, idx, x, expected, scale, floor)
    z = 2.0 / (1.2533 * 0.8)
    s = change_scores(st, idx, r, scale)
    # each reading: its own innovation on the sums before the slice (all 0)
    q = (z - 0.5) / 8
    assert s[0] == pytest.approx(q**2 / (1 + q**2))
    # a reading's previous deviation is its sensor's reading before it, in the slice too
    assert np.isnan(r.prev[0]) and r.prev[2:].tolist() == [2.0, 3.0] and np.isnan(r.prev[1])
    fold(st, idx, scale, r, np.zeros(4))
    sd = 1.2533 * 0.8
    assert st.pos.tolist() == pytest.approx([(2 / sd - 0.5) + (3 / sd - 0.5) + (1 / sd - 0.5),
                                             0.0, 0.0])
    assert st.neg.tolist() == pytest.approx([0.0, 0.0, 2 / sd - 0.5])
    assert st.n.tolist() == [503.0, 500.0, 501.0]
    keep = (1 - rowscore.SPREAD_RATE) ** 3
    assert st.spread[0] == pytest.approx(keep * 0.8 + (1 - keep) * 2.0)
    assert st.spread[1] == 0.8
    assert st.last_d.tolist()[0] == 1.0 and np.isnan(st.last_d[1]) and st.last_d[2] == -2.0


def test_a_row_without_a_baseline_is_not_learned_from() -> None:
    st = RowState.new(2)
    idx = np.array([0, 1])
    x, expected, scale = np.array([5.0, 5.0]), np.array([np.nan, 4.0]), np.full(2, np.nan)
    fold(st, idx, scale, residuals(st, idx, x, expected, scale, scale),
         np.zeros(2))
    assert st.n.tolist() == [0.0, 1.0] and st.spread.tolist() == [0.0, 1.0]
    x = np.array([5.0, 50.0])
    r = residuals(st, idx, x, expected, scale, scale)
    assert change_scores(st, idx, r, scale).tolist() == [0.0, 0.0]  # no scale: not warm
    assert innovation_scores(r).tolist() == [0.0, 0.0]


def test_the_autocorrelation_is_learned_near_zero_for_noise_and_high_for_a_smooth_series(
        ) -> None:
    rng = np.random.default_rng(9)
    noise, smooth = RowState.new(1), RowState.new(1)
    for t in range(600):
        fold_one(noise, 10.0 + rng.normal(), 10.0, 1.0)
        fold_one(smooth, 10.0 + np.sin(t / 40) + 0.05 * rng.normal(), 10.0, 1.0)
    zero = np.zeros(1, dtype=np.int64)
    assert autocorrelation(noise, zero)[0] == 0.0  # below RHO_MIN: treated as none
    assert noise.lag[0] / noise.var[0] < rowscore.RHO_MIN
    assert autocorrelation(smooth, zero)[0] > 0.95
    # the smooth series' innovations are its noise, far below its deviations
    assert smooth.inn[0] < 0.2 * smooth.spread[0]


def test_an_innovation_is_what_the_previous_deviation_did_not_foretell() -> None:
    st = learned(spread=0.1, rho=0.6)  # used: (0.6 - 0.2) / 0.8 = 0.5
    st.last_d[:] = 4.0
    idx = np.zeros(2, dtype=np.int64)
    x, expected, scale = np.array([12.0, 14.0]), np.full(2, 10.0), np.full(2, 5.0)
    r = residuals(st, idx, x, expected, scale, np.full(2, 0.5))
    assert r.prev.tolist() == [4.0, 2.0]
    assert r.e.tolist() == pytest.approx([2.0 - 0.5 * 4.0, 4.0 - 0.5 * 2.0])
    # the innovations' scale: 1.2533 * 0.1, but never below the floor (0.5)
    assert r.e_scale.tolist() == [0.5, 0.5]
    ratio = np.array([0.0, 3.0 / 0.5 / rowscore.INNOVATION_Z])
    assert innovation_scores(r) == pytest.approx(ratio**2 / (1 + ratio**2))


def test_a_slow_wave_with_one_reading_a_window_scores_low_and_its_shift_high(
        tmp_path: Path) -> None:
    # A wave of 10 sd over ~630 readings, one reading a window: the baseline lags it, so the
    # deviations drift for hours, too slowly for the lag-1 whitening to remove (its learned
    # autocorrelation is ~0.4). The CUSUM of those innovations filled up on two rows in three
    # (every one pinned at 0.692) until it learned to discount a smooth series' drift.
    rng = np.random.default_rng(4)
    i = np.arange(4000)
    values = 10 + np.sin(i / 100) + rng.normal(0, 0.1, len(i))
    values[3000:] += 0.8  # a real shift of 8 sd
    s = scores_of(tmp_path, values, step_s=60.0)
    assert (s[:3000] >= 0.5).mean() < 0.01, (s[:3000] >= 0.5).mean()
    first = first_high(s, 3000)
    assert first <= 3002 and (s[first:first + 10] >= 0.5).all()


def domain_scores(tmp_path: Path, kind: str, field: str, values: list[float]) -> np.ndarray:
    """Per-row scores of one sensor of ``kind`` reading ``values`` an hour apart: every row
    comes before its baseline is warm, so only the domain ladder scores it."""
    lines = [f"sensor_id,kind,timestamp,{field}"]
    lines += [f"s,{kind},{T0 + timedelta(hours=i):%Y-%m-%dT%H:%M:%SZ},{v!r}"
              for i, v in enumerate(values)]
    path = tmp_path / f"{kind}.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    result = replay(read_replay_file(path))
    assert result.cold == len(values)
    return result.scores


def test_pipe_pressure_scores_both_sides_of_its_ladder_as_the_level_detector_does(
        tmp_path: Path) -> None:
    # Floor 0.14, critical 0.07, high 0.80 MPa. A pressure above the high limit scored
    # 0.85 x 0.14 / x (0.13 at 0.9 MPa): only the low side had a per-row score, though the
    # level detector raised pressure.high (yellow) for its windows.
    values = [0.35, 0.80, 0.82, 0.9, 0.35, 0.35, 0.14, 0.13, 0.06, 0.03]
    s = domain_scores(tmp_path, "pipe_pressure", "pressure_mpa", values)
    assert s[0] < 0.5 and s[1] < 0.5 and s[6] < 0.5  # normal, and the limits themselves
    assert 0.7 <= s[2] < s[3] == pytest.approx(0.85)  # yellow: 0.7 at the limit, 0.85 a step on
    assert s[3] <= s[7] < 0.95 <= s[8] <= s[9] < 1.0  # orange below the floor, red below 0.07
    events = replay(read_replay_file(tmp_path / "pipe_pressure.csv")).anomalies
    assert [(a.phase, a.reason, a.severity) for a in events if a.detector == "level"][:2] == [
        ("start", "pressure.high", "yellow"), ("end", "pressure.high", "yellow")]


def test_water_levels_score_the_gauges_ladder_not_a_share_of_its_warning_level(
        tmp_path: Path) -> None:
    # 警戒 4.0, 保证 5.0 (the kind's defaults): blue from 3.5, red (record) at 6.0. The row
    # score was 0.7 x level / 警戒: 0.5 already at 2.86 m, where no level is raised, and a
    # red 6.2 m scored 1.0 next to the level detector's 0.95-1.0.
    values = [2.0, 3.0, 3.5, 4.0, 5.0, 6.0, 6.5]
    s = domain_scores(tmp_path, "water_level", "level_m", values)
    assert s[0] < s[1] < 0.5  # under blue: below the detector's threshold
    assert s[2:6].tolist() == pytest.approx([0.5, 0.7, 0.85, 0.95])  # each rung where it starts
    assert 0.95 < s[6] <= 1.0


# -- the compiled slice scorer ----------------------------------------------------------------


def mixed_fleet(path: Path) -> Path:
    """Sensors of every kind at 10 s, 60 s and 300 s, interleaved: daily cycles, shifts,
    spikes, a quantised and a constant series, a gauge over its 警戒 level, a main under the
    pressure floor and one over its high limit. Every branch of the per-row score runs."""
    rng = np.random.default_rng(7)
    fields = {"generic": "value", "water_level": "level_m", "pipe_pressure": "pressure_mpa",
              "traffic": "speed_kmh"}
    base = {"generic": 5.0, "water_level": 2.0, "pipe_pressure": 0.35, "traffic": 45.0}
    rows = []
    for s in range(16):
        kind = list(fields)[s % 4]
        step = (10, 60, 300)[s % 3]
        t = np.arange(min(3000, 2 * 86400 // step)) * step + int(rng.integers(0, step))
        amp = base[kind] * 0.1
        v = base[kind] + amp * np.sin(t / 86400 * 2 * np.pi) + rng.normal(0, amp * 0.2, len(t))
        if s % 5 == 0:
            v[len(t) // 2:] += amp * 1.5
        if s % 7 == 0:
            v[len(t) // 3] += amp * 8
        if s == 9:
            v = np.round(v, 1)
        if s == 11:
            v[:] = base[kind]
        if s == 1:
            v[2 * len(t) // 3:] += 2.5  # over 警戒 (4.0 m)
        if s == 2:
            v[2 * len(t) // 3:] -= 0.3  # under the 0.14 MPa floor
        if s == 6:
            v[2 * len(t) // 3:] += 0.5  # over the 0.80 MPa high limit
        rows += [(int(ti), f"s{s}", kind, fields[kind], max(float(vi), 0.01))
                 for ti, vi in zip(t.tolist(), v.tolist(), strict=True)]
    rows.sort()
    names = list(fields.values())
    lines = ["sensor_id,kind,timestamp," + ",".join(names)]
    for ti, sensor, kind, name, value in rows:
        cells = [repr(value) if n == name else "" for n in names]
        lines.append(f"{sensor},{kind},{T0 + timedelta(seconds=ti):%Y-%m-%dT%H:%M:%SZ},"
                     + ",".join(cells))
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


@pytest.mark.parametrize("window_s", [None, 600.0])
def test_the_compiled_slice_scorer_scores_as_the_numpy_functions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window_s: float | None) -> None:
    from cityagent import replay as replay_module

    inp = read_replay_file(mixed_fleet(tmp_path / "fleet.csv"))
    compiled = replay(inp, window_s=window_s).scores

    class Reference:
        cold = 0

        def __init__(self, engine, state, rows, sensor_ids) -> None:
            self.args = (engine, state, rows)

        def __call__(self, chunk, sensor, x):
            return rowscore.score_slice_reference(*self.args, chunk, sensor, x)

    monkeypatch.setattr(replay_module, "SliceScorer", Reference)
    reference = replay(inp, window_s=window_s).scores
    assert (reference >= 0.5).sum() > 100 and (reference == 0).sum() > 100
    # The same to the last bits but one: numpy's vectorised power (AVX-512 here) and the C
    # library's, which the kernel calls, can differ in the last place.
    np.testing.assert_allclose(compiled, reference, rtol=0, atol=1e-12)
