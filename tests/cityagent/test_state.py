"""Detection state as bytes: exact round trip, and garbage rejected with ValueError."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from cityagent.batch import ReadingBatch
from cityagent.detection import DetectionEngine
from cityagent.state import COLUMNS, NO_TS, PART_BYTES, BucketState
from tests.cityagent.test_detection import (
    NOISE,
    PROFILES,
    SIZE,
    SMALL,
    T0,
    feed,
    level,
    noisy,
    readings,
    series,
)


def busy_state() -> BucketState:
    """A state with three kinds of sensor, open episodes, late readings and an offset."""
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    rng = np.random.default_rng(2)
    water = noisy(rng, 2.0, 0.01, 8) + [level(3.8)] * 2
    pressure = noisy(rng, 0.3, 0.002, 8) + [level(0.1)] * 2
    for w in range(10):
        t = T0 + w * 10_000
        engine.process(state, readings(
            [("jn-wl-1", "water_level", t + i * 2_000, v) for i, v in enumerate(water[w])]
            + [("jn-pp-1", "pipe_pressure", t + i * 2_000, v) for i, v in enumerate(pressure[w])]
            + [("jn-tr-1", "traffic", t + 500, 30.0 + w)]), now_ms=0)
    engine.process(state, series("jn-wl-1", "water_level", [(T0, 9.0)]), 0)  # late
    state.last_offset = 4711
    state.clock_ms = 1_767_225_600_123
    return state


def test_a_state_round_trips_exactly() -> None:
    state = busy_state()
    assert state.late_total == 1 and len(state) == 3
    assert (state.cols["ep_since"] != NO_TS).any()  # episodes are open
    copy = BucketState.from_bytes(state.to_bytes())
    assert copy.ids == state.ids and copy.index == state.index
    assert (copy.panes, copy.watermark, copy.last_offset, copy.late_total, copy.clock_ms) == (
        state.panes, state.watermark, 4711, 1, 1_767_225_600_123)
    assert set(copy.cols) == set(state.cols) == set(COLUMNS)
    for name, column in state.cols.items():
        assert copy.cols[name].dtype == column.dtype, name
        assert copy.cols[name].shape == column.shape, name
        assert np.array_equal(copy.cols[name], column, equal_nan=True), name
    assert copy.to_bytes() == state.to_bytes()


def test_a_round_tripped_state_is_independent_and_goes_on_the_same_way() -> None:
    state = busy_state()
    copy = BucketState.from_bytes(state.to_bytes())
    assert all(copy.cols[n].flags.writeable for n in copy.cols)
    engine = DetectionEngine(SMALL, PROFILES)
    a = feed(engine, state, "jn-wl-1", "water_level", [level(4.5)] * 2, first=10)
    b = feed(engine, copy, "jn-wl-1", "water_level", [level(4.5)] * 2, first=10)
    assert a and [x.to_dict() for x in a] == [x.to_dict() for x in b]
    copy.cols["rec_m"][:] = 0.0
    assert not np.array_equal(state.cols["rec_m"], copy.cols["rec_m"])


def test_an_empty_state_round_trips() -> None:
    copy = BucketState.from_bytes(BucketState(panes=3).to_bytes())
    assert (len(copy), copy.panes, copy.watermark, copy.late_total, copy.clock_ms) == (
        0, 3, NO_TS, 0, 0)
    assert copy.cols["pane_k"].shape == (0, 3)


def _header(**fields: object) -> bytes:
    head = orjson.dumps(fields)
    return struct.pack("<I", len(head)) + head


GOOD = {"format": 1, "panes": 5, "ids": [], "columns": [], "watermark": 0, "last_offset": -1,
        "late_total": 0}


@pytest.mark.parametrize("data", [
    b"",
    b"abc",
    b"\x05\x00\x00\x00hello",
    bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)),
    _header(format=99),
    _header(hello="world"),
    struct.pack("<I", 2) + b"[]",
])
def test_garbage_is_rejected_with_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        BucketState.from_bytes(data)


def test_a_truncated_checkpoint_is_rejected_with_value_error() -> None:
    data = busy_state().to_bytes()
    with pytest.raises(ValueError):
        BucketState.from_bytes(data[:-100])


@pytest.mark.parametrize("broken", [
    {"columns": ["no_such_column"], "ids": ["a"]},  # a column this version does not know
    {"watermark": None},
    {"ids": 5},
    {"late_total": ...},  # missing
], ids=["unknown-column", "null-watermark", "ids-not-a-list", "missing-late-total"])
def test_a_damaged_header_is_rejected_with_value_error(broken: dict) -> None:
    # The worker catches ValueError to start a bucket afresh; anything else stops it.
    with pytest.raises(ValueError):
        head = {k: v for k, v in {**GOOD, **broken}.items() if v is not ...}
        BucketState.from_bytes(_header(**head))


def test_a_checkpoint_from_before_the_trend_detector_loads_its_episodes_by_name() -> None:
    # Written by the previous version: no "detectors" in the header, ep_* six wide.
    state = busy_state()
    legacy = ("level", "deviation", "change", "spike", "flatline", "silence")
    head = orjson.loads(state.to_bytes()[4 : 4 + struct.unpack_from("<I", state.to_bytes())[0]])
    del head["detectors"]
    names = [n for n in head["columns"] if n not in ("tr_pos", "tr_neg")]
    head["columns"] = names
    cols = {n: (state.cols[n][:, :len(legacy)] if n.startswith("ep_") else state.cols[n])
            for n in names}
    body = b"".join(np.ascontiguousarray(cols[n]).tobytes() for n in names)
    copy = BucketState.from_bytes(_header(**head) + body)
    assert copy.cols["ep_since"].shape == state.cols["ep_since"].shape
    assert np.array_equal(copy.cols["ep_since"][:, :6], state.cols["ep_since"][:, :6])
    assert (copy.cols["ep_since"][:, 6] == NO_TS).all() and (copy.cols["tr_pos"] == 0).all()


# -- checkpoints in parts (a bucket's state can outgrow Kafka's 1 MB record limit) ---------


def fleet_batch(sensors: int, w: int, value: float = 2.0, prefix: str = "jn-wl") -> ReadingBatch:
    """One reading per gauge in window ``w``; gauge i reads ``value`` plus a fixed wiggle."""
    return readings([(f"{prefix}-{i:05d}", "water_level", T0 + w * SIZE + 1_000,
                      value + NOISE[i % len(NOISE)]) for i in range(sensors)])


def fleet_state(sensors: int, windows: int) -> tuple[DetectionEngine, BucketState]:
    engine = DetectionEngine(SMALL, PROFILES)
    state = engine.new_state()
    for w in range(windows):
        engine.process(state, fleet_batch(sensors, w), now_ms=0)
        state.applied(w)
    return engine, state


def assert_same_state(a: BucketState, b: BucketState) -> None:
    assert a.ids == b.ids and a.index == b.index
    assert (a.watermark, a.last_offset, a.late_total, a.clock_ms, a.epoch) == (
        b.watermark, b.last_offset, b.late_total, b.clock_ms, b.epoch)
    for name, column in a.cols.items():
        assert np.array_equal(column, b.cols[name], equal_nan=True), name


def test_a_large_state_is_written_in_parts_under_the_record_limit() -> None:
    _engine, state = fleet_state(3000, 3)
    parts = state.to_parts()
    assert len(parts) == -(-3000 * state.row_bytes() // PART_BYTES) >= 4
    assert max(len(p) for p in parts) <= PART_BYTES < 1_000_000
    assert len(state.to_bytes()) > 2_000_000  # as one record: refused by Kafka and Faust
    assert_same_state(BucketState.from_parts(parts), state)
    # The parts arrive in any order; a one-part checkpoint (to_bytes) is the same state.
    assert_same_state(BucketState.from_parts(parts[::-1]), state)
    assert_same_state(BucketState.from_bytes(state.to_bytes()), state)


def test_an_empty_state_is_one_part() -> None:
    state = BucketState(panes=3)
    (part,) = state.to_parts()
    assert_same_state(BucketState.from_parts([part]), state)


def test_parts_of_two_checkpoints_restore_and_replay_to_the_newer_state() -> None:
    # A worker checkpointed at offset 2, applied messages 3-5 (new gauges among them, one
    # window closed), and died while the parts of its next checkpoint were being sent: only
    # the first part arrived. Replaying 3-5 onto the restored state must give exactly the
    # state the worker had: each message applied once to every row.
    # (360 and 440 gauges: 6 and 7 parts, each away from a part's edge; 400 and 420 were
    # 6 and 7 parts until a column made 400 rows 7 parts too.)
    engine, old = fleet_state(360, 3)
    older_parts = old.to_parts(max_bytes=60_000)
    messages = {3: fleet_batch(440, 3, 2.01), 4: fleet_batch(440, 3, 2.02),
                5: fleet_batch(440, 4, 2.03)}
    for offset, batch in messages.items():
        engine.process(old, batch, now_ms=0)
        old.applied(offset)
    newer = old
    newer_parts = newer.to_parts(max_bytes=60_000)
    assert len(older_parts) >= 3 and len(newer_parts) > len(older_parts)

    restored = BucketState.from_parts([newer_parts[0], *older_parts[1:]])
    assert restored.last_offset == 5 and restored.row_offsets is not None
    assert restored.watermark < newer.watermark  # the older checkpoint's event time
    for offset, batch in messages.items():
        keep = restored.unapplied(batch.sensor_id, offset)
        assert keep is not None and 0 < keep.sum() < len(batch)  # part 0's rows have it
        engine.process(restored, batch.take(keep), now_ms=0)
        restored.applied(offset)
    assert restored.row_offsets is None
    assert_same_state(restored, newer)
    # Past the restore, every message is new again; a redelivery of one it holds is not.
    assert restored.unapplied(messages[5].sensor_id, 6) is None
    assert not restored.unapplied(messages[5].sensor_id, 5).any()


def test_a_checkpoint_written_while_replaying_keeps_each_rows_offset() -> None:
    engine, old = fleet_state(300, 3)
    older_parts = old.to_parts(max_bytes=60_000)
    for offset in (3, 4):
        engine.process(old, fleet_batch(300, offset), now_ms=0)
        old.applied(offset)
    restored = BucketState.from_parts([old.to_parts(max_bytes=60_000)[0], *older_parts[1:]])
    batch = fleet_batch(300, 3)
    engine.process(restored, batch.take(restored.unapplied(batch.sensor_id, 3)), now_ms=0)
    restored.applied(3)
    # Checkpointed now and restored again: part 0's rows are at 4, the others at 3.
    again = BucketState.from_parts(restored.to_parts(max_bytes=60_000))
    assert again.row_offsets is not None
    assert set(again.row_offsets.tolist()) == {3, 4}
    keep = again.unapplied(fleet_batch(300, 4).sensor_id, 4)
    assert keep is not None and keep.any() and not keep.all()


def test_parts_of_an_earlier_life_of_the_bucket_are_ignored() -> None:
    # A checkpoint was unreadable, so the bucket started afresh (new epoch) with fewer
    # sensors: the old parts after its first one are still in the table, and must not be
    # taken for this state's.
    _engine, old = fleet_state(400, 2)
    stale = old.to_parts(max_bytes=60_000)
    _engine, fresh = fleet_state(50, 2)
    restored = BucketState.from_parts([*fresh.to_parts(max_bytes=60_000), *stale[1:]])
    assert_same_state(restored, fresh)


def test_parts_that_do_not_fit_together_are_rejected_with_value_error() -> None:
    _engine, state = fleet_state(400, 2)
    parts = state.to_parts(max_bytes=60_000)
    with pytest.raises(ValueError, match="do not fit"):
        BucketState.from_parts([parts[0], parts[2]])  # part 1 missing in the middle
