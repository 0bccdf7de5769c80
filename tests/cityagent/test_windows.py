"""Event-time windows: closing on the bucket's watermark, grace, late readings, hopping panes."""

from __future__ import annotations

import numpy as np

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import WindowConfig
from cityagent.state import NO_TS, BucketState
from cityagent.windows import add_readings, close_due, hopping_mean
from tests.cityagent.test_detection import SIZE, SMALL, T0, readings, series

GRACE = 2_000
CFG = WindowConfig(size_ms=SIZE, grace_ms=GRACE, hopping_panes=3)
K0 = T0 // SIZE  # the window index of T0


def running(at: int = T0) -> BucketState:
    """A bucket whose event time an earlier batch has set to ``at``."""
    state = BucketState(panes=3)
    state.watermark = at
    return state


def fold(state: BucketState, sensor: str, points: list[tuple[int, float]]):
    rows, _ = state.rows_of(np.array([sensor] * len(points)))
    ts = np.array([t for t, _ in points], dtype=np.int64)
    x = np.array([v for _, v in points], dtype=np.float64)
    return add_readings(state, rows, ts, x, CFG)


def test_a_window_closes_only_when_the_watermark_reaches_its_end_plus_grace() -> None:
    state = BucketState(panes=3)
    late, closed = fold(state, "a", [(T0 + 1_000, 1.0), (T0 + 9_000, 3.0)])
    assert (late, len(closed)) == (0, 0)
    # the next window has begun, but window 0 is still within its grace
    late, closed = fold(state, "a", [(T0 + SIZE + GRACE - 1, 5.0)])
    assert (late, len(closed)) == (0, 0)
    assert len(close_due(state, T0 + SIZE + GRACE - 1, CFG)) == 0
    closed = close_due(state, T0 + SIZE + GRACE, CFG)
    assert closed.k.tolist() == [K0]
    assert (closed.n[0], closed.total[0], closed.vmin[0], closed.vmax[0]) == (2, 4.0, 1.0, 3.0)
    assert len(close_due(state, T0 + SIZE + GRACE, CFG)) == 0  # closed once only


def test_a_reading_within_grace_is_folded_into_its_window() -> None:
    state = BucketState(panes=3)
    fold(state, "a", [(T0 + 1_000, 1.0)])
    fold(state, "b", [(T0 + SIZE + 1_000, 7.0)])  # the watermark is past window 0's end
    late, closed = fold(state, "a", [(T0 + 9_500, 2.0)])  # ... but not past its grace
    assert (late, len(closed)) == (0, 0)
    assert state.late_total == 0
    closed = close_due(state, T0 + SIZE + GRACE, CFG)
    a = closed.rows == state.index["a"]
    assert closed.n[a].tolist() == [2] and closed.total[a].tolist() == [3.0]


def test_a_silent_sensors_window_closes_when_other_sensors_advance_the_watermark() -> None:
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    engine.process(state, readings([("quiet", "water_level", T0 + 1_000, 1.0),
                                    ("busy", "water_level", T0 + 2_000, 1.0)]), now_ms=0)
    result = engine.process(state, series("busy", "water_level", [(T0 + SIZE + 1_000, 1.0)]), 0)
    assert result.windows == 0
    result = engine.process(state, series("busy", "water_level", [(T0 + SIZE + GRACE, 1.0)]), 0)
    assert result.windows == 2  # "quiet" has sent nothing since, its window still closed
    assert state.cols["win_k"][state.index["quiet"]].tolist() == [-1, -1]
    assert state.cols["rec_n"][state.index["quiet"]] == 1  # and it was judged


def test_advance_closes_windows_without_readings() -> None:
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    assert engine.advance(state, T0, 0).windows == 0  # an empty bucket has no event time
    assert state.watermark == NO_TS
    engine.process(state, series("a", "water_level", [(T0 + 1_000, 1.0), (T0 + SIZE + 1, 2.0)]),
                   0)
    assert engine.advance(state, T0 + SIZE + GRACE - 1, 0).windows == 0
    assert engine.advance(state, T0 + SIZE + GRACE, 0).windows == 1
    assert state.watermark == T0 + SIZE + GRACE
    assert engine.advance(state, T0, 0).windows == 0  # event time never goes back
    assert state.watermark == T0 + SIZE + GRACE
    assert engine.advance(state, T0 + 5 * SIZE, 0).windows == 1
    assert engine.advance(state, T0 + 9 * SIZE, 0).windows == 0


