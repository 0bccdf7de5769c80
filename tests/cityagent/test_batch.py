from __future__ import annotations

import numpy as np
import pytest

from cityagent.batch import NUM_BUCKETS, ReadingBatch, bucket_of, decode_batch, encode_batch
from cityagent.errors import InvalidBatch
from cityagent.readings import parse_reading


def readings(n: int = 40):
    out = []
    for i in range(n):
        kind = ("traffic", "water_level", "pipe_pressure")[i % 3]
        values = {"traffic": {"speed_kmh": 50.0 + i % 100, "flow_vph": 900.0, "occupancy_pct": 12.5},
                  "water_level": {"level_m": 1.5 + i / 100}, "pipe_pressure": {"pressure_mpa": 0.31}}[kind]
        out.append(parse_reading({"sensor_id": f"s-{i:04d}", "kind": kind, "ts": 1.79e9 + i,
                                  "lon": 117.0 + i / 1000, "lat": 36.6, **values}))
    return out


def test_encode_decode_round_trip_keeps_every_reading() -> None:
    rs = readings()
    batch = ReadingBatch.from_readings(rs, np.arange(len(rs)) + 370100)
    back = decode_batch(encode_batch(batch))
    assert back.readings() == rs
    assert back.district.tolist() == list(range(370100, 370100 + len(rs)))


def test_values_travel_only_for_rows_of_their_kind_and_return_as_nan_elsewhere() -> None:
    batch = ReadingBatch.from_readings(readings(3))
    data = encode_batch(batch)
    assert b"null" not in data and b'"level_m":[1.51]' in data
    back = decode_batch(data)
    assert np.isnan(back.values["level_m"][0]) and back.values["level_m"][1] == 1.51


def test_bucket_is_stable_and_in_range() -> None:
    assert bucket_of("jn-wl-000042") == bucket_of("jn-wl-000042")
    assert all(0 <= bucket_of(f"x{i}") < NUM_BUCKETS for i in range(1000))
    # CRC-32 is fixed by its standard: this value must never change, or sensors move owner.
    assert bucket_of("jn-wl-000042") == 3199939713 % NUM_BUCKETS


def test_split_by_bucket_puts_each_sensor_in_its_own_bucket_only() -> None:
    rs = readings(300) + readings(300)  # every sensor twice
    parts = list(ReadingBatch.from_readings(rs).split_by_bucket(max_rows=7))
    assert sum(len(p) for _, p in parts) == 600
    for key, part in parts:
        assert len(part) <= 7
        assert {f"b{bucket_of(s):03d}" for s in part.sensor_id.tolist()} == {key}


@pytest.mark.parametrize("data, words", [
    (b"not json", "not JSON"),
    (b"[1,2]", "batch object"),
    (b'{"v": 1}', "batch object"),
    (b'{"v": 2, "sensor_id": ["a"]}', "lacks column"),
    (b'{"v":2,"sensor_id":["a",7],"kind":[1,1],"ts_ms":[1,1],"lon":[1,1],"lat":[1,1]}', "list of texts"),
    (b'{"v":2,"sensor_id":[["a"]],"kind":[1],"ts_ms":[1],"lon":[1],"lat":[1]}', "list of texts"),
    (b'{"v":2,"sensor_id":"a","kind":[1],"ts_ms":[1],"lon":[1],"lat":[1]}', "list of texts"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1],"ts_ms":[1,2],"lon":[1],"lat":[1],"level_m":[1]}', "differ in length"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1,1],"ts_ms":[1],"lon":[1],"lat":[1]}', "differ in length"),
    (b'{"v":2,"sensor_id":["a"],"kind":[7],"ts_ms":[1],"lon":[1],"lat":[1]}', "unknown kind"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1],"ts_ms":["x"],"lon":[1],"lat":[1],"level_m":[1]}', "wrong type"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1],"ts_ms":[1],"lon":[1],"lat":[1],"level_m":[1,2]}', "wrong type or length"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1],"ts_ms":[18446744073709551616],"lon":[1],"lat":[1],'
     b'"level_m":[1]}', "beyond 64 bits"),
    (b'{"v":2,"sensor_id":["a"],"kind":[99999999999999999999],"ts_ms":[1],"lon":[1],"lat":[1]}',
     "beyond 64 bits"),
    (b'{"v":2,"sensor_id":["a"],"kind":[1],"ts_ms":[1],"lon":[1],"lat":[1],'
     b'"district":[-99999999999999999999],"level_m":[1]}', "beyond 64 bits"),
])
def test_malformed_batches_are_rejected_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(InvalidBatch, match=words):
        decode_batch(data)


def test_decoded_kind_codes_are_the_detectors_codes_and_follow_take() -> None:
    from cityagent.detectors.config import KIND_CODES

    batch = ReadingBatch.from_readings(readings(6))
    back = decode_batch(encode_batch(batch))
    assert back.codes is not None
    # The detectors use the decoded codes as their own kind codes (detection._kind_codes).
    assert back.codes.tolist() == [KIND_CODES[k] for k in batch.kind.tolist()]
    assert back.kind_codes().tolist() == batch.kind_codes().tolist()
    picked = back.take(np.array([4, 1]))
    assert picked.codes is not None and picked.codes.tolist() == [KIND_CODES["water_level"]] * 2
