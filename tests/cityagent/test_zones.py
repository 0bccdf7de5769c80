"""Operational zones: validation errors that say what is wrong, versioned sets, the point index."""

from __future__ import annotations

import copy
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import shapely

from cityagent.alerting_eval import zone_agreement
from cityagent.errors import ConfigError
from cityagent.regions import default_regions
from cityagent.zones import (
    DEMO_ZONES_FILE,
    MAX_VERSION,
    ZONE_KINDS,
    ZoneError,
    ZoneIndex,
    ZoneSet,
    apply_record,
    area_m2,
    delete_record,
    demo_zones,
    parse_zone,
    zone_record,
)


def box(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Polygon",
            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def feature(zone_id: str = "t-flood", geometry: dict | None = None, **props) -> dict:
    """A valid zone in 历下区, 济南, unless overridden."""
    properties = {"zone_id": zone_id, "name": "测试易涝区", "zone_kind": "flood_risk",
                  "department": "water", "severity_adjust": 1, **props}
    return {"type": "Feature", "properties": {k: v for k, v in properties.items()
                                              if v is not None},
            "geometry": geometry or box(117.05, 36.64, 117.06, 36.65)}


def fc(*features: dict, **members) -> dict:
    return {"type": "FeatureCollection", "features": list(features), **members}


# -- parsing ------------------------------------------------------------------------------


def test_a_valid_zone_is_parsed_with_its_area_and_box() -> None:
    zone = parse_zone(feature(source="test"))
    assert (zone.zone_id, zone.zone_kind, zone.department, zone.severity_adjust) == (
        "t-flood", "flood_risk", "water", 1)
    assert zone.name_en == "测试易涝区"  # defaults to the Chinese name
    assert zone.bbox == pytest.approx((117.05, 36.64, 117.06, 36.65))
    # 0.01° x 0.01° at 36.645° N in the local equirectangular projection.
    expected = 0.01 * 111_320 * math.cos(math.radians(36.645)) * 0.01 * 110_574
    assert zone.area_m2 == pytest.approx(expected, rel=1e-3)
    assert zone.properties == {"source": "test"}
    assert zone.kind_names == ZONE_KINDS["flood_risk"]


def test_area_agrees_with_a_geodesic_reference_within_half_a_percent() -> None:
    # 1 km x 1 km near Jinan: lat step 1/110.574 km, lon step 1/(111.32 cos φ) km.
    lat = 36.65
    dy = 1 / 110.574
    dx = 1 / (111.32 * math.cos(math.radians(lat)))
    square = shapely.box(117.0, lat - dy / 2, 117.0 + dx, lat + dy / 2)
    assert area_m2(square) == pytest.approx(1e6, rel=5e-3)


def test_a_multipolygon_zone_is_accepted() -> None:
    a, b = box(117.05, 36.64, 117.052, 36.642), box(117.06, 36.64, 117.062, 36.642)
    multi = {"type": "MultiPolygon", "coordinates": [a["coordinates"], b["coordinates"]]}
    zone = parse_zone(feature(geometry=multi))
    assert zone.geometry.geom_type == "MultiPolygon"


BOWTIE = {"type": "Polygon", "coordinates": [[[117.05, 36.64], [117.06, 36.65],
                                              [117.06, 36.64], [117.05, 36.65],
                                              [117.05, 36.64]]]}


@pytest.mark.parametrize(("feat", "prop", "words"), [
    (feature(geometry=BOWTIE), "geometry", ["not valid", "Self-intersection"]),
    (feature(geometry=box(116.30, 39.90, 116.35, 39.95)), "geometry",
     ["inside Shandong", "got 0.0%"]),  # Beijing
    (feature(geometry=box(36.64, 117.05, 36.65, 117.06)), "geometry",
     ["look like lat/lon", "GeoJSON wants lon, lat"]),
    (feature(geometry=box(117.05, 36.64, 117.05005, 36.64005)), "geometry",
     ["the area of zone 't-flood' (feature #4) must be between 100 m²", "got 25 m²"]),
    (feature(geometry=box(116.0, 35.5, 119.0, 37.5)), "geometry",
     ["area of zone 't-flood' (feature #4) must be between", "5000 km²"]),
    (feature(geometry={"type": "Point", "coordinates": [117.05, 36.64]}), "geometry",
     ["Polygon or MultiPolygon", "'Point'"]),
    (feature(geometry={"type": "Polygon", "coordinates": [[[117.05, 36.64], [117.06, 36.64],
                                                           [117.05, 36.64]]]}),
     "geometry", ["not valid", "Too few points"]),
    (feature(geometry={"type": "Polygon", "coordinates": [[[117.05, 36.64], [117.06, 36.64]]]}),
     "geometry", ["cannot be built", "at least 4 coordinates"]),
    (feature(geometry={"type": "Polygon", "coordinates": [[117.05, 36.64]]}),
     "geometry", ["cannot be built"]),
    (feature(geometry={"type": "Polygon", "coordinates": []}), "geometry", ["empty"]),
    (feature(geometry=box(117.05, 36.64, 200.0, 36.65)), "geometry", ["out of range"]),
    (feature(zone_id=None), "zone_id", ["property 'zone_id' of feature #4 is missing"]),
    (feature(zone_id="bad id!"), "zone_id", ["property 'zone_id' of feature #4 must be", "'bad id!'"]),
    (feature(name=""), "name", ["property 'name' of zone 't-flood' (feature #4) must be non-empty"]),
    (feature(department="waterworks"), "department", ["property 'department' of zone 't-flood' (feature #4) must be one of",
                                                      "got 'waterworks'"]),
    (feature(department=None), "department", ["'department'", "got None"]),
    (feature(zone_kind="flood_risks"), "zone_kind", ["typo of 'flood_risk'"]),
    (feature(zone_kind="Flood Risk"), "zone_kind", ["snake_case", "'Flood Risk'"]),
    (feature(severity_adjust=3), "severity_adjust", ["from -2 to 2", "got 3"]),
    (feature(severity_adjust=True), "severity_adjust", ["whole number", "got True"]),
    (feature(severity_adjust=0.5), "severity_adjust", ["got 0.5"]),
])
def test_each_invalid_zone_is_rejected_naming_the_property(feat: dict, prop: str,
                                                           words: list[str]) -> None:
    with pytest.raises(ZoneError) as caught:
        parse_zone(feat, index=4)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.property == prop
    message = str(error)
    # One sentence naming the field and the zone: "property 'name' of zone 't-flood'
    # (feature #4) must be ...", not "zone feature #4 ('t-flood'): property 'name' must be".
    assert not message.startswith(("zone:", "zone feature", "zone (")), message
    assert "(feature #4)" in message if prop != "zone_id" else "of feature #4 " in message
    for word in words:
        assert word in message, message
    if prop != "zone_id":
        assert "zone 't-flood' (feature #4)" in message  # named when its id is known
    if prop not in ("geometry",):
        assert message.startswith(f"property {prop!r} of "), message


def test_not_a_feature_is_rejected() -> None:
    with pytest.raises(ZoneError, match="^the zone must be a GeoJSON Feature; got "
                                        "'FeatureCollection'$"):
        parse_zone(fc())
    with pytest.raises(ZoneError, match="^'properties' of the zone must be an object"):
        parse_zone({"type": "Feature", "geometry": box(117.05, 36.64, 117.06, 36.65)})


def test_custom_snake_case_kinds_are_allowed() -> None:
    assert parse_zone(feature(zone_kind="stadium")).kind_names == ("stadium", "stadium")


def test_department_codes_can_be_given() -> None:
    zone = parse_zone(feature(department="drainage"), departments={"drainage"})
    assert zone.department == "drainage"


def test_a_zone_on_the_coast_may_stick_out_a_little_but_not_much() -> None:
    regions = default_regions()
    jinan = regions.polygons[regions.district_index("370102")]
    x0, y0, x1, y1 = jinan.bounds
    # A thin box straddling 历下区's edge to the east is mostly inside the province.
    assert parse_zone(feature(geometry=box(x1 - 0.02, 36.65, x1 - 0.0199, 36.651)))
    with pytest.raises(ZoneError, match="inside Shandong"):  # half in the Yellow Sea
        parse_zone(feature(geometry=box(122.6, 37.0, 122.8, 37.1)))


# -- sets, versions, records ------------------------------------------------------------------


def test_a_collection_loads_with_its_version_and_rejects_duplicates(tmp_path: Path) -> None:
    zones = ZoneSet.from_geojson(fc(feature("a"), feature("b", department="transport"),
                                    version=7))
    assert list(zones.zones) == ["a", "b"]
    assert zones.version == 7 and {z.version for z in zones.zones.values()} == {7}
    with pytest.raises(ZoneError, match=r"^property 'zone_id' of zone 'a' \(feature #1\) is "
                                        "that of an earlier feature too"):
        ZoneSet.from_geojson(fc(feature("a"), feature("a")))
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(fc(feature("a"), feature("b", department="nobody"))))
    with pytest.raises(ZoneError) as caught:
        ZoneSet.load(path)
    assert str(caught.value).startswith(
        f"{path}: property 'department' of zone 'b' (feature #1) must be one of")
    with pytest.raises(ZoneError, match="cannot read zones from"):
        ZoneSet.load(tmp_path / "missing.geojson")
    with pytest.raises(ZoneError, match="FeatureCollection"):
        ZoneSet.from_geojson(feature())


