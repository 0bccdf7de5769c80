"""The replay's per-row score: per-reading spread and CUSUM (cityagent.rowscore), end to end.

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
from cityagent.rowscore import RowState, change_scores, fold, spread_of

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


# -- the per-reading state ----------------------------------------------------------------------


def test_the_spread_is_a_plain_mean_at_first_and_trusted_after_ten_readings() -> None:
    st = RowState.new(1)
    zero = np.zeros(1, dtype=np.int64)
    for dev in (1.0, 3.0, 2.0):
        fold(st, zero, np.array([10.0 + dev]), np.array([10.0]), np.array([np.nan]),
             np.zeros(1))
        assert np.isnan(spread_of(st, zero)[0])
    assert st.spread[0] == pytest.approx(2.0) and st.n[0] == 3
    for _ in range(7):
        fold(st, zero, np.array([12.0]), np.array([10.0]), np.array([np.nan]), np.zeros(1))
    assert spread_of(st, zero)[0] == pytest.approx(2.0)
    assert (st.pos[0], st.neg[0]) == (0.0, 0.0)  # not warm: no CUSUM


def test_an_anomalous_reading_barely_moves_the_spread() -> None:
    st = RowState(np.array([100.0]), np.array([1.0]), np.zeros(1), np.zeros(1))
    zero = np.zeros(1, dtype=np.int64)
    fold(st, zero, np.array([1000.0]), np.array([0.0]), np.array([1.25]), np.array([0.99]))
    # capped at 4 scales (5.0) and weighted 0.1: 1 + 0.1 * 0.02 * (5 - 1) at most
    assert 1.0 < st.spread[0] < 1.01
    assert st.pos[0] == pytest.approx(rowscore.U_CLIP - rowscore.CUSUM_K)


def test_readings_of_one_slice_fold_as_their_sum_and_do_not_see_each_other() -> None:
    st = RowState.new(3)
    st.n[:] = 50.0
    st.spread[:] = 1.0
    idx = np.array([0, 2, 0, 0])
    x = np.array([12.0, 8.0, 13.0, 11.0])
    expected, scale = np.full(4, 10.0), np.ones(4)
    s = change_scores(st, idx, x, expected, scale)
    # each reading: its own residual on the sums before the slice (all 0)
    assert s[0] == pytest.approx(1.5**2 / 8**2 / (1 + 1.5**2 / 8**2))
    fold(st, idx, x, expected, scale, np.zeros(4))
    assert st.pos.tolist() == [(2 - 0.5) + (3 - 0.5) + (1 - 0.5), 0.0, 0.0]
    assert st.neg.tolist() == [0.0, 0.0, 1.5]
    assert st.n.tolist() == [53.0, 50.0, 51.0]
    keep = (1 - rowscore.SPREAD_RATE) ** 3
    assert st.spread[0] == pytest.approx(keep + (1 - keep) * 2.0)
    assert st.spread[1] == 1.0


def test_a_row_without_a_baseline_is_not_learned_from() -> None:
    st = RowState.new(2)
    fold(st, np.array([0, 1]), np.array([5.0, 5.0]), np.array([np.nan, 4.0]),
         np.full(2, np.nan), np.zeros(2))
    assert st.n.tolist() == [0.0, 1.0] and st.spread.tolist() == [0.0, 1.0]
    s = change_scores(st, np.array([0, 1]), np.array([5.0, 50.0]), np.array([np.nan, 4.0]),
                      np.full(2, np.nan))
    assert s.tolist() == [0.0, 0.0]  # no scale: not warm, no score
