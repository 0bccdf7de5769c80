from __future__ import annotations

from cityagent.alerts import alert_from_anomaly
from cityagent.batch import ReadingBatch
from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.pipeline import Detector
from cityagent.readings import parse_reading
from cityagent.regions import default_regions

T0 = 1_790_000_000  # s, a window boundary for 10 s windows
DETECTOR = Detector(DetectionEngine(DetectionConfig.load(window_s=10, grace_s=2)),
                    default_regions())


def reading(sensor: str, lon: float, lat: float, level: float, ts: float = T0):
    return parse_reading({"sensor_id": sensor, "kind": "water_level", "ts": ts,
                          "lon": lon, "lat": lat, "level_m": level})


def test_untagged_readings_are_tagged_and_outside_ones_dropped() -> None:
    state = DETECTOR.engine.new_state()
    batch = ReadingBatch.from_readings([
        reading("jinan", 117.0197, 36.6614, 6.0),      # 泉城广场, 历下区
        reading("qingdao", 120.3844, 36.0610, 6.0),    # 五四广场, 市南区
        reading("beijing", 116.40, 39.90, 6.0),        # outside the province
    ])
    outcome = DETECTOR.process_batch(batch, state, now_ms=T0 * 1000)
    assert outcome.readings == 2 and outcome.outside == 1
    assert outcome.anomalies == []  # the window has not closed yet
    closed = DETECTOR.engine.advance(state, (T0 + 12) * 1000, now_ms=(T0 + 12) * 1000)
    assert {(a.sensor_id, a.district_code, a.city_code, a.detector) for a in closed.anomalies} == {
        ("jinan", 370102, 370100, "level"), ("qingdao", 370202, 370200, "level")}


def test_a_district_code_that_is_no_shandong_districts_is_replaced_by_the_position() -> None:
    """Anything may write to the readings topic: a code of a city (370100), of Beijing's
    东城区 (110101), or none at all is re-tagged from the reading's position, as 0 always was."""
    rows = [reading(f"s{i}", 117.0197, 36.6614, 2.0) for i in range(5)]
    batch = ReadingBatch.from_readings(rows, [370100, 110101, 999999, -5, 370203])
    assert DETECTOR.tag(batch).district.tolist() == [370102] * 4 + [370203]
    assert default_regions().is_district_code(
        [0, -1, 370102, 370100, 371702, 10**12]).tolist() == [False, False, True, False, True,
                                                               False]


def test_a_sensor_whose_clock_is_ahead_is_dropped_and_named_not_its_bucket_mates() -> None:
    """Readings dated over 5 min past the clock are dropped, counted and named: the bucket's
    event time is the latest reading time it saw, so one sensor sending China time as UTC
    (8 h ahead) made every reading of the others late, unjudged (a 9 m flood unseen)."""
    state = DETECTOR.engine.new_state()
    now = T0 * 1000
    wrong = DETECTOR.process_batch(ReadingBatch.from_readings([
        reading("good", 117.0197, 36.6614, 2.0),
        reading("utc-as-cst", 117.0197, 36.6614, 2.0, T0 + 8 * 3600),
        reading("utc-as-cst", 117.0197, 36.6614, 2.0, T0 + 8 * 3600 + 10),
        reading("close", 117.0197, 36.6614, 2.0, T0 + 299)]), state, now_ms=now)
    assert (wrong.readings, wrong.future) == (2, 2)
    assert wrong.ahead == (("utc-as-cst", (8 * 3600 + 10) * 1000),)
    # "close" (4 min 59 s ahead) is kept, but moves the bucket's event time only to the clock.
    assert state.watermark == now
    anomalies = []
    for i in range(1, 4):
        step = DETECTOR.process_batch(ReadingBatch.from_readings(
            [reading("good", 117.0197, 36.6614, 9.0, T0 + 10 * i)]), state, now_ms=now + 10_000 * i)
        assert step.late == 0
        anomalies += step.anomalies
    assert [(a.sensor_id, a.detector, a.phase) for a in anomalies] == [("good", "level", "start")]