def test_a_zones_file_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    """GeoJSON saved as GBK (a Chinese zone name) ended the worker and the API in a
    UnicodeDecodeError traceback; now it is the one-line ZoneError they print."""
    path = tmp_path / "zones.geojson"
    path.write_bytes(json.dumps(fc(feature("a", name="易涝区")), ensure_ascii=False)
                     .encode("gbk"))
    with pytest.raises(ZoneError, match=f"cannot read zones from {path}: not UTF-8 text"):
        ZoneSet.load(path)


def test_upsert_and_delete_make_new_versions_and_the_hash_follows_content() -> None:
    empty = ZoneSet()
    one = empty.upsert(parse_zone(feature("a")))
    assert (empty.version, one.version, len(empty), len(one)) == (0, 1, 0, 1)
    assert one.upsert(parse_zone(feature("a"))) is one  # nothing changed: same set
    two = one.upsert(parse_zone(feature("a", severity_adjust=2)))
    assert two.version == 2 and two["a"].severity_adjust == 2 and two["a"].version == 2
    assert two.content_hash != one.content_hash
    back = two.upsert(parse_zone(feature("a")))
    assert back.version == 3 and back.content_hash == one.content_hash
    gone = back.delete("a")
    assert gone.version == 4 and "a" not in gone and gone.content_hash == empty.content_hash
    assert gone.delete("a") is gone


