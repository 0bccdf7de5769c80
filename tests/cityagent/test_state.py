"""Detection state as bytes: exact round trip, and garbage rejected with ValueError."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from cityagent.detection import DetectionEngine
from cityagent.state import COLUMNS, NO_TS, BucketState
from tests.cityagent.test_detection import (
    PROFILES,
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
