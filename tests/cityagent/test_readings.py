from __future__ import annotations

import math

import pytest

from cityagent.errors import InvalidReading
from cityagent.readings import format_ts, parse_reading, parse_ts, shown

GOOD = {"sensor_id": "jn-wl-000042", "kind": "water_level", "ts": "2026-11-22T08:30:00+08:00",
        "lon": 117.02, "lat": 36.66, "level_m": 2.41}
TRAFFIC = {"sensor_id": "qd-tr-1", "kind": "traffic", "ts": 1795307400, "lon": 120.38,
           "lat": 36.07, "speed_kmh": 42.5, "flow_vph": 1320, "occupancy_pct": 18.0}


def test_a_valid_reading_keeps_its_values_and_canonical_time() -> None:
    r = parse_reading(GOOD)
    assert (r.sensor_id, r.kind, r.lon, r.lat) == ("jn-wl-000042", "water_level", 117.02, 36.66)
    assert r.values == {"level_m": 2.41}
    assert r.ts_ms == 1795307400000
    assert r.to_dict()["ts"] == "2026-11-22T00:30:00.000Z"


@pytest.mark.parametrize("ts, expected", [
    ("2026-11-22T00:30:00Z", 1795307400000),
    ("2026-11-22T08:30:00+08:00", 1795307400000),
    ("2026-11-22T00:30:00.250Z", 1795307400250),
    (1795307400, 1795307400000),
    (1795307400.5, 1795307400500),
    (1795307400123, 1795307400123),
    # A leap second (RFC 3339 allows :60) is the second after :59; it was refused.
    ("2016-12-31T23:59:60Z", 1483228800000),
    ("2017-01-01T07:59:60.250+08:00", 1483228800250),
])
def test_time_is_accepted_as_rfc3339_epoch_seconds_or_milliseconds(ts: object, expected: int) -> None:
    assert parse_ts(ts) == expected


def test_format_and_parse_round_trip() -> None:
    assert parse_ts(format_ts(1795307400123)) == 1795307400123


def test_all_three_traffic_values_are_kept() -> None:
    assert parse_reading(TRAFFIC).values == {"speed_kmh": 42.5, "flow_vph": 1320.0, "occupancy_pct": 18.0}


@pytest.mark.parametrize("change, field, words", [
    ({"level_m": math.nan}, "level_m", "finite"),
    ({"level_m": math.inf}, "level_m", "finite"),
    ({"level_m": "2.4"}, "level_m", "must be a number"),
    ({"level_m": True}, "level_m", "must be a number"),
    ({"level_m": None}, "level_m", "must be a number"),
    ({"lon": 200.0}, "lon", "[-180, 180]"),
    ({"lat": math.nan}, "lat", "finite"),
    ({"kind": "noise"}, "kind", "must be one of"),
    ({"sensor_id": ""}, "sensor_id", "sensor_id"),
    ({"sensor_id": 42}, "sensor_id", "sensor_id"),
    ({"ts": "yesterday"}, "ts", "RFC 3339"),
    ({"ts": "2026-11-22T08:30:00"}, "ts", "UTC offset"),
    ({"ts": 12}, "ts", "between 2000 and 2100"),
    ({"ts": True}, "ts", "RFC 3339"),
    ({"ts": math.inf}, "ts", "finite"),
    ({"speed_kmh": 40.0}, "speed_kmh", "does not belong"),
    ({"levle_m": 1.0}, "levle_m", "unknown field"),
    ({"level_m": -1000.0}, "level_m", "must lie in"),
])
def test_bad_values_are_rejected_with_field_and_reason(change: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidReading) as caught:
        parse_reading({**GOOD, **change})
    assert caught.value.field == field
    assert words in caught.value.reason
    assert "jn-wl-000042" in str(caught.value) or field == "sensor_id"


@pytest.mark.parametrize("missing", ["sensor_id", "kind", "ts", "lon", "lat", "level_m"])
def test_a_missing_field_is_named(missing: str) -> None:
    raw = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(InvalidReading) as caught:
        parse_reading(raw)
    assert caught.value.field == missing


def test_a_kind_without_its_value_is_rejected() -> None:
    raw = {k: v for k, v in TRAFFIC.items() if k != "occupancy_pct"}
    with pytest.raises(InvalidReading, match="needs 'occupancy_pct'"):
        parse_reading(raw)


def test_a_non_object_is_rejected() -> None:
    with pytest.raises(InvalidReading, match="JSON object"):
        parse_reading([1, 2])


@pytest.mark.parametrize("sensor_id", ["jn-wl-1\n", "jn-wl-1\r\n", "\njn-wl-1"])
def test_an_id_with_a_line_break_is_refused(sensor_id: str) -> None:
    """``$`` matches before a final newline: "jn-wl-1\\n" was a sensor of its own, and its
    alert titles broke across lines."""
    with pytest.raises(InvalidReading) as info:
        parse_reading({**GOOD, "sensor_id": sensor_id})
    assert info.value.field == "sensor_id"


def test_zone_ids_and_routing_codes_refuse_a_final_newline_too() -> None:
    from cityagent import routing, zones

    assert zones._ZONE_ID.match("z1") and not zones._ZONE_ID.match("z1\n")
    assert routing._CODE.match("water") and not routing._CODE.match("water\n")


def test_swapped_lon_and_lat_are_named_as_the_likely_cause() -> None:
    with pytest.raises(InvalidReading) as info:
        parse_reading({**GOOD, "lon": 36.66, "lat": 117.02})
    assert info.value.field == "lat" and "lon and lat swapped?" in info.value.reason
    with pytest.raises(InvalidReading) as other:
        parse_reading({**GOOD, "lat": 95.0})  # not a swap: no such hint
    assert "swapped" not in other.value.reason


def test_a_shown_value_counts_its_own_characters() -> None:
    """A 200-character id was said to have 202 (its repr's quotes were counted)."""
    assert shown("x" * 200).endswith("... (200 characters)")
    assert shown("x" * 20) == repr("x" * 20)
    assert shown(list(range(100))).endswith(f"({len(repr(list(range(100))))} characters)")
