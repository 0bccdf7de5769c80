"""The situation model, without Kafka: status, rates, indicators, trend, alerts, scope, series.

Every expected figure is worked out by hand in the test. Reading batches are built with the
real ``ReadingBatch``; alerts with ``tests.api.test_alert_book.alert_event`` through the real
``AlertBook``, as the API counts them.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from api.alert_book import AlertBook
from api.auth import Principal
from api.publisher import concat_batches
from api.routes.dashboard import cities_geojson, districts_geojson
from api.schemas import CitySituationPublic, SituationPublic
from api.situation import AlertCounter, find_city, flatten, scope_of, situation_geojson
from cityagent.batch import ReadingBatch
from cityagent.errors import ConfigError
from cityagent.readings import Reading
from cityagent.regions import default_regions
from cityagent.situation import AlertTally, Scope, SensorRegistry, SituationModel
from tests.api.test_alert_book import MIN, QINGDAO, T0, alert_event

SEC = 1000
LIXIA, SHIZHONG, SHINAN = 370102, 370103, 370202  # 济南 历下区, 济南 市中区, 青岛 市南区
VALUE = {"traffic": "speed_kmh", "water_level": "level_m", "pipe_pressure": "pressure_mpa"}
NOW = T0 + 3600 * SEC  # the wall clock of most tests: an hour after T0 (a replay, say)


def reading(sensor: str, kind: str, ts_ms: int, value: float) -> Reading:
    values = {VALUE[kind]: value}
    if kind == "traffic":
        values |= {"flow_vph": 900.0, "occupancy_pct": 12.0}
    return Reading(sensor, kind, ts_ms, 117.02, 36.66, values)


def batch(*rows: tuple[str, str, int, float, int]) -> ReadingBatch:
    """Rows of (sensor, kind, ts_ms, value, district code)."""
    return ReadingBatch.from_readings([reading(*r[:4]) for r in rows], [r[4] for r in rows])


def model(registry: list[dict[str, Any]] | None = None, **options: Any) -> SituationModel:
    reg = SensorRegistry.from_rows(registry) if registry is not None else None
    return SituationModel(default_regions(), registry=reg, **options)


def city(answer: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in answer["cities"] if c["code"] == code)


# -- reporting and silent ----------------------------------------------------------------------


def test_silent_is_judged_on_stream_time_against_each_sensors_interval() -> None:
    m = model()
    m.update(batch(("jn-tr-a", "traffic", T0, 40.0, LIXIA),            # every 60 s: limit 180 s
                   ("jn-tr-a", "traffic", T0 + 60 * SEC, 40.0, LIXIA),
                   ("jn-wl-b", "water_level", T0, 2.0, LIXIA),        # once: kind's 60 s → 180 s
                   *[("qd-pp-c", "pipe_pressure", T0 + k * 10 * SEC, 0.3, SHINAN)
                     for k in range(4)]),                              # every 10 s → floor 120 s
             NOW)
    m.update(batch(("jn-tr-d", "traffic", T0 + 200 * SEC, 40.0, SHIZHONG)), NOW)
    answer = m.situation(NOW)
    # Stream time is the newest reading (T0 + 200 s), not the wall clock (an hour later).
    assert answer["as_of_ms"] == T0 + 200 * SEC and answer["as_of"] == "2026-11-22T00:33:20.000Z"
    # a: 140 s ≤ 180 s → reporting; b: 200 s > 180 s → silent; c: 170 s > 120 s → silent.
    assert answer["province"]["sensors"] == {"total": 4, "reporting": 2, "silent": 2}
    assert city(answer, "370100")["sensors"] == {"total": 3, "reporting": 2, "silent": 1}
    assert city(answer, "370200")["sensors"] == {"total": 1, "reporting": 0, "silent": 1}
    assert len(answer["cities"]) == 16  # every city, sensors or not
    assert city(answer, "371700")["sensors"] == {"total": 0, "reporting": 0, "silent": 0}
    # One more minute of stream time: a (now 200 s old) goes silent too.
    m.update(batch(("jn-tr-d", "traffic", T0 + 260 * SEC, 40.0, SHIZHONG)), NOW)
    assert m.situation(NOW)["province"]["sensors"]["reporting"] == 1
    SituationPublic.model_validate(answer)


def test_registry_sensors_count_from_the_start_and_set_their_interval() -> None:
    m = model([{"sensor_id": "jn-wl-slow", "kind": "water_level", "lon": 117.0, "lat": 36.6,
                "district_code": "370102", "expected_interval_s": 600},
               {"sensor_id": "jn-wl-never", "kind": "water_level", "lon": 117.0, "lat": 36.6,
                "district_code": "370102", "water_site": "river"}])
    assert m.situation(NOW)["province"]["sensors"] == {"total": 2, "reporting": 0, "silent": 2}
    m.update(batch(("jn-wl-slow", "water_level", T0, 2.0, LIXIA),
                   ("jn-tr-x", "traffic", T0 + 1700 * SEC, 50.0, LIXIA)), NOW)
    # 1700 s since its one reading, within 3 x 600 s: still reporting; the other never did.
    assert m.situation(NOW)["province"]["sensors"] == {"total": 3, "reporting": 2, "silent": 1}
    never = m.sensor("jn-wl-never", NOW)
    assert never is not None
    assert never["status"] == "silent" and never["latest"] == {} and never["ts_ms"] is None
    assert never["water_site"] == "river" and never["district_name"] == "历下区"


def test_readings_in_the_future_are_dropped_and_do_not_move_stream_time() -> None:
    m = model()
    m.update(batch(("jn-tr-a", "traffic", T0, 40.0, LIXIA),
                   ("jn-tr-b", "traffic", T0 + 8 * 3600 * SEC, 40.0, LIXIA)),  # local time as UTC
             now_ms=T0 + 10 * SEC)
    assert m.stream_ms == T0 and m.readings_total == 1 and m.readings_future_total == 1


def test_a_device_whose_clock_is_minutes_fast_does_not_silence_the_others() -> None:
    m = model()
    now = T0 + 10 * MIN  # live: the readings are from the last minute of the wall clock
    m.update(batch(*[(f"jn-wl-{i}", "water_level", now - 60 * SEC + k * 30 * SEC, 2.0, LIXIA)
                     for i in range(10) for k in range(3)]), now)
    m.update(batch(("jn-wl-fast", "water_level", now + 4 * MIN, 2.0, LIXIA)), now)  # folded
    answer = m.situation(now)
    assert answer["as_of_ms"] == now  # stream time, but not past the clock
    assert answer["province"]["sensors"] == {"total": 11, "reporting": 11, "silent": 0}
    assert m.sensor("jn-wl-fast", now)["status"] == "reporting"
    # Once the clock has passed it, stream time is that reading's time again.
    assert m.situation(now + 5 * MIN)["as_of_ms"] == now + 4 * MIN


def test_a_sensor_keeps_its_kind_and_readings_of_another_are_dropped() -> None:
    """Two devices given one id: the second's readings are not its (detection drops them
    too), so the sensor keeps its first kind and value; a registry's kind binds from the start."""
    m = model([{"sensor_id": "jn-reg", "kind": "traffic", "lon": 117.0, "lat": 36.6,
                "district_code": "370102"}])
    m.update(batch(("1001", "water_level", T0, 2.0, LIXIA),
                   ("1001", "traffic", T0 + 10 * SEC, 60.0, LIXIA),
                   ("jn-reg", "water_level", T0, 2.0, LIXIA),
                   ("jn-reg", "traffic", T0 + 5 * SEC, 50.0, LIXIA)), NOW)
    assert (m.readings_total, m.readings_wrong_kind_total) == (2, 2)
    assert m.kind_of("1001") == "water_level" and m.kind_of("jn-reg") == "traffic"
    assert m.sensor("1001", NOW)["latest"] == {"level_m": 2.0}
    assert m.kind_codes(["1001", "jn-reg", "nobody"]).tolist() == [1, 0, -1]