def test_a_reading_of_another_kind_than_its_sensor_is_dropped_and_named() -> None:
    """Two devices given one id: a road's 60 km/h under a water gauge's id was judged as a
    60 m water level, a red flood alarm. A sensor keeps the kind of its first reading."""
    from cityagent.readings import parse_reading as parse

    def road(ts: float, speed: float, sensor: str = "1001"):
        return parse({"sensor_id": sensor, "kind": "traffic", "ts": ts, "lon": 117.0197,
                      "lat": 36.6614, "speed_kmh": speed, "flow_vph": 900, "occupancy_pct": 10})

    state = DETECTOR.engine.new_state()
    anomalies, wrong, sensors = [], 0, set()
    for w in range(30):
        t = T0 + 10 * w
        rows = ([reading("1001", 117.0197, 36.6614, 2.0 + 0.01 * (w % 3), t + k) for k in (1, 4, 7)]
                if w < 20 else [road(t + k, 60.0 + k) for k in (1, 4, 7)])
        outcome = DETECTOR.process_batch(ReadingBatch.from_readings(rows), state, (t + 8) * 1000)
        anomalies += outcome.anomalies
        wrong += outcome.wrong_kind
        sensors |= set(outcome.wrong_kind_sensors)
        assert outcome.readings == (3 if w < 20 else 0)
    assert wrong == 30 and sensors == {("1001", "water_level", "traffic")}
    # Both kinds in a new sensor's first batch: the first reading decides, in any order.
    gauge, detector = reading("2002", 117.0197, 36.6614, 2.0), road(T0, 60.0, "2002")
    for first, second in ((gauge, detector), (detector, gauge)):
        fresh = DETECTOR.engine.new_state()
        outcome = DETECTOR.process_batch(ReadingBatch.from_readings([first, second]), fresh,
                                         T0 * 1000)
        assert outcome.wrong_kind_sensors == (("2002", first.kind, second.kind),)
    assert not any(a.detector in ("level", "deviation", "change", "trend", "spike")
                   for a in anomalies), anomalies


def test_an_alert_names_its_place_and_resolves_with_the_same_id() -> None:
    state = DETECTOR.engine.new_state()
    DETECTOR.process_batch(ReadingBatch.from_readings([reading("g", 117.0197, 36.6614, 6.0)]),
                           state, now_ms=T0 * 1000)
    anomalies = []
    for i in range(1, 5):  # normal windows afterwards end the episode
        outcome = DETECTOR.process_batch(
            ReadingBatch.from_readings([reading("g", 117.0197, 36.6614, 1.0, T0 + 10 * i)]),
            state, now_ms=(T0 + 10 * i) * 1000)
        anomalies += outcome.anomalies
    levels = [a for a in anomalies if a.detector == "level"]
    assert [a.phase for a in levels] == ["start", "end"]
    district = default_regions().district("370102")
    opened = alert_from_anomaly(levels[0], district.name, district.city_name,
                                district_name_en=district.name_en)
    resolved = alert_from_anomaly(levels[1], district.name, district.city_name)
    assert opened.alert_id == resolved.alert_id
    assert (opened.status, resolved.status) == ("open", "resolved")
    assert opened.city_name == "济南市" and opened.district_name == "历下区"
    # 6.0 m is past the default record high (保证 5.0 + one 警戒-保证 step): red.
    assert "济南市历下区" in opened.title_zh and "红色" in opened.title_zh
    assert "(Lixia District)" in opened.title_en and "(370102)" in resolved.title_en
    assert opened.severity == "red" and opened.reason == "water.record"


def test_the_future_tolerance_is_the_detectors_own() -> None:
    """A fleet whose clocks run a few minutes fast can be given more (CITYAGENT_FUTURE_TOLERANCE_S)."""
    import dataclasses

    now = T0 * 1000
    batch = ReadingBatch.from_readings([reading("fast", 117.0197, 36.6614, 2.0, T0 + 420)])
    strict = DETECTOR.process_batch(batch, DETECTOR.engine.new_state(), now_ms=now)
    assert strict.future == 1  # 7 min ahead: over the default 5
    lenient = dataclasses.replace(DETECTOR, future_tolerance_ms=600_000)
    kept = lenient.process_batch(batch, lenient.engine.new_state(), now_ms=now)
    assert (kept.future, kept.readings) == (0, 1)