def test_a_reading_after_its_window_closed_is_late_and_changes_nothing() -> None:
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    engine.process(state, series("a", "water_level", [(T0 + 1_000, 1.0), (T0 + 2_000, 3.0)]), 0)
    closing = engine.process(state, series("b", "water_level", [(T0 + SIZE + GRACE, 0.5)]), 0)
    assert closing.windows == 1
    row = state.index["a"]
    pane = K0 % state.panes
    assert (state.cols["pane_k"][row, pane], state.cols["pane_n"][row, pane],
            state.cols["pane_sum"][row, pane]) == (K0, 2, 4.0)
    baseline = state.cols["rec_m"][row]

    result = engine.process(state, series("a", "water_level", [(T0 + 3_000, 100.0),
                                                                (T0 + 9_999, 100.0)]), 0)
    assert (result.late, result.windows, result.anomalies) == (2, 0, [])
    assert state.late_total == 2
    assert (state.cols["pane_n"][row, pane], state.cols["pane_sum"][row, pane]) == (2, 4.0)
    assert state.cols["rec_m"][row] == baseline
    assert state.cols["win_k"][row].tolist() == [-1, -1]  # no window reopened
    assert engine.advance(state, T0 + 9 * SIZE, 0).windows == 1  # only b's window is open

    again = engine.process(state, series("a", "water_level", [(T0 + SIZE, 1.0)]), 0)
    assert again.late == 1 and state.late_total == 3  # counted per reading, cumulatively


def test_hopping_mean_covers_the_last_panes_windows() -> None:
    state = BucketState(panes=3)
    means = []
    for i, v in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):
        _, closed = fold(state, "a", [(T0 + i * SIZE, v), (T0 + i * SIZE + 5_000, v)])
        if len(closed):
            means.append((int(closed.k[0] - K0), float(hopping_mean(state, closed.rows,
                                                                    closed.k)[0])))
    assert means == [(0, 10.0), (1, 15.0), (2, 20.0), (3, 30.0)]


def test_hopping_mean_skips_panes_outside_the_hop() -> None:
    state = BucketState(panes=3)
    fold(state, "a", [(T0, 10.0)])
    fold(state, "a", [(T0 + 3 * SIZE, 20.0)])  # windows 1 and 2 had no readings
    _, closed = fold(state, "a", [(T0 + 6 * SIZE, 90.0)])
    assert (closed.k - K0).tolist() == [3]
    assert hopping_mean(state, closed.rows, closed.k).tolist() == [20.0]  # window 0 is too old


def test_hopping_means_are_right_when_several_windows_close_at_once() -> None:
    # A backlog (a sensor uploading minutes of buffered readings in one batch) closes several
    # windows of one sensor in one call; the engine judges them after all have closed.
    state = running()
    points = [(T0 + i * SIZE, v) for i, v in enumerate([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])]
    _, closed = fold(state, "a", points)
    assert (closed.k - K0).tolist() == [0, 1, 2, 3]
    # Each closed window carries the hopping mean as it was when it closed, in window order.
    assert closed.hop_mean.tolist() == [10.0, 15.0, 20.0, 30.0]


def test_a_sensor_has_at_most_two_open_windows() -> None:
    state = running()
    _, closed = fold(state, "a", [(T0, 1.0), (T0 + SIZE, 2.0), (T0 + 2 * SIZE + 1, 3.0)])
    assert (closed.k - K0).tolist() == [0]
    assert sorted(state.cols["win_k"][0].tolist()) == [K0 + 1, K0 + 2]


# -- a bucket's first batch -------------------------------------------------------------------

HOUR = 3_600_000


def test_a_fresh_buckets_first_batch_judges_each_reading_against_those_before_it() -> None:
    # No event time yet (a worker's first batch of the bucket, no checkpoint): each reading
    # is judged against the newest one that came before it in the batch, as if each had come
    # in a message of its own, so what would be late one batch later is late now.
    state = BucketState(panes=3)
    late, closed = fold(state, "a", [(T0 + 5 * SIZE, 2.0), (T0, 1.0),
                                     (T0 + 4 * SIZE + GRACE, 3.0)])
    assert (late, len(closed)) == (1, 0)  # T0's window closed at T0 + SIZE + GRACE
    assert state.late_total == 1
    assert sorted(state.cols["win_k"][0].tolist()) == [K0 + 4, K0 + 5]
    assert state.watermark == T0 + 5 * SIZE