# -- readings per second -----------------------------------------------------------------------


def test_readings_per_second_count_arrivals_of_the_last_ten_seconds_of_wall_clock() -> None:
    m = model()
    now = NOW - NOW % 1000  # on a second: the window is exactly 10 s
    jinan = [(f"jn-tr-{i}", "traffic", T0, 40.0, LIXIA) for i in range(30)]
    qingdao = [(f"qd-tr-{i}", "traffic", T0, 40.0, SHINAN) for i in range(20)]
    m.update(batch(*jinan), now, arrived_ms=now - 5 * SEC)
    m.update(batch(*qingdao), now, arrived_ms=np.full(20, now - 15 * SEC))  # too long ago
    m.update(batch(*qingdao[:10]), now, arrived_ms=now - 9 * SEC)
    answer = m.situation(now)
    assert answer["province"]["readings_per_s"] == 4.0  # (30 + 10) / 10 s
    assert city(answer, "370100")["readings_per_s"] == 3.0
    assert city(answer, "370200")["readings_per_s"] == 1.0
    assert m.situation(now + 20 * SEC)["province"]["readings_per_s"] == 0.0


def test_readings_per_second_of_one_sensor_backfilling_its_history() -> None:
    # 100,000 readings of one sensor entered Kafka in one second (two 50,000-reading posts
    # of history, within the default burst): the per-second counter must not wrap at 65,535.
    m = model()
    now = NOW - NOW % 1000
    history = ReadingBatch.from_readings(
        [reading("jn-wl-h", "water_level", T0 - k * SEC, 2.0) for k in range(50_000)],
        [LIXIA] * 50_000)
    m.update(history, now, arrived_ms=now - 3 * SEC)
    m.update(history, now, arrived_ms=now - 3 * SEC)
    assert m.situation(now)["province"]["readings_per_s"] == 10_000.0  # 100,000 / 10 s


# -- indicators --------------------------------------------------------------------------------


def test_indicators_from_the_latest_values_with_registry_thresholds_else_the_kinds() -> None:
    registry = [
        {"sensor_id": "jn-tr-fast", "kind": "traffic", "free_flow_kmh": 100},
        {"sensor_id": "jn-wl-low", "kind": "water_level", "warning_level_m": 3.5,
         "guaranteed_level_m": 3.8},
        {"sensor_id": "jn-pp-hi", "kind": "pipe_pressure", "min_pressure_mpa": 0.25},
    ]
    m = model(registry)
    t = T0
    m.update(batch(
        ("jn-tr-1", "traffic", t, 30.0, LIXIA),       # free flow 60: (1 - 0.5) / 0.7 x 10 = 7.142857
        ("jn-tr-2", "traffic", t, 70.0, LIXIA),       # faster than free flow: 0
        ("jn-tr-fast", "traffic", t, 30.0, LIXIA),    # free flow 100: (1 - 0.3) / 0.7 x 10 = 10
        ("jn-tr-old", "traffic", t - 900 * SEC, 5.0, LIXIA),  # silent: not counted
        ("jn-wl-1", "water_level", t, 3.9, LIXIA),    # under 警戒 4.0
        ("jn-wl-2", "water_level", t, 4.0, LIXIA),    # at 警戒
        ("jn-wl-3", "water_level", t, 5.2, SHIZHONG),  # over 保证 5.0
        ("jn-wl-low", "water_level", t, 3.9, SHIZHONG),  # over its own 警戒 3.5 and 保证 3.8
        ("jn-pp-1", "pipe_pressure", t, 0.13, LIXIA),
        ("jn-pp-2", "pipe_pressure", t, 0.14, LIXIA),  # at the floor: compliant
        ("jn-pp-3", "pipe_pressure", t, 0.20, LIXIA),
        ("jn-pp-hi", "pipe_pressure", t, 0.20, LIXIA),  # under its own 0.25 floor
    ), NOW)
    jinan = city(m.situation(NOW), "370100")["indicators"]
    assert jinan == {"traffic_index": round((10 / 0.7 * 0.5 + 0 + 10) / 3, 2),  # 5.71
                     "gauges_over_warning": 3, "gauges_over_guaranteed": 2,
                     "pressure_compliance": 0.5}
    lixia = m.city_situation("370100", NOW)["districts"][0]
    assert lixia["code"] == "370102"
    assert lixia["indicators"]["gauges_over_warning"] == 1  # jn-wl-2 only
    qingdao = city(m.situation(NOW), "370200")["indicators"]
    assert qingdao == {"traffic_index": None, "gauges_over_warning": 0,
                       "gauges_over_guaranteed": 0, "pressure_compliance": None}


