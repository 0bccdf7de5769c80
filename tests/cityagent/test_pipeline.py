from __future__ import annotations

from cityagent.alerts import alert_from_anomaly
from cityagent.batch import ReadingBatch
from cityagent.detection import Thresholds
from cityagent.pipeline import Detector
from cityagent.readings import parse_reading
from cityagent.regions import default_regions

DETECTOR = Detector(Thresholds.load(), default_regions())


def reading(sensor: str, lon: float, lat: float, level: float):
    return parse_reading({"sensor_id": sensor, "kind": "water_level", "ts": 1.79e9,
                          "lon": lon, "lat": lat, "level_m": level})


def test_untagged_readings_are_tagged_and_outside_ones_dropped() -> None:
    batch = ReadingBatch.from_readings([
        reading("jinan", 117.0197, 36.6614, 6.0),      # 泉城广场, 历下区
        reading("qingdao", 120.3844, 36.0610, 6.0),    # 五四广场, 市南区
        reading("beijing", 116.40, 39.90, 6.0),        # outside the province
    ])
    outcome = DETECTOR.process_batch(batch, {}, now_ms=1)
    assert outcome.readings == 2 and outcome.outside == 1
    assert {(a.sensor_id, a.district_code, a.city_code) for a in outcome.anomalies} == {
        ("jinan", 370102, 370100), ("qingdao", 370202, 370200)}


def test_an_alert_names_its_place_and_resolves_with_the_same_id() -> None:
    batch = ReadingBatch.from_readings([reading("g", 117.0197, 36.6614, 6.0)])
    start = DETECTOR.process_batch(batch, {}, now_ms=1)
    end_batch = ReadingBatch.from_readings([parse_reading({
        "sensor_id": "g", "kind": "water_level", "ts": 1.79e9 + 60,
        "lon": 117.0197, "lat": 36.6614, "level_m": 1.0})])
    end = DETECTOR.process_batch(end_batch, start.state, now_ms=2)
    district = default_regions().district("370102")
    opened = alert_from_anomaly(start.anomalies[0], district.name, district.city_name)
    resolved = alert_from_anomaly(end.anomalies[0], district.name, district.city_name)
    assert opened.alert_id == resolved.alert_id
    assert (opened.status, resolved.status) == ("open", "resolved")
    assert opened.city_name == "济南市" and opened.district_name == "历下区"
    assert "济南市历下区" in opened.title_zh and "红色" in opened.title_zh
    assert resolved.resolved_at_ms == 1_790_000_060_000