def level_batch(order: int):
    """A worker's first batch: a gauge's fresh reading, then (``order`` 1) two readings 3 h
    old above 警戒 (4 m), one of another gauge; ``order`` -1: the other way round."""
    return readings([("fresh", "water_level", T0 - 2_000, 2.0),
                     ("old", "water_level", T0 - 3 * HOUR, 4.6),
                     ("fresh", "water_level", T0 - 3 * HOUR + 1_000, 4.7)][::order])


def test_an_hours_old_reading_after_a_fresh_one_in_a_first_batch_is_late() -> None:
    # Before: both 3 h old readings opened and closed windows of their own, each raised a
    # yellow water.warning dated 3 h back, and "old" a silence start dated 3 h back; one
    # batch later the same readings were late. Now they are late in the first batch too.
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    result = engine.process(state, level_batch(1), T0, watermark_limit_ms=T0)
    assert (result.late, result.windows, result.anomalies) == (2, 0, [])
    assert state.watermark == T0 - 2_000
    assert state.cols["last_ts"][state.index["fresh"]] == T0 - 2_000
    later = engine.new_state()
    engine.process(later, readings([("other", "water_level", T0 - 5_000, 2.0)]), T0,
                   watermark_limit_ms=T0)
    result = engine.process(later, level_batch(1), T0, watermark_limit_ms=T0)
    assert (result.late, result.windows, result.anomalies) == (2, 0, [])
    # Coming first, in time order, they are taken as history starting 3 h back: the same as
    # if they had come a message earlier (the limit: docs/detection.md, Windows).
    state = engine.new_state()
    result = engine.process(state, level_batch(-1), T0, watermark_limit_ms=T0)
    assert result.late == 0
    assert {(a.sensor_id, a.reason) for a in result.anomalies} >= {
        ("old", "water.warning"), ("fresh", "water.warning")}


def test_a_fresh_buckets_clock_goes_no_further_than_the_worker_clock() -> None:
    # A first batch whose newest reading is ahead of the worker's clock (within the future
    # tolerance) moves the clock no further than the clock, as the bucket's event time.
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    batch = series("a", "water_level", [(T0 + 3 * SIZE, 1.0), (T0 + SIZE + 1_000, 1.0),
                                        (T0, 1.0)])
    result = engine.process(state, batch, 0, watermark_limit_ms=T0 + SIZE + GRACE)
    assert result.late == 1  # T0's window closed at T0 + SIZE + GRACE, the clock
    assert state.watermark == T0 + SIZE + GRACE


def test_a_backfill_in_time_order_into_a_fresh_bucket_loses_nothing() -> None:
    # History sent in order: a window or less a batch (cityagent replay's slices, eval's
    # ticks), or many windows in the first batch (cityagent bench's small workloads, a
    # device posting its history).
    engine = DetectionEngine(SMALL)
    points = [(T0 + w * SIZE + i * 2_500, 1.0 + 0.01 * i) for w in range(6) for i in range(4)]
    state = engine.new_state()
    late = windows = 0
    for w in range(6):
        result = engine.process(state, series("a", "water_level", points[4 * w:4 * w + 4]), 0)
        late, windows = late + result.late, windows + result.windows
    assert (late, windows) == (0, 5)
    state = engine.new_state()
    result = engine.process(state, series("a", "water_level", points), 0)
    assert (result.late, result.windows) == (0, 5)


def test_late_readings_do_not_extend_a_sensors_run_of_identical_readings() -> None:
    # Late readings take part in nothing: before, four late repeats of a's value newer than
    # its latest reading lengthened its flatline run to 5, although no window took them.
    engine = DetectionEngine(SMALL)
    state = engine.new_state()
    engine.process(state, series("a", "water_level", [(T0, 1.0)]), 0)
    engine.process(state, series("b", "water_level", [(T0 + 5 * SIZE, 1.0)]), 0)
    row = state.index["a"]
    assert state.cols["run_n"][row] == 1
    result = engine.process(state, series("a", "water_level", [
        (T0 + SIZE + i * 1_000, 1.0) for i in range(4)]), 0)
    assert result.late == 4
    assert state.cols["run_n"][row] == 1
    assert state.cols["last_ts"][row] == T0