# -- trend -------------------------------------------------------------------------------------


def test_trend_has_one_point_per_minute_of_stream_time_for_the_last_thirty() -> None:
    m = model()
    rows = [(f"jn-tr-{i % 4}", "traffic", T0 + i * SEC // 2, 30.0, LIXIA) for i in range(120)]
    rows += [("qd-tr-1", "traffic", T0 + MIN + i * SEC, 60.0, SHINAN) for i in range(60)]
    rows += [("jn-tr-0", "traffic", T0 + 2 * MIN + 15 * SEC, 45.0, LIXIA)]
    m.update(batch(*rows), NOW)
    book = AlertBook()
    # Opened in minute 0, resolved in minute 1: open at the end of minute 0 only.
    book.apply(alert_event("jn-1", first_seen_ms=T0 + 30 * SEC, last_seen_ms=T0 + 30 * SEC))
    book.apply(alert_event("jn-1", seq=2, type="resolved", status="resolved",
                           first_seen_ms=T0 + 30 * SEC, last_seen_ms=T0 + 30 * SEC,
                           resolved_by="system", resolved_at_ms=T0 + 90 * SEC))
    book.apply(alert_event("jn-2", first_seen_ms=T0 + 70 * SEC, last_seen_ms=T0 + 70 * SEC))
    tally = AlertCounter(book, default_regions()).tally(None)
    answer = m.situation(NOW, alerts=tally)
    trend = answer["province"]["trend"]
    assert len(trend) == 30 and trend[-1]["t_ms"] == T0 + 2 * MIN
    assert [p["t_ms"] for p in trend] == [T0 + (k - 27) * MIN for k in range(30)]
    assert trend[0] == {"t_ms": T0 - 27 * MIN, "readings_per_s": 0.0, "open_alerts": 0,
                        "traffic_index": None, "complete": True}
    minute0, minute1, minute2 = trend[-3:]
    assert minute0 == {"t_ms": T0, "readings_per_s": 2.0, "open_alerts": 1,
                       "traffic_index": round(10 / 0.7 * 0.5, 2), "complete": True}
    assert minute1 == {"t_ms": T0 + MIN, "readings_per_s": 1.0, "open_alerts": 1,
                       "traffic_index": 0.0, "complete": True}
    # The current minute (15 s of it so far) is not complete: no rate; jn-2 still open.
    assert minute2 == {"t_ms": T0 + 2 * MIN, "readings_per_s": None,
                       "open_alerts": 1, "traffic_index": round(10 / 0.7 * 0.25, 2),
                       "complete": False}
    jinan = city(answer, "370100")["trend"]
    assert [p["readings_per_s"] for p in jinan[-3:]] == [2.0, 0.0, None]
    assert [p["open_alerts"] for p in jinan[-3:]] == [1, 1, 1]
    # Readings older than the window are left out of the trend, not of the latest state.
    m.update(batch(("jn-tr-9", "traffic", T0 - 40 * MIN, 30.0, LIXIA)), NOW)
    assert m.situation(NOW, alerts=tally)["province"]["trend"] == trend
    assert m.situation(NOW)["province"]["sensors"]["total"] == 6


def test_the_current_minute_of_the_trend_has_no_rate_so_it_does_not_spike() -> None:
    """100 sensors reporting together every 10 s: 10 readings/s. The current minute was rated
    over its seconds so far, and its first round (100 readings at its start, 1 s floor) showed
    100 readings/s, its second 20: a spike at the end of every chart, every minute."""
    m = model()
    for k in range(13):  # T0 .. T0 + 120 s
        m.update(batch(*[(f"jn-tr-{i}", "traffic", T0 + k * 10 * SEC, 40.0, LIXIA)
                         for i in range(100)]), NOW)
        trend = m.situation(NOW)["province"]["trend"]
        assert trend[-1]["readings_per_s"] is None and trend[-1]["complete"] is False
        assert trend[-1]["traffic_index"] is not None  # a mean of the readings so far
        assert all(p["complete"] for p in trend[:-1])
        rates = [p["readings_per_s"] for p in trend[:-1]]
        assert max(rates) <= 10.0, (k, rates)
    assert [p["readings_per_s"] for p in trend[-3:-1]] == [10.0, 10.0]


def test_a_sensor_that_moved_counts_each_minute_where_its_reading_was_taken() -> None:
    # jn-tr-m reports from 历下区 (济南) in minute 0, then from 市南区 (青岛) in minute 1.
    before = ("jn-tr-m", "traffic", T0, 30.0, LIXIA)
    after = ("jn-tr-m", "traffic", T0 + MIN, 60.0, SHINAN)
    live, restarted = model(), model()
    live.update(batch(before), NOW)  # the API that saw it move
    live.update(batch(after), NOW)
    restarted.update(batch(before, after), NOW)  # one that read both at once, after a restart
    for m in (live, restarted):
        answer = m.situation(NOW)
        jinan, qingdao = city(answer, "370100")["trend"], city(answer, "370200")["trend"]
        assert [p["traffic_index"] for p in jinan[-2:]] == [round(10 / 0.7 * 0.5, 2), None]
        assert [p["traffic_index"] for p in qingdao[-2:]] == [None, 0.0]
        assert [p["readings_per_s"] for p in jinan[-2:]] == [round(1 / 60, 3), None]
        assert city(answer, "370200")["sensors"]["total"] == 1  # where it is now
    assert live.situation(NOW) == restarted.situation(NOW)


# -- alerts ------------------------------------------------------------------------------------


def test_open_alerts_by_severity_and_kind_from_the_alert_book() -> None:
    book = AlertBook()
    book.apply(alert_event("jn-1", severity="red", kind="water_level"))
    book.apply(alert_event("jn-2", severity="orange", kind="traffic",
                           status="acknowledged", acknowledged_by="op",
                           acknowledged_at_ms=T0 + MIN))
    book.apply(alert_event("jn-3", severity="red", status="resolved", resolved_by="system",
                           resolved_at_ms=T0 + MIN))
    book.apply(alert_event("jn-4", severity="blue", kind="sensor_fault"))  # → generic
    book.apply(alert_event("qd-1", severity="yellow", kind="pipe_pressure", where=QINGDAO))
    counter = AlertCounter(book, default_regions())
    answer = model().situation(NOW, alerts=counter.tally(None))
    jinan = city(answer, "370100")["alerts"]
    assert jinan == {"open": 3, "by_severity": {"blue": 1, "yellow": 0, "orange": 1, "red": 1},
                     "by_kind": {"water_level": 1, "pipe_pressure": 0, "traffic": 1,
                                 "generic": 1}, "worst": "red"}
    assert answer["province"]["alerts"]["open"] == 4
    assert city(answer, "370200")["alerts"]["worst"] == "yellow"
    assert city(answer, "370300")["alerts"]["worst"] is None
    districts = model().city_situation("370100", NOW, alerts=counter.tally(None))["districts"]
    assert next(d for d in districts if d["code"] == "370102")["alerts"]["open"] == 3
    assert counter.open_by_severity() == {"blue": 1, "yellow": 1, "orange": 1, "red": 1}
    assert counter.tally(None) is counter.tally(None)  # cached until the book changes
    book.apply(alert_event("jn-5"))
    assert counter.open_by_severity()["orange"] == 2


def test_a_city_wide_alert_counts_in_every_district_of_its_sensors_and_once_in_its_city() -> None:
    """A red flood over 槐荫区, 历下区 and 天桥区, opened in 槐荫区, counted as an open alert of
    槐荫区 alone: the drilled city's other districts said 0 open alerts."""
    book = AlertBook()
    book.apply(alert_event("jn-flood", severity="red", district_code="370104",
                           district_name="槐荫区",
                           district_codes=["370104", "370102", "370105"]))
    book.apply(alert_event("jn-old", severity="blue", district_code="370103",
                           district_name="市中区"))
    old = alert_event("jn-older", severity="yellow", district_code="370112",
                      district_name="历城区")
    del old["alert"]["district_codes"]  # an event from before the field: its one district
    book.apply(old)
    tally = AlertCounter(book, default_regions()).tally(None)
    answer = model().city_situation("370100", NOW, alerts=tally)
    open_by_district = {d["code"]: (d["alerts"]["open"], d["alerts"]["worst"])
                        for d in answer["districts"] if d["alerts"]["open"]}
    assert open_by_district == {"370104": (1, "red"), "370102": (1, "red"),
                                "370105": (1, "red"), "370103": (1, "blue"),
                                "370112": (1, "yellow")}
    assert answer["city"]["alerts"]["open"] == 3
    assert model().situation(NOW, alerts=tally)["province"]["alerts"]["open"] == 3


# -- scope ------------------------------------------------------------------------------------


def filled() -> tuple[SituationModel, AlertBook]:
    m = model()
    m.update(batch(("jn-tr-1", "traffic", T0, 30.0, LIXIA), ("jn-tr-2", "traffic", T0, 60.0, LIXIA),
                   ("qd-tr-1", "traffic", T0, 30.0, SHINAN), ("qd-wl-1", "water_level", T0, 4.5, SHINAN)),
             NOW)
    book = AlertBook()
    book.apply(alert_event("jn-1"))
    book.apply(alert_event("qd-1", where=QINGDAO))
    return m, book


def test_a_key_scoped_to_a_city_sees_that_city_and_a_province_of_it_alone() -> None:
    m, book = filled()
    key = Principal("operator", "k1", frozenset({"370200"}))
    answer = m.situation(NOW, scope_of(key, m), AlertCounter(book, default_regions()).tally(key))
    assert [c["code"] for c in answer["cities"]] == ["370200"]
    assert answer["province"]["sensors"]["total"] == 2
    assert answer["province"]["alerts"]["open"] == 1
    assert answer["province"]["indicators"]["gauges_over_warning"] == 1
    assert answer["province"]["trend"][-1]["readings_per_s"] is None  # the minute so far
    # A reading a minute on completes that minute: its 2 readings of 青岛 (not 济南's 2), / 60 s.
    m.update(batch(("qd-tr-1", "traffic", T0 + MIN, 30.0, SHINAN)), NOW)
    answer = m.situation(NOW, scope_of(key, m), AlertCounter(book, default_regions()).tally(key))
    assert answer["province"]["trend"][-2]["readings_per_s"] == round(2 / 60, 3)


def test_a_key_scoped_by_sensor_prefix_sees_its_sensors_and_no_partial_trend() -> None:
    m, book = filled()
    key = Principal("operator", "k2", prefixes=("jn-tr-1",))
    answer = m.situation(NOW, scope_of(key, m), AlertCounter(book, default_regions()).tally(key))
    assert [c["code"] for c in answer["cities"]] == ["370100"]
    jinan = answer["cities"][0]
    assert jinan["sensors"]["total"] == 1 and jinan["alerts"]["open"] == 0
    assert jinan["indicators"]["traffic_index"] == round(10 / 0.7 * 0.5, 2)
    # The minute counters are per district: they cannot be split by sensor.
    assert jinan["trend"][-1]["readings_per_s"] is None
    assert answer["province"]["trend"][-1]["traffic_index"] is None
    items, _, total = m.sensors(NOW, scope_of(key, m))
    assert total == 1 and items[0]["sensor_id"] == "jn-tr-1"


# -- the same answer whatever the grouping ----------------------------------------------------


def test_two_replicas_reading_in_different_groupings_give_the_same_answers() -> None:
    rng = random.Random(7)
    sensors = [(f"s{i:03d}", ("traffic", "water_level", "pipe_pressure")[i % 3],
                (LIXIA, SHIZHONG, SHINAN)[i % 3]) for i in range(60)]
    rows = [(s, k, T0 + t * 20 * SEC + rng.randrange(5000), rng.uniform(0.1, 60), d)
            for t in range(40) for s, k, d in sensors]
    whole = batch(*rows)
    one, two = model(), model()
    one.update(whole, NOW, arrived_ms=NOW - 2 * SEC)
    # Two "partitions" (by sensor), each read in order, in other pieces and interleaving.
    parts = [whole.take(np.flatnonzero([int(s[1:]) % 2 == p for s in whole.sensor_id.tolist()]))
             for p in (0, 1)]
    queues = [[p.take(np.arange(i, min(i + 37, len(p)))) for i in range(0, len(p), 37)]
              for p in parts]
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        two.update(queue.pop(0), NOW, arrived_ms=NOW - 2 * SEC)
    assert one.situation(NOW) == two.situation(NOW)
    assert one.city_situation("370100", NOW) == two.city_situation("370100", NOW)
    assert one.readings("s001") == two.readings("s001")


# -- sensors, drill-down and series ------------------------------------------------------------


def test_city_drill_down_lists_its_districts_and_sensors_worst_first() -> None:
    m = model()
    m.update(batch(("jn-a", "traffic", T0, 55.0, LIXIA),           # fine
                   ("jn-b", "water_level", T0, 5.5, LIXIA),        # over 保证
                   ("jn-c", "water_level", T0, 4.2, SHIZHONG),     # over 警戒
                   ("jn-d", "pipe_pressure", T0 - 600 * SEC, 0.3, LIXIA),  # silent
                   ("jn-e", "traffic", T0, 10.0, LIXIA),           # congested: 8.6
                   ("qd-a", "traffic", T0, 10.0, SHINAN)), NOW)
    answer = m.city_situation("370100", NOW)
    CitySituationPublic.model_validate(answer)
    assert [s["sensor_id"] for s in answer["sensors"]] == ["jn-b", "jn-e", "jn-c", "jn-d", "jn-a"]
    assert answer["sensors"][0] == {
        "sensor_id": "jn-b", "kind": "water_level", "lon": 117.02, "lat": 36.66,
        "district_code": "370102", "district_name": "历下区", "city_code": "370100",
        "status": "reporting", "latest": {"level_m": 5.5}, "ts_ms": T0,
        "ts": "2026-11-22T00:30:00.000Z"}
    assert answer["sensors"][3]["status"] == "silent"
    codes = [d["code"] for d in answer["districts"]]
    assert len(codes) == 12 and codes[:2] == ["370102", "370103"]  # all of 济南's districts
    assert [(d["name"], d["name_en"]) for d in answer["districts"][:2]] == [
        ("历下区", "Lixia District"), ("市中区", "Shizhong District")]
    assert (answer["city"]["name"], answer["city"]["name_en"]) == ("济南市", "Jinan")
    assert "trend" not in answer["districts"][0] and len(answer["city"]["trend"]) == 30
    assert len(m.city_situation("370100", NOW, max_sensors=2)["sensors"]) == 2


def test_sensors_page_in_id_order_with_filters() -> None:
    m = model()
    m.update(batch(*[(f"jn-tr-{i:02d}", "traffic", T0, 40.0, LIXIA) for i in range(5)],
                   ("jn-wl-1", "water_level", T0, 1.0, SHIZHONG),
                   ("qd-wl-1", "water_level", T0 - 900 * SEC, 1.0, SHINAN)), NOW)
    items, after, total = m.sensors(NOW, limit=3)
    assert [s["sensor_id"] for s in items] == ["jn-tr-00", "jn-tr-01", "jn-tr-02"]
    assert after == "jn-tr-02" and total == 7
    items, after, _ = m.sensors(NOW, limit=3, after=after)
    assert [s["sensor_id"] for s in items] == ["jn-tr-03", "jn-tr-04", "jn-wl-1"] and after
    items, after, _ = m.sensors(NOW, limit=3, after=after)
    assert [s["sensor_id"] for s in items] == ["qd-wl-1"] and after is None
    assert [s["sensor_id"] for s in m.sensors(NOW, kind="water_level")[0]] == ["jn-wl-1", "qd-wl-1"]
    assert [s["sensor_id"] for s in m.sensors(NOW, city="370200")[0]] == ["qd-wl-1"]
    assert [s["sensor_id"] for s in m.sensors(NOW, district="370103")[0]] == ["jn-wl-1"]
    assert [s["sensor_id"] for s in m.sensors(NOW, status="silent")[0]] == ["qd-wl-1"]


def test_sensors_with_no_reading_in_the_lookback_are_forgotten_unless_registered() -> None:
    # What a starting API (reading the last day of the topic) would know, a running one keeps.
    registry = [{"sensor_id": "jn-wl-reg", "kind": "water_level", "lon": 117.0, "lat": 36.6,
                 "district_code": "370102"}]
    day_ago = NOW - 24 * 3600 * SEC
    old = batch(("jn-wl-old", "water_level", T0, 2.0, LIXIA),
                ("jn-wl-reg", "water_level", T0, 1.5, LIXIA),
                ("qd-pp-old", "pipe_pressure", T0, 0.3, SHINAN))
    recent = batch(*[(sensor, "traffic", T0 + k * 60 * SEC, 40.0 + k, SHIZHONG)
                     for k in range(5) for sensor in ("jn-tr-a", "jn-tr-b")],
                   ("jn-wl-new", "water_level", T0 + 240 * SEC, 2.5, LIXIA))
    m = model(registry)
    m.update(old, NOW, day_ago - 1)  # arrived a day and a millisecond ago
    m.update(recent, NOW, day_ago)
    never_had_them = model(registry)
    never_had_them.update(old.take(old.sensor_id == "jn-wl-reg"), NOW, day_ago - 1)
    never_had_them.update(recent, NOW, day_ago)
    assert len(m.sensors(NOW)[0]) == 6
    assert m.forget(day_ago) == 2 and len(m) == 4
    assert m.sensor("jn-wl-old", NOW) is None and m.readings("qd-pp-old") is None
    for sensor in ("jn-tr-a", "jn-tr-b", "jn-wl-new", "jn-wl-reg"):  # as if never mixed
        assert m.sensor(sensor, NOW) == never_had_them.sensor(sensor, NOW)
        assert m.readings(sensor) == never_had_them.readings(sensor)
    assert m.situation(NOW)["province"]["sensors"] == {"total": 4, "reporting": 3, "silent": 1}
    assert m.forget(day_ago) == 0
    # One that reports again is a new sensor, its kind set again by its first reading; the
    # list (in id order) has the new rows, also as many as before the forgetting.
    m.update(batch(("jn-wl-old", "traffic", T0 + 300 * SEC, 33.0, LIXIA),
                   ("zz-tr-new", "traffic", T0 + 300 * SEC, 35.0, LIXIA)), NOW)
    again = m.sensor("jn-wl-old", NOW)
    assert again is not None and again["kind"] == "traffic" and len(m.readings("jn-wl-old")) == 1
    listed = m.sensors(NOW)[0]
    assert [s["sensor_id"] for s in listed] == [
        "jn-tr-a", "jn-tr-b", "jn-wl-new", "jn-wl-old", "jn-wl-reg", "zz-tr-new"]
    assert [s for s in listed if s["sensor_id"] != "jn-wl-old" and s["sensor_id"] != "zz-tr-new"
            ] == never_had_them.sensors(NOW)[0]


def test_the_readings_feed_forgets_sensors_older_than_its_lookback_every_ten_minutes() -> None:
    import time

    from api.readings_feed import FORGET_EVERY_S, ReadingsFeed

    now = int(time.time() * 1000)
    m = model()
    m.update(batch(("jn-wl-old", "water_level", T0, 2.0, LIXIA)), now, now - 25 * 3600 * SEC)
    m.update(batch(("jn-wl-new", "water_level", T0, 2.0, LIXIA)), now, now - 23 * 3600 * SEC)
    whole = ReadingsFeed("127.0.0.1:9", "t.readings", m)  # no lookback: it reads everything
    whole._forget_at = 0.0
    whole._forget_silent()
    assert len(m) == 2
    feed = ReadingsFeed("127.0.0.1:9", "t.readings", m, lookback_ms=24 * 3600 * SEC)
    feed._forget_silent()  # not yet: ten minutes after the start
    assert len(m) == 2 and feed._forget_at > time.monotonic() + FORGET_EVERY_S - 60
    feed._forget_at = 0.0
    feed._forget_silent()
    assert (feed.forgotten, m.sensor_ids.tolist()) == (1, ["jn-wl-new"])


def test_series_keep_the_newest_readings_oldest_first_within_a_global_budget() -> None:
    m = model(series_depth=5, series_budget=5 * 1024)
    m.update(batch(*[("jn-tr-1", "traffic", T0 + k * SEC, 40.0 + k, LIXIA) for k in (3, 1, 2)]), NOW)
    m.update(batch(*[("jn-tr-1", "traffic", T0 + k * SEC, 40.0 + k, LIXIA) for k in range(4, 12)]),
             NOW)
    series = m.readings("jn-tr-1")
    assert series is not None
    assert [r["ts_ms"] for r in series] == [T0 + k * SEC for k in range(7, 12)]
    assert series[-1] == {"ts_ms": T0 + 11 * SEC, "ts": "2026-11-22T00:30:11.000Z",
                          "speed_kmh": 51.0, "flow_vph": 900.0, "occupancy_pct": 12.0}
    assert [r["ts_ms"] for r in m.readings("jn-tr-1", since_ms=T0 + 10 * SEC) or []] == \
        [T0 + 10 * SEC, T0 + 11 * SEC]
    assert len(m.readings("jn-tr-1", limit=2) or []) == 2
    assert m.readings("nope") is None
    # Past 1024 sensors the budget leaves 2 readings each; the newest are kept.
    m.update(batch(*[(f"x{i:04d}", "water_level", T0, 1.0, LIXIA) for i in range(1100)]), NOW)
    assert [r["ts_ms"] for r in m.readings("jn-tr-1") or []] == [T0 + 10 * SEC, T0 + 11 * SEC]
    assert m.readings("x0001") == [{"ts_ms": T0, "ts": "2026-11-22T00:30:00.000Z", "level_m": 1.0}]


def test_a_late_reading_never_pushes_a_newer_one_out_of_the_series() -> None:
    """The ring was written in arrival order: a reading older than the 5 it held overwrote
    the oldest of them, and the series lost a newer reading to it (docs: always the newest)."""
    m = model(series_depth=5, series_budget=5 * 1024)
    m.update(batch(*[("jn-tr-1", "traffic", T0 + k * SEC, 40.0 + k, LIXIA) for k in range(10, 15)]),
             NOW)
    m.update(batch(("jn-tr-1", "traffic", T0 + SEC, 1.0, LIXIA)), NOW)  # older than all 5
    assert [r["ts_ms"] for r in m.readings("jn-tr-1") or []] == [T0 + k * SEC for k in range(10, 15)]
    # One late reading among the held ones, and a new one: the oldest held ones make room.
    m.update(batch(("jn-tr-1", "traffic", T0 + 12_500, 1.5, LIXIA),
                   ("jn-tr-1", "traffic", T0 + 20 * SEC, 2.0, LIXIA)), NOW)
    series = m.readings("jn-tr-1") or []
    assert [(r["ts_ms"] - T0, r["speed_kmh"]) for r in series] == [
        (12_000, 52.0), (12_500, 1.5), (13_000, 53.0), (14_000, 54.0), (20_000, 2.0)]
    m.update(batch(("jn-tr-1", "traffic", T0 + 21 * SEC, 3.0, LIXIA)), NOW)  # in order again
    assert [r["ts_ms"] - T0 for r in m.readings("jn-tr-1") or []] == [
        12_500, 13_000, 14_000, 20_000, 21_000]


def test_series_hold_the_newest_by_event_time_whatever_order_readings_come_in() -> None:
    rng = random.Random(7)
    m = model(series_depth=8, series_budget=8 * 1024)
    sent: dict[str, list[int]] = {"jn-tr-a": [], "jn-tr-b": [], "jn-tr-c": []}
    for _ in range(60):
        rows = []
        for sensor in sent:
            for _ in range(rng.randrange(0, 6)):
                ts = T0 + rng.randrange(0, 600) * SEC  # late ones, out of order, some equal
                sent[sensor].append(ts)
                rows.append((sensor, "traffic", ts, 40.0, LIXIA))
        if rows:
            m.update(batch(*rows), NOW)
        for sensor, times in sent.items():
            if times:
                assert [r["ts_ms"] for r in m.readings(sensor) or []] == sorted(times)[-8:]
    # Growing past the budget keeps each sensor's newest (4 each for 2,048 rows).
    m.update(batch(*[(f"x{i:04d}", "water_level", T0, 1.0, LIXIA) for i in range(1100)]), NOW)
    for sensor, times in sent.items():
        assert [r["ts_ms"] for r in m.readings(sensor) or []] == sorted(times)[-4:]


def test_many_sensors_late_at_once_keep_the_newest_by_event_time() -> None:
    """Backfills where most sensors are late, some within their rings' span, some older
    than all of it, with equal times: the same as sorting every sensor's readings."""
    rng = random.Random(11)
    m = model(series_depth=6, series_budget=6 * 1024)
    sent: dict[str, list[int]] = {f"jn-tr-{i:02d}": [] for i in range(40)}
    for round_ in range(30):
        rows = []
        for sensor in sent:
            low = max(0, round_ * 20 - (300 if rng.random() < 0.8 else 0))
            for _ in range(rng.randrange(0, 4)):
                ts = T0 + rng.randrange(low, round_ * 20 + 20) * SEC
                sent[sensor].append(ts)
                rows.append((sensor, "traffic", ts, 40.0, LIXIA))
        if rows:
            m.update(batch(*rows), NOW)
        for sensor, times in sent.items():
            assert [r["ts_ms"] for r in m.readings(sensor) or []] == sorted(times)[-6:]


def test_a_backfill_older_than_full_rings_merges_nothing(monkeypatch) -> None:
    """Every sensor late and older than all its ring held: each such reading was merged with
    the whole ring (a sort of every held reading: ~0.4-0.6 s for 1.2 million held, the API's
    event loop stalled) only to be dropped. Now it is dropped before, and the rings stay."""
    m = model(series_depth=4, series_budget=4 * 1024)
    ids = [f"jn-tr-{i}" for i in range(50)]
    for k in range(10, 14):
        m.update(batch(*[(s, "traffic", T0 + k * SEC, 40.0, LIXIA) for s in ids]), NOW)
    merged = []
    real = SituationModel._merge_series
    monkeypatch.setattr(SituationModel, "_merge_series",
                        lambda self, *a: merged.append(1) or real(self, *a))
    m.update(batch(*[(s, "traffic", T0 + k * SEC, 1.0, LIXIA) for s in ids for k in (1, 2)]),
             NOW)
    assert merged == []
    assert all([r["ts_ms"] - T0 for r in m.readings(s) or []] == [10_000, 11_000, 12_000, 13_000]
               for s in ids)
    assert m.readings_total == 300
    # At the oldest held time it may enter (held before it at one time): merged, and kept.
    m.update(batch(("jn-tr-0", "traffic", T0 + 10 * SEC, 2.0, LIXIA)), NOW)
    assert merged == [1]
    assert [(r["ts_ms"] - T0, r["speed_kmh"]) for r in m.readings("jn-tr-0") or []][0] == \
        (10_000, 2.0)


def test_the_merge_order_is_lexsorts() -> None:
    from cityagent.situation import _merge_order

    rng = np.random.default_rng(3)
    for size, span, gids in ((0, 1, 1), (1, 1, 1), (500, 20, 7), (5000, 10**12, 900),
                             (300, 4 * 10**12, 2**40)):  # the last: the key would not fit
        gid = np.sort(rng.integers(0, gids, size))
        ts = rng.integers(10**12, 10**12 + span, size)
        held = size // 2
        source = np.arange(size) >= held
        assert np.array_equal(_merge_order(gid, ts, held), np.lexsort((source, ts, gid)))


def test_a_reading_without_a_district_counts_for_the_province_only() -> None:
    m = model()
    m.update(batch(("xx-1", "traffic", T0, 40.0, 0)), NOW)
    answer = m.situation(NOW)
    assert answer["province"]["sensors"]["total"] == 1
    assert sum(c["sensors"]["total"] for c in answer["cities"]) == 0


# -- for HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, code", [("370100", "370100"), ("济南", "370100"),
                                        ("济南市", "370100"), ("jinan", "370100"),
                                        ("Qingdao", "370200"), ("nowhere", None)])