def test_feature_collection_round_trip() -> None:
    zones = demo_zones()
    again = ZoneSet.from_geojson(json.loads(json.dumps(zones.to_feature_collection())))
    assert again.content_hash == zones.content_hash and again.version == zones.version


def test_zone_records_rebuild_the_same_set_and_ignore_stale_ones() -> None:
    source = ZoneSet().upsert(parse_zone(feature("a"))).upsert(parse_zone(feature("b")))
    source = source.upsert(parse_zone(feature("a", severity_adjust=-1)))
    records = [zone_record(z) for z in source.zones.values()]
    assert records[0][0] == "a" and records[0][1]["version"] == 3
    rebuilt = ZoneSet()
    for key, value in records:
        rebuilt = apply_record(rebuilt, key, json.loads(json.dumps(value)))
    assert rebuilt.content_hash == source.content_hash and rebuilt.version == 3
    # Re-reading an older record of "a" (version 1) changes nothing.
    stale = zone_record(parse_zone(feature("a")))[1] | {"version": 1}
    assert apply_record(rebuilt, "a", stale) is rebuilt
    deleted = apply_record(rebuilt, *delete_record("a", 4))
    assert "a" not in deleted and deleted.version == 4
    tomb = apply_record(rebuilt, "b", None)
    assert "b" not in tomb and "a" in tomb


def test_of_two_records_of_one_version_the_later_stands_as_after_compaction() -> None:
    # Two API replicas change zone "a" at once: both write version 2. A reader of the whole
    # log and a reader started after compaction (which keeps the last record) must agree.
    base = apply_record(ZoneSet(), *zone_record(parse_zone(feature("a"))))
    first = zone_record(parse_zone(feature("a", severity_adjust=-1)))[1] | {"version": 2}
    second = zone_record(parse_zone(feature("a", severity_adjust=2)))[1] | {"version": 2}
    whole_log = apply_record(apply_record(base, "a", first), "a", second)
    compacted = apply_record(ZoneSet(), "a", second)
    assert whole_log["a"].severity_adjust == compacted["a"].severity_adjust == 2
    assert whole_log.content_hash == compacted.content_hash and whole_log.version == 2


@pytest.mark.parametrize(("key", "value", "words"), [
    ("x", {"feature": feature("a")}, "must be null or"),
    ("a", {"version": -1, "feature": feature("a")}, "^'version' of zones-topic record 'a' must be a whole number"),
    ("x", {"version": 1, "feature": feature("a")}, "^zones-topic record 'x' holds zone 'a'; a record's key must be"),
    ("a", {"version": 1, "feature": feature("a", department="nobody")}, "'department'"),
])
def test_bad_zone_records_are_rejected(key: str, value: dict, words: str) -> None:
    with pytest.raises(ZoneError, match=words):
        apply_record(ZoneSet(), key, value)