def test_find_city_by_code_or_name(text: str, code: str | None) -> None:
    found = find_city(default_regions(), text)
    assert (found.code if found else None) == code


def test_geojson_has_one_polygon_feature_per_area_with_the_summary_flattened() -> None:
    m, _ = filled()
    regions = default_regions()
    doc = situation_geojson(m.situation(NOW), regions)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 16
    jinan = next(f for f in doc["features"] if f["id"] == "370100")
    assert jinan["properties"]["sensors_total"] == 2
    assert jinan["properties"]["alerts_by_severity_red"] == 0
    assert "trend" not in jinan["properties"]
    assert jinan["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert shapely.contains_xy(shape(jinan["geometry"]), 117.02, 36.66)
    districts = situation_geojson(m.city_situation("370100", NOW), regions, "370100")
    assert len(districts["features"]) == 12 and districts["city"]["code"] == "370100"
    assert districts["features"][0]["properties"]["name_en"] == "Lixia District"
    assert flatten({"a": {"b": 1}, "trend": [], "c": None}) == {"a_b": 1, "c": None}


def test_dashboard_boundaries_name_every_district_in_both_languages() -> None:
    regions = default_regions()
    weifang = json.loads(districts_geojson(regions, "370700"))["features"]
    hanting = next(f["properties"] for f in weifang if f["id"] == "370703")
    assert (hanting["name_zh"], hanting["name_en"]) == ("寒亭区", "Hanting District")
    # The cities list their districts' names, so the feed can name any alert's district.
    cities = json.loads(cities_geojson(regions))["features"]
    names = {code: n for f in cities for code, n in f["properties"]["districts"].items()}
    assert len(names) == 137 and names["370703"] == {"zh": "寒亭区", "en": "Hanting District"}
    jinan = next(f["properties"] for f in cities if f["id"] == "370100")
    assert (jinan["name_zh"], jinan["name_en"]) == ("济南市", "Jinan")


def test_alert_tally_of_no_alerts_and_the_default_scope() -> None:
    assert len(AlertTally.from_alerts(()).open) == 0
    assert Scope().sensors is None


def test_folding_100k_readings_of_known_sensors() -> None:
    """How fast: `cityagent bench --situation` (docs/api.md, Cost)."""
    n = 100_000
    m = model()
    ids = [f"s{i:06d}" for i in range(n)]
    first = concat_batches([batch(*[(s, "water_level", T0, 1.0, LIXIA) for s in ids[:1000]])])
    m.update(first, NOW)
    big = ReadingBatch(np.array(ids), np.full(n, "water_level"), np.full(n, T0 + MIN),
                       np.full(n, 117.0), np.full(n, 36.6), np.full(n, LIXIA),
                       {f: (np.full(n, 2.0) if f == "level_m" else np.full(n, np.nan))
                        for f in first.values})
    m.update(big, NOW)
    m.update(big, NOW)
    assert m.situation(NOW)["province"]["sensors"] == {"total": n, "reporting": n, "silent": 0}


def test_the_registry_loads_from_json_and_csv_as_the_simulator_writes_them(tmp_path) -> None:
    head = {"seed": 7, "count": 2, "columns": ["sensor_id", "kind", "district_code"]}
    rows = [{"sensor_id": "jn-wl-1", "kind": "water_level", "lon": 117.0, "lat": 36.6,
             "city_code": "370100", "district_code": "370102", "warning_level_m": 3.0,
             "guaranteed_level_m": 3.5, "tidal": False, "free_flow_kmh": None},
            {"sensor_id": "jn-tr-1", "kind": "traffic", "lon": 117.1, "lat": 36.7,
             "city_code": "370100", "district_code": "370103", "warning_level_m": None,
             "guaranteed_level_m": None, "tidal": None, "free_flow_kmh": 80.0}]
    (tmp_path / "r.json").write_text(json.dumps({**head, "sensors": rows}))
    csv_text = "sensor_id,kind,lon,lat,city_code,district_code,warning_level_m,free_flow_kmh\n" \
               "jn-wl-1,water_level,117.0,36.6,370100,370102,3.0,\njn-tr-1,traffic,117.1,36.7,370100,370103,,80\n"
    (tmp_path / "r.csv").write_text(csv_text)
    for name in ("r.json", "r.csv"):
        registry = SensorRegistry.load(tmp_path / name)
        assert registry.ids == ("jn-wl-1", "jn-tr-1")
        record = registry.record(0)
        assert record["district_code"] == "370102" and record["warning_level_m"] == 3.0
        assert registry.record(1)["free_flow_kmh"] == 80.0
        assert registry.record(1)["warning_level_m"] is None
        m = SituationModel(default_regions(), registry=registry)
        m.update(batch(("jn-wl-1", "water_level", T0, 3.2, LIXIA)), NOW)
        assert m.situation(NOW)["province"]["indicators"]["gauges_over_warning"] == 1
        item = m.sensor("jn-tr-1", NOW)
        assert item is not None and item["district_code"] == "370103"
        assert item["free_flow_kmh"] == 80.0 and item["status"] == "silent"
    (tmp_path / "bad.json").write_text('{"sensors": [{"kind": "traffic"}]}')
    with pytest.raises(ConfigError, match="no sensor_id"):
        SensorRegistry.load(tmp_path / "bad.json")


def test_without_kafka_readyz_is_503_saying_why_and_metrics_still_answer() -> None:
    import warnings

    from starlette.exceptions import StarletteDeprecationWarning

    from api.main import create_app
    from cityagent.settings import Settings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from fastapi.testclient import TestClient

    client = TestClient(create_app(Settings(api_keys="operator:op", kafka="127.0.0.1:9")))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "2"
    assert ready.json()["status"] == "not ready" and len(ready.json()["missing"]) == 5
    # Nothing read yet, and nothing known to read: no topic end offsets without a broker.
    assert (ready.json()["readings_messages_read"], ready.json()["readings_messages_to_read"]) == (
        0, 0)
    assert "the situation is still reading the readings topic" in ready.json()["missing"]
    assert client.get("/healthz").json() == {"status": "ok"}
    answer = client.get("/v1/situation", headers={"authorization": "Bearer op"})
    assert answer.status_code == 200 and answer.json()["province"]["sensors"]["total"] == 0
    text = client.get("/metrics").text
    assert 'cityagent_api_feed_caught_up{feed="readings"} 0' in text
    assert 'cityagent_api_requests_total{method="GET",route="/v1/situation",status="200"} 1' in text
    assert 'route="/healthz"' in text


def test_a_bad_lookback_stops_the_api_with_one_line(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from api.main import create_app_from_env

    # What uvicorn calls (`--factory api.main:create_app_from_env`).
    monkeypatch.setenv("CITYAGENT_SITUATION_LOOKBACK_H", "200")
    with pytest.raises(SystemExit) as stopped:
        create_app_from_env()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == ("cityagent api: CITYAGENT_SITUATION_LOOKBACK_H must be at most 168 (the "
                   "readings topic's retention, 7 days); got 200.0\n")