# -- the demo zones and the index -----------------------------------------------------------


def test_the_demo_zones_are_synthetic_and_cover_the_scenarios_cities() -> None:
    zones = demo_zones()
    assert 10 <= len(zones) <= 20
    raw = json.loads(resources.files("cityagent.data").joinpath(DEMO_ZONES_FILE)
                     .read_text("utf-8"))
    assert "SYNTHETIC" in raw["description"]
    assert {z.properties["source"] for z in zones.zones.values()} == {"synthetic demo"}
    assert set(ZONE_KINDS) <= {z.zone_kind for z in zones.zones.values()}
    regions = default_regions()
    points = [z.geometry.representative_point() for z in zones.zones.values()]
    cities = set(regions.city_codes(regions.locate([p.x for p in points],
                                                   [p.y for p in points])).tolist())
    assert cities == {"370100", "370200", "371300"}  # 济南, 青岛, 临沂


def test_zones_at_lists_the_most_specific_zone_first() -> None:
    index = ZoneIndex(demo_zones())
    inside_both = index.zones_of(117.020, 36.709)  # 北园 underpass in the 小清河 flood zone
    assert [z.zone_id for z in inside_both] == ["jn-underpass-beiyuan", "jn-flood-xiaoqing"]
    found = index.zones_at(np.array([117.020, np.nan, 100.0]), np.array([36.709, 36.7, 30.0]))
    assert index.ids(found[0]) == ("jn-underpass-beiyuan", "jn-flood-xiaoqing")
    assert found[1:] == [(), ()]
    assert ZoneIndex(ZoneSet()).zones_at(np.array([117.0]), np.array([36.6])) == [()]


def test_zones_at_agrees_with_shapely_on_100k_random_points() -> None:
    index = ZoneIndex(demo_zones())
    rng = np.random.default_rng(5)
    n = 100_000
    # Half near the zones (edges included), half anywhere in the province's box.
    boxes = np.array([z.bbox for z in index.zones])[rng.integers(len(index), size=n // 2)]
    x = np.r_[rng.uniform(boxes[:, 0] - 0.01, boxes[:, 2] + 0.01), rng.uniform(114.8, 122.7,
                                                                              n // 2)]
    y = np.r_[rng.uniform(boxes[:, 1] - 0.01, boxes[:, 3] + 0.01), rng.uniform(34.4, 38.4,
                                                                              n // 2)]
    found = index.zones_at(x, y)
    direct = [set(np.flatnonzero(shapely.intersects_xy(z.geometry, x, y)).tolist())
              for z in index.zones]
    expected: list[set[int]] = [set() for _ in range(n)]
    for j, rows in enumerate(direct):
        for row in rows:
            expected[row].add(j)
    assert sum(1 for hits in found if hits) > 10_000  # the test does exercise the zones
    assert [set(hits) for hits in found] == expected
    assert zone_agreement(index, n=20_000, seed=1) == 1.0


def test_zone_agreement_notices_a_wrong_index() -> None:
    index = ZoneIndex(demo_zones())
    broken = copy.copy(index)
    broken.zones_at = lambda x, y: [()] * len(x)  # type: ignore[method-assign]
    assert zone_agreement(broken, n=20_000) < 1.0


@pytest.mark.parametrize("version", [MAX_VERSION + 1, 2**64, 2**64 + 1, 10**30])
def test_a_version_past_the_bound_is_refused_naming_it(version: int) -> None:
    """A version past 2**64 - 1 was taken, and the API's next version, one above, could not
    be written (orjson): PUT and DELETE were 500s. Past 2**53 - 1, JavaScript reads it
    inexactly. A file or a record of such a version is refused, naming the bound."""
    with pytest.raises(ZoneError, match=r"from 0 to 9007199254740991 \(2\*\*53 - 1\)"):
        ZoneSet.from_geojson(fc(feature("a"), version=version))
    with pytest.raises(ZoneError, match=r"from 0 to 9007199254740991 \(2\*\*53 - 1\)"):
        apply_record(ZoneSet(), *delete_record("a", version))
    assert ZoneSet.from_geojson(fc(feature("a"), version=MAX_VERSION)).version == MAX_VERSION
    assert apply_record(ZoneSet(), *delete_record("a", MAX_VERSION)).version == MAX_VERSION
