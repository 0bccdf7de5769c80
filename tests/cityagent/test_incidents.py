"""Incidents: lifecycle, correlation, escalation, maintenance, commands and replay safety."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import orjson
import pytest

from cityagent.detection import Anomaly, anomaly_id
from cityagent.errors import ConfigError
from cityagent.incident_alert import Alert, AlertEvent, Command, InvalidCommand
from cityagent.incidents import (
    MEMBERS_BYTES,
    AlertingConfig,
    IncidentEngine,
    MaintenanceWindow,
    ScopeState,
    family_of,
    incident_key,
    scope_key,
)
from cityagent.routing import default_router
from cityagent.zones import ZoneIndex, ZoneSet

T0 = 1_780_300_000_000
MIN = 60_000
# 历下区, 济南: sensors a few hundred metres apart.
LIXIA = (117.080, 36.655)
CONFIG = {
    "lifecycle": {"resolve_after_s": 600, "history_s": 7200, "max_sensors_listed": 2},
    "scope": {"flood": {"level": "district", "zone_kinds": ["*"]},
              "pipe": {"level": "city", "zone_kinds": ["key_pipe_corridor"],
                       "join_radius_km": 5}},
    "correlation": {
        "window_s": 1800,
        "flood": {"sensors": 3, "min_severity": "yellow", "reasons": ["water.*"],
                  "scopes": ["district", "flood_risk"], "title_zh": "区域性内涝/洪水",
                  "title_en": "area flooding"},
        "pipe": {"sensors": 2, "min_severity": "blue",
                 "reasons": ["pressure.low", "pressure.critical", "change.drop"],
                 "title_zh": "疑似爆管", "title_en": "suspected pipe burst"},
    },
    "escalation": {"min_severity": "orange", "city_after_s": 900, "province_after_s": 1800},
}


def make(sensor: str = "jn-wl-000001", *, phase: str = "start", kind: str = "water_level",
         detector: str = "level", reason: str = "water.warning", severity: str = "yellow",
         since: int = T0, ts: int | None = None, at: tuple[float, float] = LIXIA,
         district: int = 370102, score: float = 0.7) -> Anomaly:
    ts = since if ts is None else ts
    return Anomaly(
        anomaly_id=anomaly_id(sensor, detector, since), phase=phase, sensor_id=sensor,
        kind=kind, detector=detector, reason=reason, score=score, peak_score=score,
        severity=severity, field="level_m", observed=4.2, expected=4.0,
        window_start_ms=ts - MIN, window_end_ms=ts, since_ms=since, ts_ms=ts,
        detected_at_ms=ts, lon=at[0], lat=at[1], district_code=district,
        city_code=district // 100 * 100)


def near(i: int) -> tuple[float, float]:
    return (LIXIA[0] + 0.002 * i, LIXIA[1])


def engine(**changes) -> IncidentEngine:
    return IncidentEngine(AlertingConfig.from_dict(CONFIG), default_router(), **changes)


def cmd(alert_id: str, action: str, command_id: str = "c1", **extra) -> Command:
    return Command(command_id=command_id, alert_id=alert_id, action=action, actor="王调度",
                   at_ms=extra.pop("at_ms", T0 + 5 * MIN), **extra)


def one(events: list[AlertEvent]) -> Alert:
    assert len(events) == 1, events
    assert events[0].alert is not None
    return events[0].alert


# -- configuration ------------------------------------------------------------------------


def test_the_packaged_alerting_settings_load() -> None:
    config = AlertingConfig.load()
    assert config.resolve_after_s > 0 and config.max_sensors_listed >= 1
    assert config.correlation["flood"].sensors == 3
    assert config.correlation["pipe"].title_zh == "疑似爆管"
    assert config.scope_rule("pipe").level == "city"
    assert config.scope_rule("other").level == "district"  # default for a family not listed
    assert config.escalation.min_severity == "orange"


@pytest.mark.parametrize(("patch", "words"), [
    ({"lifecycle": {"resolve_after": 1}}, r"\[lifecycle\]: unknown key 'resolve_after'"),
    ({"lifecycle": {"resolve_after_s": -1}}, "resolve_after_s must be a number of 0 or more"),
    ({"lifecycle": {"max_sensors_listed": 0}}, "max_sensors_listed must be a whole number"),
    ({"escalation": {"min_severity": "amber"}}, r"\[escalation\]: min_severity must be one of"),
    # an array was a TypeError traceback (unhashable), not a message naming the key
    ({"escalation": {"min_severity": ["red"]}}, r"\[escalation\]: min_severity must be one of"),
    ({"correlation": {"flood": {"min_severity": ["red"], "title_zh": "x", "title_en": "x"}}},
     r"\[correlation.flood\]: min_severity must be one of"),
    ({"scope": {"pipe": {"level": "province"}}}, r"\[scope.pipe\]: level must be"),
    ({"scope": {"sensor_fault": {}}}, r"\[scope\]: unknown key 'sensor_fault'"),
    ({"correlation": {"flood": {"sensors": 1, "title_zh": "x", "title_en": "x"}}},
     r"\[correlation.flood\]: sensors must be a whole number of 2 or more"),
    ({"correlation": {"flood": {"sensors": 3, "title_zh": "x"}}}, "title_en must be"),
    ({"correlation": {"flood": {"reasons": [], "title_zh": "x", "title_en": "x"}}},
     "reasons must be a non-empty list"),
    ({"alerts": {}}, "unknown key 'alerts'"),
    # A near miss of a known kind was a custom kind of no zone: the setting never applied.
    ({"scope": {"pipe": {"zone_kinds": ["key_pipe_coridor"]}}},
     r"\[scope.pipe\]: zone_kinds entry 'key_pipe_coridor' looks like a typo of "
     "'key_pipe_corridor'"),
    ({"correlation": {"flood": {"scopes": ["distrct"], "title_zh": "x", "title_en": "x"}}},
     r"\[correlation.flood\]: scopes entry 'distrct' looks like a typo of 'district'"),
    ({"lifecycle": {"restate_after_s": 0}}, "restate_after_s must be above 0 and below"),
    ({"lifecycle": {"restate_after_s": 7 * 86400}},
     r"below the 168 h of the alerts topic a starting API reads \(604800 s\)"),
])
def test_bad_settings_name_the_table_and_key(patch: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        AlertingConfig.from_dict(patch, "alerting.toml")


def test_an_unreadable_settings_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "alerting.toml"
    path.write_text("[lifecycle\n")
    with pytest.raises(ConfigError, match=f"cannot read alerting settings from {path}"):
        AlertingConfig.load(path)


def test_a_settings_file_that_is_not_utf8_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A UnicodeDecodeError traceback before (TOML saved as GBK, its Chinese titles)."""
    path = tmp_path / "alerting.toml"
    path.write_bytes('[correlation.flood]\ntitle_zh = "区域性内涝"\n'.encode("gbk"))
    with pytest.raises(ConfigError, match=f"cannot read alerting settings from {path}: "
                                          "not UTF-8 text"):
        AlertingConfig.load(path)


def test_example_1_of_docs_alerting_holds_with_the_packaged_settings() -> None:
    """docs/alerting.md's flooding underpass, with the packaged alerting.toml, routing and
    demo zones. The doc said the scope was the underpass zone and its name was in the title,
    as before floods were judged per city."""
    import numpy as np

    from cityagent.regions import default_regions
    from cityagent.zones import demo_zones

    regions, zones = default_regions(), ZoneIndex(demo_zones())
    eng = IncidentEngine(AlertingConfig.load(), default_router(), regions)
    places = [(117.019, 36.709), (117.020, 36.709), (117.021, 36.709)]
    state, seen = ScopeState(), []
    for i, (lon, lat) in enumerate(places):
        district = int(regions.district_code_numbers(
            regions.locate(np.array([lon]), np.array([lat])))[0])
        a = make(f"jn-wl-{i}", at=(lon, lat), district=district, since=T0 + i * MIN)
        seen.append(eng.scope_key(a, zones))
        alert = one(eng.on_anomaly(state, a, zones, T0 + i * MIN))
        if i == 0:
            opened = alert
    assert set(seen) == {"city:370100"}
    assert opened.severity == "orange" and opened.zone_ids == (
        "jn-underpass-beiyuan", "jn-flood-xiaoqing")
    assert opened.departments == ("water", "transport", "city_management", "emergency",
                                  "city_command")
    assert alert.severity == "red" and alert.correlated
    doc = (Path(__file__).parents[2] / "docs" / "alerting.md").read_text("utf-8")
    example = doc[doc.index("**Example 1"):doc.index("**Example 2")]
    assert f"`{alert.title_zh}`" in example and "`city:370100`" in example
    assert "`zone:jn-underpass-beiyuan`" not in example


# -- families and scopes ------------------------------------------------------------------


def test_families_and_scope_keys() -> None:
    config = AlertingConfig.from_dict(CONFIG)
    gauge = make()
    assert family_of(gauge) == "flood"
    assert scope_key(gauge, None, config) == "district:370102"
    assert incident_key(gauge, None, config) == "flood@district:370102"
    pipe = make("jn-pp-000002", kind="pipe_pressure", reason="pressure.low")
    assert scope_key(pipe, None, config) == "city:370100"
    fault = make(detector="silence", reason="fault.silence", severity="blue")
    assert family_of(fault) == "sensor_fault"
    # A fault lives in the state of its sensor's kind; a stuck sensor is its own incident,
    # silent sensors are one incident per scope.
    assert scope_key(fault, None, config) == "district:370102"
    assert incident_key(fault, None, config) == "sensor_fault@district:370102/water_level"
    stuck = make(detector="flatline", reason="fault.flatline", severity="blue")
    assert incident_key(stuck, None, config) == "sensor_fault@sensor:jn-wl-000001"
    traffic = make("jn-tr-000003", kind="traffic", reason="traffic.congestion")
    assert family_of(traffic) == "traffic"


# -- lifecycle ----------------------------------------------------------------------------


def test_open_update_acknowledge_resolve() -> None:
    eng, state = engine(), ScopeState()
    opened = one(eng.on_anomaly(state, make(), None, T0))
    assert (opened.status, opened.severity, opened.seq, opened.escalation_level) == (
        "open", "yellow", 1, "district")
    assert (opened.province_code, opened.city_code, opened.district_code) == (
        "370000", "370100", "370102")
    assert (opened.city_name, opened.district_name) == ("济南市", "历下区")
    assert opened.departments == ("water", "city_management", "city_command")
    assert opened.departments_zh == ("水务局", "城市管理局", "市指挥中心")
    assert "历下区" in opened.title_zh and "水位超警戒" in opened.title_zh
    assert opened.title_zh == "济南市历下区 黄色水位超警戒（jn-wl-000001）"
    assert opened.title_en == ("yellow water level over warning level at Lixia District "
                               "(Jinan), jn-wl-000001")
    # The same episode escalates: the same alert, more severe, counted.
    worse = one(eng.on_anomaly(state, make(phase="escalate", severity="orange",
                                           reason="water.guaranteed", ts=T0 + MIN), None,
                               T0 + MIN))
    assert worse.alert_id == opened.alert_id
    assert (worse.severity, worse.anomaly_count, worse.seq) == ("orange", 2, 2)
    assert "emergency" in worse.departments and worse.reason == "water.guaranteed"
    # A second gauge in the district joins it instead of raising a new alert.
    joined = one(eng.on_anomaly(state, make("jn-wl-000002", since=T0 + 2 * MIN, at=near(1)),
                                None, T0 + 2 * MIN))
    assert joined.alert_id == opened.alert_id
    assert (joined.sensor_count, joined.anomaly_count, joined.last_seen_ms) == (
        2, 3, T0 + 2 * MIN)
    assert joined.severity == "orange"  # the peak stays
    acked = eng.on_command(state, cmd(opened.alert_id, "ack"), T0 + 5 * MIN)
    assert [e.type for e in acked] == ["acknowledged"]
    assert (acked[0].actor, acked[0].alert.acknowledged_by, acked[0].alert.status) == (
        "王调度", "王调度", "acknowledged")
    resolved = eng.on_command(state, cmd(opened.alert_id, "resolve", "c2", at_ms=T0 + 9 * MIN),
                              T0 + 9 * MIN)
    alert = one(resolved)
    assert (resolved[0].type, alert.status, alert.resolved_by, alert.resolved_at_ms) == (
        "resolved", "resolved", "王调度", T0 + 9 * MIN)
    assert len(state.incidents) == 1


def test_the_english_title_names_the_district_in_english_and_the_chinese_is_unchanged() -> None:
    eng, state = engine(), ScopeState()
    alert = one(eng.on_anomaly(state, make("wf-wl-000001", district=370703, at=(119.21, 36.78),
                                           severity="red", reason="water.record"), None, T0))
    assert alert.title_en.startswith("red ") and alert.title_en.endswith(
        " at Hanting District (Weifang), wf-wl-000001")
    assert "district 370703" not in alert.title_en
    assert alert.title_zh.startswith("潍坊市寒亭区 红色")
    assert (alert.district_name, alert.city_name) == ("寒亭区", "潍坊市")
    # A district the region index does not know is named by its code, as before.
    lost = one(eng.on_anomaly(state, make("xx-wl-000001", district=379901), None, T0))
    assert " at district 379901 (379900)" in lost.title_en


def test_auto_resolve_after_every_sensor_was_normal_long_enough() -> None:
    eng, state = engine(), ScopeState()
    a = one(eng.on_anomaly(state, make(), None, T0))
    eng.on_anomaly(state, make("jn-wl-000002", at=near(1)), None, T0)
    ended = eng.on_anomaly(state, make(phase="end", ts=T0 + 10 * MIN), None, T0 + 10 * MIN)
    assert one(ended).active_sensor_count == 1
    assert eng.tick(state, T0 + 30 * MIN) == []  # the second gauge is still anomalous
    eng.on_anomaly(state, make("jn-wl-000002", phase="end", at=near(1), ts=T0 + 31 * MIN),
                   None, T0 + 31 * MIN)
    assert eng.tick(state, T0 + 40 * MIN) == []  # normal for 9 of the 10 minutes
    events = eng.tick(state, T0 + 41 * MIN)
    alert = one(events)
    assert (events[0].type, events[0].actor, alert.alert_id) == ("resolved", "system", a.alert_id)
    assert (alert.status, alert.resolved_by) == ("resolved", "system")
    assert eng.tick(state, T0 + 60 * MIN) == []


def test_a_new_incident_after_resolution_gets_a_new_id_and_old_episodes_stay_closed() -> None:
    eng, state = engine(), ScopeState()
    first = one(eng.on_anomaly(state, make(), None, T0))
    eng.on_command(state, cmd(first.alert_id, "resolve"), T0 + MIN)
    # The closed episode's end and a re-sent start change nothing.
    assert eng.on_anomaly(state, make(phase="end", ts=T0 + 2 * MIN), None, T0 + 2 * MIN) == []
    assert eng.on_anomaly(state, replace(make(), ts_ms=T0 + 3 * MIN), None, T0 + 3 * MIN) == []
    # The same episode growing worse after an operator closed it: a new alert.
    worse = one(eng.on_anomaly(state, make(phase="escalate", severity="red", ts=T0 + 4 * MIN),
                               None, T0 + 4 * MIN))
    assert worse.alert_id != first.alert_id and worse.status == "open"
    eng.on_command(state, cmd(worse.alert_id, "resolve", "c9"), T0 + 5 * MIN)
    # A new episode later: another new alert.
    later = one(eng.on_anomaly(state, make(since=T0 + 60 * MIN), None, T0 + 60 * MIN))
    assert len({first.alert_id, worse.alert_id, later.alert_id}) == 3
    # Resolved incidents are forgotten after the history time.
    eng.tick(state, T0 + 5 * MIN + 7200_000 + 1)
    assert [i.alert_id for i in state.incidents] == [later.alert_id]


# -- maintenance ----------------------------------------------------------------------------


def test_sensors_in_maintenance_are_suppressed_but_recorded() -> None:
    window = MaintenanceWindow("jn-wl-*", T0 - MIN, T0 + 30 * MIN, "检修 gauge cleaning")
    eng, state = engine(maintenance=(window,)), ScopeState()
    events = eng.on_anomaly(state, make(), None, T0)
    assert [e.type for e in events] == ["suppressed"]
    e = events[0]
    assert (e.alert, e.alert_id, e.sensor_id, e.detail) == (None, "", "jn-wl-000001",
                                                            "检修 gauge cleaning")
    assert e.anomaly_id == make().anomaly_id and e.scope == "district:370102"
    assert state.incidents == [] and len(state.suppressed) == 1
    assert eng.on_anomaly(state, make(), None, T0) == []  # recorded once
    # Other sensors, and the same sensor after the window, alert as usual.
    assert one(eng.on_anomaly(state, make("jn-pp-000009", kind="pipe_pressure",
                                          reason="pressure.low", severity="orange"), None, T0))
    after = make(since=T0 + 40 * MIN)
    assert one(eng.on_anomaly(state, after, None, T0 + 40 * MIN)).status == "open"
    assert not window.covers("jn-tr-000001", T0) and window.covers("jn-wl-7", T0)
    with pytest.raises(ConfigError, match="start_ms < end_ms"):
        MaintenanceWindow("x", T0, T0)
    assert MaintenanceWindow.from_dict({"sensor": "a", "start_ms": 1, "end_ms": 2}).note == ""


@pytest.mark.parametrize("sensor", ["a*b", "a b\n", "济南*", "*", "jn-wl-1\n", "x" * 65, 7])
def test_a_maintenance_window_names_a_sensor_id_or_a_prefix_of_one(sensor: object) -> None:
    """"a*b" or "济南*" covered nothing, silently (ids are ASCII; only a final * is a prefix)."""
    with pytest.raises(ConfigError, match="must be a sensor id"):
        MaintenanceWindow(sensor, T0, T0 + MIN)  # type: ignore[arg-type]


def test_a_maintenance_window_is_scheduled_in_force_then_ended() -> None:
    window = MaintenanceWindow("jn-wl-*", T0, T0 + MIN, "检修")
    assert [window.status(t) for t in (T0 - 1, T0, T0 + MIN - 1, T0 + MIN)] == \
        ["scheduled", "in_force", "in_force", "ended"]
    with pytest.raises(ConfigError, match="'note' must be text"):
        MaintenanceWindow.from_dict({"sensor": "a", "start_ms": 1, "end_ms": 2, "note": 5})
    with pytest.raises(ConfigError, match="whole-number"):
        MaintenanceWindow("a", True, 2)  # type: ignore[arg-type]


# -- correlation --------------------------------------------------------------------------


def test_three_gauges_over_warning_become_one_area_flood_incident() -> None:
    eng, state = engine(), ScopeState()
    alerts = [one(eng.on_anomaly(state, make(f"jn-wl-00000{i}", since=T0 + i * MIN, at=near(i)),
                                 None, T0 + i * MIN)) for i in range(3)]
    assert len({a.alert_id for a in alerts}) == 1
    two, three = alerts[1], alerts[2]
    assert (two.correlated, two.severity) == (False, "yellow")
    assert (three.correlated, three.severity) == (True, "orange")  # one step up
    assert "区域性内涝/洪水" in three.title_zh and "3个传感器" in three.title_zh
    assert "area flooding" in three.title_en
    assert three.sensors == ("jn-wl-000000", "jn-wl-000001")  # capped at 2 listed
    assert three.sensor_count == 3
    assert "emergency" in three.departments


def test_gauges_far_apart_in_time_or_below_warning_do_not_correlate() -> None:
    eng, state = engine(), ScopeState()
    eng.on_anomaly(state, make("jn-wl-000001", at=near(1)), None, T0)
    eng.on_anomaly(state, make("jn-wl-000001", phase="end", at=near(1), ts=T0 + MIN), None,
                   T0 + MIN)
    eng.on_anomaly(state, make("jn-wl-000002", severity="blue", reason="water.approaching",
                               at=near(2)), None, T0 + 2 * MIN)
    # The first gauge ended 40 minutes ago: outside the 30-minute window.
    last = one(eng.on_anomaly(state, make("jn-wl-000003", since=T0 + 41 * MIN, at=near(3)),
                              None, T0 + 41 * MIN))
    assert last.sensor_count == 3 and not last.correlated and last.severity == "yellow"


def test_pressure_drops_at_neighbouring_junctions_are_one_suspected_burst() -> None:
    eng, state = engine(), ScopeState()
    first = make("jn-pp-000001", kind="pipe_pressure", reason="pressure.low", severity="orange")
    a = one(eng.on_anomaly(state, first, None, T0))
    assert a.scope == "city:370100" and a.severity == "orange" and not a.correlated
    second = make("jn-pp-000002", kind="pipe_pressure", detector="change", reason="change.drop",
                  severity="blue", at=near(5), district=370103)  # 900 m away, next district
    b = one(eng.on_anomaly(state, second, None, T0 + MIN))
    assert b.alert_id == a.alert_id and b.correlated
    assert b.severity == "red" and "疑似爆管" in b.title_zh
    assert {"water", "emergency"} <= set(b.departments)
    # A drop 30 km away is a different incident in the same city.
    far = make("jn-pp-000003", kind="pipe_pressure", reason="pressure.low", severity="orange",
               at=(117.40, 36.70), district=370112)
    c = one(eng.on_anomaly(state, far, None, T0 + 2 * MIN))
    assert c.alert_id != a.alert_id and not c.correlated and c.sensor_count == 1


def test_a_pipe_bursts_alert_id_and_grouping_follow_the_order_anomalies_arrive_in() -> None:
    """What docs/alerting.md (Identity and idempotency) says of arrival order, with the
    packaged settings: the same anomalies in the same order give the same incidents and ids,
    also through a checkpoint; in another order the opening anomaly, and so the alert id, can
    differ, and for pipes (joined by distance) so can the grouping. Not made order-free: the
    incident is published as its first anomaly arrives (docs/alerting.md says why)."""
    eng = IncidentEngine(AlertingConfig.load(), default_router())

    def drop(sensor: str, km_east: float, since: int) -> Anomaly:
        return make(sensor, kind="pipe_pressure", reason="pressure.low", severity="orange",
                    since=since, at=(120.38 + km_east / 90.0, 36.07), district=370202)

    def incidents(order: list[Anomaly], checkpoint_after: int = -1) -> list[tuple]:
        state = ScopeState()
        for i, a in enumerate(order):
            eng.on_anomaly(state, a, None, a.ts_ms)
            if i == checkpoint_after:
                state = ScopeState.from_bytes(state.to_bytes())
        return sorted((i.alert_id, tuple(sorted(i.members))) for i in state.incidents)

    # Two junctions 1 km apart whose drops began in the same window: one burst either way,
    # named after whichever arrived first.
    a, b = drop("qd-pp-a", 0, T0), drop("qd-pp-b", 1, T0)
    ab, ba = incidents([a, b]), incidents([b, a])
    assert ab == incidents([a, b]) == incidents([a, b], checkpoint_after=0)
    assert [m for _, m in ab] == [m for _, m in ba] == [("qd-pp-a", "qd-pp-b")]
    assert ab[0][0] != ba[0][0]
    # a and c 8 km apart (over join_radius_km), b between them 4 km from each; b's and c's
    # drops began 10 min after a's (past onset_s): in the order a, b, c one incident; in
    # the order a, c, b two.
    a, b, c = drop("qd-pp-a", 0, T0), drop("qd-pp-b", 4, T0 + 10 * MIN), drop(
        "qd-pp-c", 8, T0 + 10 * MIN)
    assert [m for _, m in incidents([a, b, c])] == [("qd-pp-a", "qd-pp-b", "qd-pp-c")]
    assert sorted(m for _, m in incidents([a, c, b])) == [("qd-pp-a",), ("qd-pp-b", "qd-pp-c")]


def test_which_zones_adjust_severity_as_docs_alerting_says() -> None:
    """The adjustment is the highest severity_adjust of the scope zone and of the zones the
    anomalies lie in, so an annotating zone raises (never lowers) and a scope zone also
    lowers. The doc said 'the scope zone's' (Lifecycle) and 'for incidents scoped to this
    zone' (the format), while a city-wide flood touching an underpass (+1) is raised."""
    def feature(zone_id, kind, adjust):
        return {"type": "Feature",
                "properties": {"zone_id": zone_id, "name": zone_id, "zone_kind": kind,
                               "department": "water", "severity_adjust": adjust},
                "geometry": {"type": "Polygon", "coordinates": [[
                    [117.07, 36.64], [117.10, 36.64], [117.10, 36.67], [117.07, 36.67],
                    [117.07, 36.64]]]}}
    index = ZoneIndex(ZoneSet.from_geojson({"type": "FeatureCollection", "features": [
        feature("t-low", "flood_risk", -1)]}))
    scoped = one(engine().on_anomaly(ScopeState(), make(), index, T0))  # zone_kinds ["*"]
    assert (scoped.scope, scoped.severity) == ("zone:t-low", "blue")  # yellow - 1
    city = IncidentEngine(AlertingConfig.from_dict({**CONFIG, "scope": {
        "flood": {"level": "city", "zone_kinds": []}}}), default_router())
    annotated = one(city.on_anomaly(ScopeState(), make(), index, T0))
    assert (annotated.scope, annotated.severity) == ("city:370100", "yellow")
    assert annotated.zone_ids == ("t-low",)
    doc = " ".join((Path(__file__).parents[2] / "docs" / "alerting.md").read_text("utf-8")
                   .split())
    assert "+ the scope zone's `severity_adjust`, clamped" not in doc
    assert "severity steps for incidents scoped to this zone |" not in doc
    assert ("the highest `severity_adjust` of its scope zone and of the zones its anomalies "
            "lie in") in doc


def test_zone_scope_severity_adjustment_and_owner() -> None:
    def feature(zone_id, kind, dept, adjust, x0, y0, x1, y1):
        return {"type": "Feature",
                "properties": {"zone_id": zone_id, "name": zone_id, "zone_kind": kind,
                               "department": dept, "severity_adjust": adjust},
                "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1],
                                                                 [x0, y1], [x0, y0]]]}}
    zones = ZoneSet.from_geojson({"type": "FeatureCollection", "features": [
        feature("t-flood", "flood_risk", "water", 0, 117.07, 36.64, 117.10, 36.67),
        feature("t-hospital", "hospital", "health", 1, 117.079, 36.654, 117.081, 36.656),
    ]})
    index = ZoneIndex(zones)
    eng, state = engine(), ScopeState()
    alert = one(eng.on_anomaly(state, make(), index, T0))
    assert alert.scope == "zone:t-hospital" and alert.zone_ids == ("t-hospital", "t-flood")
    assert alert.zone_kinds == ("hospital", "flood_risk")
    assert alert.severity == "orange"  # yellow + 1 for the hospital
    assert "health" in alert.departments and "t-hospital" in alert.title_zh
    assert eng.scope_key(make(), index) == "zone:t-hospital"
    # Faults ignore the zone: not more severe, not the hospital's business.
    fault = make("jn-wl-000005", detector="flatline", reason="fault.flatline", severity="blue")
    assert eng.on_anomaly(state, fault, index, T0) == []  # held first (fault_hold_s)
    f = one(eng.tick(state, T0 + 3 * MIN))
    assert (f.family, f.severity, f.departments) == ("sensor_fault", "blue",
                                                     ("water", "city_command"))


def test_a_flood_keeps_a_water_reason_when_worse_congestion_joins_it() -> None:
    # Seen in `up --scenario rainstorm-jinan`: the city-wide red flood alert said 交通严重拥堵
    # (severe traffic congestion), the reason of its most severe member, a road sensor.
    config = {**CONFIG, "scope": {**CONFIG["scope"], "traffic": {
        "level": "district", "joins_open": "flood"}}}
    eng, state = IncidentEngine(AlertingConfig.from_dict(config), default_router()), ScopeState()
    one(eng.on_anomaly(state, make(severity="orange", reason="water.guaranteed"), None, T0))
    jam = make("jn-tr-000003", kind="traffic", detector="traffic", reason="traffic.congestion",
               severity="red", at=near(1), ts=T0 + MIN)
    alert = one(eng.on_anomaly(state, jam, None, T0 + MIN))
    assert alert.family == "flood" and alert.sensor_count == 2
    assert alert.severity == "red"  # the jam still counts for how severe the incident is
    assert alert.reason == "water.guaranteed" and "拥堵" not in alert.reason_zh
    assert "transport" in alert.departments  # and transport is still told
    # A worse water level still becomes the headline; a fault never does.
    worse = one(eng.on_anomaly(state, make("jn-wl-000002", severity="red", reason="water.record",
                                           at=near(2), ts=T0 + 2 * MIN), None, T0 + 2 * MIN))
    assert worse.reason == "water.record"
    stuck = make("jn-wl-000002", detector="flatline", reason="fault.flatline", severity="red",
                 at=near(2), ts=T0 + 3 * MIN)
    assert one(eng.on_anomaly(state, stuck, None, T0 + 3 * MIN)).reason == "water.record"


def test_a_fault_of_a_sensor_already_in_an_incident_joins_it() -> None:
    eng, state = engine(), ScopeState()
    flood = one(eng.on_anomaly(state, make(), None, T0))
    silent = make(detector="silence", reason="fault.silence", severity="blue", ts=T0 + MIN)
    joined = one(eng.on_anomaly(state, silent, None, T0 + MIN))
    assert joined.alert_id == flood.alert_id and joined.anomaly_count == 2
    assert joined.reason == "water.warning"  # the headline stays the real event
    # A fault of a sensor in no incident is an incident of its own (silence: of the scope).
    other = one(eng.on_anomaly(state, make("jn-wl-000002", detector="silence",
                                           reason="fault.silence", severity="blue"), None, T0))
    assert other.alert_id != flood.alert_id and other.family == "sensor_fault"
    assert other.incident_key == "sensor_fault@district:370102/water_level"
    assert other.sensors == ("jn-wl-000002",) and "jn-wl-000002" in other.title_zh


def silent(sensor: str, *, phase: str = "start", since: int = T0, ts: int | None = None,
           kind: str = "water_level", district: int = 370102) -> Anomaly:
    return make(sensor, phase=phase, kind=kind, detector="silence", reason="fault.silence",
                severity="blue", since=since, ts=ts, district=district, score=0.9)


def test_sensors_falling_silent_together_are_one_alert_per_scope_not_one_each() -> None:
    """12,000 sensors that each sent one reading went silent together: one incident per
    device made 12,000 alerts, and every anomaly looked through every incident of the scope
    (~2.6 ms each at 8,000-12,000, ~18 s for the storm, on the loop detection shares)."""
    eng, state = engine(), ScopeState()
    events = []
    for i in range(3000):
        events += eng.on_anomaly(state, silent(f"int-{i:05d}", ts=T0 + 3 * MIN), None,
                                 T0 + 3 * MIN)
    assert [e.type for e in events] == ["opened"] + ["updated"] * 2999
    assert len(state.incidents) == 1 and len({e.alert_id for e in events}) == 1
    alert = events[-1].alert
    assert (alert.family, alert.incident_key, alert.scope) == (
        "sensor_fault", "sensor_fault@district:370102/water_level", "district:370102")
    assert (alert.sensor_count, alert.active_sensor_count, alert.anomaly_count) == (
        3000, 3000, 3000)
    assert alert.severity == "blue" and "（3000个传感器）" in alert.title_zh
    assert "传感器失联" in alert.title_zh
    assert alert.departments == ("water", "city_command")  # the owner, no emergency
    # A replay changes nothing; the state survives a checkpoint.
    assert eng.on_anomaly(state, silent("int-00007", ts=T0 + 3 * MIN), None, T0 + 4 * MIN) == []
    state = ScopeState.from_bytes(state.to_bytes())
    assert state.incidents[0].active_members == 3000
    # Another scope's silent sensors are that scope's incident (kept in that scope's state).
    elsewhere = one(eng.on_anomaly(ScopeState(), silent("qd-1", district=370202), None, T0))
    assert elsewhere.incident_key == "sensor_fault@district:370202/water_level"


def test_silent_sensors_of_two_kinds_in_one_scope_are_an_alert_per_owner() -> None:
    """Gauges and road sensors of a city share its scope (both scoped per city), but a fault
    goes to its sensor's owner: silent gauges to water affairs, silent roads to transport."""
    eng, state = IncidentEngine(AlertingConfig.load(), default_router()), ScopeState()
    gauge = one(eng.on_anomaly(state, silent("g-1"), None, T0))
    road = one(eng.on_anomaly(state, silent("r-1", kind="traffic"), None, T0))
    assert gauge.scope == road.scope == "city:370100" and gauge.alert_id != road.alert_id
    assert road.incident_key == "sensor_fault@city:370100/traffic"
    assert gauge.departments == ("water", "city_command")
    assert road.departments == ("transport", "city_command")
    again = one(eng.on_anomaly(state, silent("r-2", kind="traffic"), None, T0))
    assert (again.alert_id, again.sensor_count) == (road.alert_id, 2)


def test_a_silence_incident_resolves_once_every_silent_sensor_reports_again() -> None:
    eng, state = engine(), ScopeState()
    first = one(eng.on_anomaly(state, silent("s-1", ts=T0 + 3 * MIN), None, T0 + 3 * MIN))
    one(eng.on_anomaly(state, silent("s-2", ts=T0 + 4 * MIN), None, T0 + 4 * MIN))
    back = one(eng.on_anomaly(state, silent("s-1", phase="end", ts=T0 + 5 * MIN), None,
                              T0 + 5 * MIN))
    assert (back.alert_id, back.active_sensor_count, back.status) == (first.alert_id, 1, "open")
    assert eng.tick(state, T0 + 30 * MIN) == []  # s-2 is still silent
    eng.on_anomaly(state, silent("s-2", phase="end", ts=T0 + 31 * MIN), None, T0 + 31 * MIN)
    resolved = one(eng.tick(state, T0 + 41 * MIN))
    assert (resolved.alert_id, resolved.status) == (first.alert_id, "resolved")
    # A stuck sensor is still a job on that one device: its own alert, once held.
    stuck = make("s-3", detector="flatline", reason="fault.flatline", severity="blue",
                 ts=T0 + 42 * MIN)
    assert eng.on_anomaly(state, stuck, None, T0 + 42 * MIN) == []
    alert = one(eng.tick(state, T0 + 45 * MIN))
    assert alert.incident_key == "sensor_fault@sensor:s-3" and alert.alert_id != first.alert_id


# -- escalation -----------------------------------------------------------------------------


def severe(state: ScopeState, eng: IncidentEngine) -> Alert:
    return one(eng.on_anomaly(state, make(severity="orange", reason="water.guaranteed"), None,
                              T0))


def test_unacknowledged_severe_incidents_escalate_district_city_province() -> None:
    eng, state = engine(), ScopeState()
    alert = severe(state, eng)
    assert eng.tick(state, T0 + 15 * MIN - 1) == []
    city = eng.tick(state, T0 + 15 * MIN)
    assert [(e.type, e.detail) for e in city] == [("escalated", "city")]
    assert city[0].alert.escalation_level == "city"
    assert "province_command" not in city[0].alert.departments
    assert eng.tick(state, T0 + 45 * MIN - 1) == []
    province = one(eng.tick(state, T0 + 45 * MIN))
    assert province.escalation_level == "province" and province.alert_id == alert.alert_id
    assert "province_command" in province.departments
    assert eng.tick(state, T0 + 300 * MIN) == []  # nowhere higher


def test_a_late_tick_catches_up_at_the_due_times() -> None:
    eng, state = engine(), ScopeState()
    severe(state, eng)
    events = eng.tick(state, T0 + 100 * MIN)
    assert [(e.detail, e.at_ms) for e in events] == [("city", T0 + 15 * MIN),
                                                     ("province", T0 + 45 * MIN)]


def test_acknowledging_stops_escalation_and_mild_incidents_never_escalate() -> None:
    eng, state = engine(), ScopeState()
    alert = severe(state, eng)
    eng.tick(state, T0 + 15 * MIN)
    eng.on_command(state, cmd(alert.alert_id, "ack"), T0 + 16 * MIN)
    assert eng.tick(state, T0 + 300 * MIN) == []
    assert state.find(alert.alert_id).escalation_level == "city"
    mild_state = ScopeState()
    one(eng.on_anomaly(mild_state, make(), None, T0))  # yellow
    assert eng.tick(mild_state, T0 + 300 * MIN) == []


DAY = 24 * 60 * MIN


def test_an_alert_quiet_for_a_day_is_restated_with_its_snapshot_unchanged() -> None:
    """The alerts topic keeps 7 days of events; an alert open longer with no change must
    still have an event there, or an API started afresh would not show it."""
    eng, state = engine(), ScopeState()
    opened = one(eng.on_anomaly(state, make(), None, T0))  # yellow: never escalates
    assert eng.tick(state, T0 + DAY - 1) == []
    events = eng.tick(state, T0 + DAY)
    assert [(e.type, e.actor, e.at_ms) for e in events] == [("restated", "system", T0 + DAY)]
    again = events[0].alert
    assert again.seq == opened.seq + 1
    assert {**asdict(again), "seq": 0} == {**asdict(opened), "seq": 0}
    assert eng.tick(state, T0 + 2 * DAY - 1) == []
    assert [e.type for e in eng.tick(state, T0 + 2 * DAY)] == ["restated"]
    # A week without a worker: one restatement when it is back, not one per missed day.
    assert [e.alert.seq for e in eng.tick(state, T0 + 9 * DAY)] == [opened.seq + 3]


def test_any_event_puts_the_restatement_off_and_resolved_alerts_are_not_restated() -> None:
    eng, state = engine(), ScopeState()
    opened = one(eng.on_anomaly(state, make(), None, T0))
    eng.on_command(state, cmd(opened.alert_id, "comment", text="巡查中", at_ms=T0 + 12 * 60 * MIN),
                   T0 + 12 * 60 * MIN)
    assert eng.tick(state, T0 + DAY) == []  # commented 12 h in: due 12 h later
    acked = eng.tick(state, T0 + DAY + 12 * 60 * MIN)
    assert [(e.type, e.alert.status) for e in acked] == [("restated", "open")]
    eng.on_command(state, cmd(opened.alert_id, "ack", "c2", at_ms=T0 + 2 * DAY), T0 + 2 * DAY)
    assert [(e.type, e.alert.status) for e in eng.tick(state, T0 + 3 * DAY)] == [
        ("restated", "acknowledged")]
    eng.on_command(state, cmd(opened.alert_id, "resolve", "c3", at_ms=T0 + 3 * DAY + MIN),
                   T0 + 3 * DAY + MIN)
    assert eng.tick(state, T0 + 6 * DAY) == []


def test_an_alert_from_a_checkpoint_written_before_restatement_is_restated_at_once() -> None:
    eng, state = engine(), ScopeState()
    opened = one(eng.on_anomaly(state, make(), None, T0))
    doc = state.to_dict()
    for incident in doc["incidents"]:
        del incident["last_event_ms"]  # as written before 2026-11-24
    old = ScopeState.from_dict(json.loads(json.dumps(doc)))
    assert old.incidents[0].last_event_ms is None
    events = eng.tick(old, T0 + 3 * DAY)  # its opening is the guess: long enough ago
    assert [(e.type, e.alert_id) for e in events] == [("restated", opened.alert_id)]
    assert ScopeState.from_bytes(old.to_bytes()).incidents[0].last_event_ms == T0 + 3 * DAY


def gauges(eng: IncidentEngine, state: ScopeState, n: int, *, width: int = 6) -> list[str]:
    """``n`` gauges over the line, one a second from T0 (ids ``jn-wl-`` + ``width`` digits);
    blue: no correlation, no escalation, so the tick's only events are restatements."""
    ids = [f"jn-wl-{i:0{width}d}" for i in range(n)]
    for i, sensor in enumerate(ids):
        eng.on_anomaly(state, make(sensor, since=T0 + i * 1000, at=near(i % 50),
                                   severity="blue"), None, T0 + i * 1000)
    return ids


def test_a_restated_event_names_every_sensor_of_the_alert_not_only_the_listed() -> None:
    """The snapshot lists ``max_sensors_listed`` sensors (2 here); an API started afresh
    knows the others only from the events it reads, a week of them, and a prefix-scoped key
    sees the alert through any of them. The restatement names them all."""
    eng, state = engine(), ScopeState()
    ids = gauges(eng, state, 5)
    assert eng.tick(state, T0 + DAY + 999) == []  # a day after the second gauge's event
    (event,) = eng.tick(state, T0 + DAY + 1000)
    assert event.type == "restated" and event.alert.sensors == tuple(ids[:2])
    assert event.members == tuple(ids)
    doc = json.loads(json.dumps(event.to_dict()))
    assert doc["members"] == ids and AlertEvent.from_dict(doc) == event
    # The other events leave it out, as before it existed.
    assert all("members" not in e.to_dict() for e in eng.on_anomaly(
        state, make("jn-wl-000009", since=T0 + DAY, at=near(9)), None, T0 + DAY))


def test_an_alert_with_unlisted_sensors_is_restated_daily_even_while_busy() -> None:
    """Events every 6 hours keep a quiet-alert restatement off for ever; an alert with more
    sensors than it lists still needs one a day, or a member whose own events are a week
    old is unknown to a starting API. One that lists every sensor does not."""
    for n, listed in ((5, False), (2, True)):
        eng, state = engine(), ScopeState()
        gauges(eng, state, n)
        restated = []
        for hour in range(6, 4 * 24 + 1, 6):
            now = T0 + hour * 60 * MIN
            eng.on_command(state, cmd(state.incidents[0].alert_id, "comment", f"c{hour}",
                                      text="巡查中", at_ms=now), now)
            restated += [e.at_ms for e in eng.tick(state, now + 1) if e.type == "restated"]
        if listed:
            assert restated == [], n
        else:  # the first at the first tick a day after the last event that listed them
            # all (the second gauge's, T0 + 1 s), then a day after each restatement
            assert restated == [T0 + (24 * d + 6) * 60 * MIN + 1 for d in (1, 2, 3)], restated


def test_the_sensors_of_a_huge_alert_are_bounded_to_what_a_kafka_record_takes() -> None:
    """Kafka and Faust's producer refuse a record over 1 MB. A 1,000-gauge flood's
    restatement is ~15 KB (``jn-wl-000123`` ids); past MEMBERS_BYTES (512 KB, 7,825 ids of 64
    characters) the list keeps the earliest members, whose own events are the oldest."""
    eng, state = engine(), ScopeState()
    ids = gauges(eng, state, 1000)
    (event,) = eng.tick(state, T0 + DAY + 1000)
    assert event.members == tuple(ids)
    assert len(orjson.dumps(event.to_dict())) < 20_000
    eng, state = engine(), ScopeState()
    ids = gauges(eng, state, 8000, width=58)  # 64-character ids
    (event,) = eng.tick(state, T0 + DAY + 1000)
    size = len(orjson.dumps(event.to_dict()))
    assert event.members == tuple(ids[:7825]) and event.alert.sensor_count == 8000
    assert MEMBERS_BYTES < size < 1_000_000
    # Restated daily all the same, not at every tick.
    assert eng.tick(state, T0 + DAY + 5000) == []
    assert [e.type for e in eng.tick(state, T0 + 2 * DAY + 1000)] == ["restated"]


def test_a_big_alert_from_a_checkpoint_without_roster_ms_is_restated_at_once() -> None:
    eng, state = engine(), ScopeState()
    ids = gauges(eng, state, 5)
    doc = state.to_dict()
    for incident in doc["incidents"]:
        del incident["roster_ms"]  # as written before 2026-11-25
    old = ScopeState.from_dict(json.loads(json.dumps(doc)))
    assert old.incidents[0].roster_ms is None
    # Its last event was 4 s ago, but nothing says one named every sensor: its opening is
    # the guess, a day ago.
    (event,) = eng.tick(old, T0 + DAY)
    assert event.type == "restated" and event.members == tuple(ids)
    assert ScopeState.from_bytes(old.to_bytes()).incidents[0].roster_ms == T0 + DAY


# -- idempotency and replay ------------------------------------------------------------------


def test_a_duplicate_anomaly_changes_nothing_and_emits_nothing() -> None:
    eng, state = engine(), ScopeState()
    one(eng.on_anomaly(state, make(), None, T0))
    before = state.to_bytes()
    assert eng.on_anomaly(state, make(), None, T0 + 5) == []
    assert state.to_bytes() == before
    assert len(state.incidents) == 1


def story() -> list[tuple[Anomaly, int]]:
    """Two districts' worth of gauges starting, escalating and ending (with the clock)."""
    out = []
    for i in range(4):
        district = 370102 if i < 3 else 370103
        a = make(f"jn-wl-00000{i}", since=T0 + i * MIN, at=near(i), district=district)
        out.append((a, a.ts_ms))
        e = replace(a, phase="escalate", severity="orange", reason="water.guaranteed",
                    ts_ms=a.ts_ms + 5 * MIN)
        out.append((e, e.ts_ms))
        out.append((replace(a, phase="end", ts_ms=a.ts_ms + 20 * MIN), a.ts_ms + 20 * MIN))
    return sorted(out, key=lambda pair: pair[1])


def play(eng: IncidentEngine, states: dict[str, ScopeState], items) -> list[AlertEvent]:
    events = []
    for a, now in items:
        state = states.setdefault(eng.scope_key(a, None), ScopeState())
        events += eng.on_anomaly(state, a, None, now)
        for s in states.values():
            events += eng.tick(s, now)
    return events


def test_replaying_from_a_checkpoint_gives_the_same_alerts() -> None:
    eng = engine()
    items = story()
    states: dict[str, ScopeState] = {}
    first_half = play(eng, states, items[:5])
    checkpoint = {k: s.to_bytes() for k, s in states.items()}
    second_half = play(eng, states, items[5:])
    original = first_half + second_half
    assert len({e.alert_id for e in original}) == 2  # one incident per district
    # A worker restarting from the checkpoint re-reads everything after it ...
    restored = {k: ScopeState.from_bytes(b) for k, b in checkpoint.items()}
    again = play(eng, restored, items[5:])
    assert [e.event_id for e in again] == [e.event_id for e in second_half]
    assert [e.alert for e in again] == [e.alert for e in second_half]
    # ... and a redelivery of already applied anomalies emits nothing.
    assert play(eng, restored, items[:5]) == []
    # A fresh state replaying everything makes the same alert ids.
    fresh = play(eng, {}, items)
    assert [e.event_id for e in fresh] == [e.event_id for e in original]
    assert {k: s.to_dict() for k, s in restored.items()} == {k: s.to_dict() for k, s in
                                                            states.items()}


# -- commands -------------------------------------------------------------------------------


def test_commands_are_idempotent_by_command_id() -> None:
    eng, state = engine(), ScopeState()
    alert = one(eng.on_anomaly(state, make(), None, T0))
    assign = cmd(alert.alert_id, "assign", "c1", assignee="历下区排水队")
    assert one(eng.on_command(state, assign, T0)).assigned_to == "历下区排水队"
    assert eng.on_command(state, assign, T0) == []  # redelivered
    note = cmd(alert.alert_id, "comment", "c2", text="现场积水30厘米")
    commented = eng.on_command(state, note, T0)
    assert [(e.type, e.detail, e.alert.comments) for e in commented] == [
        ("commented", "现场积水30厘米", 1)]
    assert eng.on_command(state, note, T0) == []
    assert one(eng.on_command(state, cmd(alert.alert_id, "ack", "c3"), T0)).status == (
        "acknowledged")
    assert eng.on_command(state, cmd(alert.alert_id, "ack", "c4"), T0) == []  # already acked
    assert eng.on_command(state, cmd("inc-unknown", "ack", "c5"), T0) == []
    eng.on_command(state, cmd(alert.alert_id, "resolve", "c6"), T0)
    assert eng.on_command(state, cmd(alert.alert_id, "assign", "c7", assignee="x"), T0) == []
    post = one(eng.on_command(state, cmd(alert.alert_id, "comment", "c8", text="复盘"), T0))
    assert post.comments == 2 and post.status == "resolved"
    assert state.find(alert.alert_id).seq == post.seq == 6


def test_an_assigns_note_is_kept_in_the_events_detail_after_the_assignee() -> None:
    """POST /v1/alerts/{id}/assign takes an optional note; the event's detail was the
    assignee alone, so the note reached the commands topic and nothing after it."""
    eng, state = engine(), ScopeState()
    alert = one(eng.on_anomaly(state, make(), None, T0))
    noted = cmd(alert.alert_id, "assign", "c1", assignee="二队", text="一队在别处抢险")
    plain = cmd(alert.alert_id, "assign", "c2", assignee="一队")
    assert [(e.type, e.detail, e.alert.assigned_to)
            for c in (noted, plain) for e in eng.on_command(state, c, T0)] == [
        ("assigned", "二队 — 一队在别处抢险", "二队"), ("assigned", "一队", "一队")]


@pytest.mark.parametrize(("doc", "words"), [
    ({"alert_id": "a", "action": "ack", "actor": "x", "at_ms": 1}, "'command_id' is missing"),
    ({"command_id": "c", "alert_id": "a", "action": "close", "actor": "x", "at_ms": 1},
     "'action' must be one of"),
    ({"command_id": "c", "alert_id": "a", "action": "assign", "actor": "x", "at_ms": 1},
     "'assignee' must be given"),
    ({"command_id": "c", "alert_id": "a", "action": "comment", "actor": "x", "at_ms": 1},
     "'text' must be given"),
    ({"command_id": "c", "alert_id": "a", "action": "ack", "actor": "", "at_ms": 1},
     "'actor' must be non-empty"),
    ({"command_id": "c", "alert_id": "a", "action": "ack", "actor": "x", "at_ms": "now"},
     "'at_ms' must be epoch milliseconds"),
    ({"command_id": "c", "alert_id": "a", "action": "ack", "actor": "x", "at_ms": 1, "by": 2},
     "unknown field 'by'"),
    ([1, 2], "expected an object"),
])
def test_invalid_commands_are_rejected_with_a_clear_error(doc, words: str) -> None:
    with pytest.raises(InvalidCommand, match=words):
        Command.from_dict(doc)


def test_a_command_round_trips() -> None:
    command = cmd("inc-1", "assign", assignee="李工")
    assert Command.from_dict(json.loads(json.dumps(command.to_dict()))) == command
    assert Command.from_dict({**command.to_dict(), "at_ms": 5.0}).at_ms == 5


# -- serialisation ------------------------------------------------------------------------


def test_state_alert_and_event_round_trip_through_json() -> None:
    eng, state = engine(), ScopeState()
    events = [*eng.on_anomaly(state, make(), None, T0),
              *eng.on_anomaly(state, make("jn-wl-000002", at=near(1)), None, T0 + MIN),
              *eng.on_command(state, cmd(state.incidents[0].alert_id, "ack"), T0 + MIN)]
    state.suppressed["x:start:0"] = T0
    again = ScopeState.from_bytes(state.to_bytes())
    assert again.to_dict() == state.to_dict()
    assert again.incidents[0].applied == state.incidents[0].applied
    for event in events:
        text = json.dumps(event.to_dict(), ensure_ascii=False)
        assert AlertEvent.from_dict(json.loads(text)) == event
    alert = events[-1].alert
    assert Alert.from_dict(json.loads(json.dumps(alert.to_dict()))) == alert
    # The restored state carries on where the original would.
    assert one(eng.on_anomaly(again, make("jn-wl-000003", at=near(2)), None, T0 + 2 * MIN)) == \
        one(eng.on_anomaly(state, make("jn-wl-000003", at=near(2)), None, T0 + 2 * MIN))


def test_an_alert_event_as_a_dict_is_the_document_asdict_gave() -> None:
    """The wire format of the alerts topic did not change when ``to_dict`` stopped deep
    copying: the same keys and values (tuples as lists), also for an event without an alert.
    ``members`` (restated events only) is left out where it is None: other events are what
    they were before it existed."""
    eng, state = engine(), ScopeState()
    events = [*eng.on_anomaly(state, make(), None, T0),
              *eng.on_anomaly(state, make("jn-wl-000002", at=near(1)), None, T0 + MIN)]
    events.append(replace(events[-1], type="suppressed", alert_id="", alert=None))

    def listed(value):
        if isinstance(value, dict):
            return {k: listed(v) for k, v in value.items()}
        return [listed(v) for v in value] if isinstance(value, tuple | list) else value

    for event in events:
        doc = event.to_dict()
        assert event.members is None and "members" not in doc
        assert doc == {k: v for k, v in listed(asdict(event)).items() if k != "members"}
        assert json.loads(json.dumps(doc)) == doc  # lists, never tuples
    sensors = events[1].to_dict()["alert"]["sensors"]
    assert sensors == ["jn-wl-000001", "jn-wl-000002"]
    sensors.append("changed")  # the document is a copy: the alert is untouched
    assert events[1].alert.sensors == ("jn-wl-000001", "jn-wl-000002")


@pytest.mark.parametrize("garbage", [
    b"", b"\xff\xfe", b"not json", b"[]", b"{}", b'{"v": 2, "incidents": [], "suppressed": {}}',
    b'{"v": 1, "incidents": [{"alert_id": "x"}], "suppressed": {}}',
    b'{"v": 1, "incidents": [], "suppressed": {"k": "soon"}}',
    b'{"v": 1, "incidents": 5, "suppressed": {}}',
])
def test_garbage_state_bytes_raise_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError):
        ScopeState.from_bytes(garbage)


def test_an_empty_state_says_so() -> None:
    assert ScopeState().is_empty
    assert ScopeState.from_bytes(ScopeState().to_bytes()).is_empty


# -- the alerting evaluation ----------------------------------------------------------------


def injected_run() -> tuple[list[Anomaly], list[dict]]:
    """A storm over three gauges of one district, a burst at two junctions, a stuck sensor."""
    anomalies, labels = [], []
    start, end = T0, T0 + 60 * MIN

    def label(a: Anomaly, kind: str, source: str) -> None:
        labels.append({"sensor_id": a.sensor_id, "kind": a.kind, "anomaly": kind,
                       "start_ms": start, "end_ms": end, "source": source})

    for i in range(3):
        a = make(f"jn-wl-00000{i}", since=T0 + i * MIN, at=near(i))
        anomalies += [a, replace(a, phase="escalate", severity="red", reason="water.record",
                                 ts_ms=a.ts_ms + 10 * MIN),
                      replace(a, phase="end", ts_ms=a.ts_ms + 50 * MIN)]
        label(a, "rainstorm", "storm#0")
    for i in range(2):
        a = make(f"qd-pp-00000{i}", kind="pipe_pressure", reason="pressure.critical",
                 severity="red", since=T0 + 2 * MIN, at=(120.40 + 0.01 * i, 36.16),
                 district=370213)
        anomalies += [a, replace(a, phase="end", ts_ms=a.ts_ms + 40 * MIN)]
        label(a, "burst", "storm#1")
    stuck = make("zb-tr-000007", kind="traffic", detector="flatline", reason="fault.flatline",
                 severity="blue", at=(118.05, 36.80), district=370303)
    anomalies += [stuck, replace(stuck, phase="end", ts_ms=stuck.ts_ms + 30 * MIN)]
    label(stuck, "stuck", "storm#2")
    return anomalies, labels


def test_alerting_eval_scores_one_alert_per_injected_incident() -> None:
    from cityagent.alerting_eval import evaluate_alerting

    anomalies, labels = injected_run()
    result = evaluate_alerting(anomalies, labels, engine=engine(), zone_points=5_000)
    assert result["alerts_per_incident"] == 1.0
    assert result["incidents_with_one_alert"] == result["injected_incidents"] == 3
    assert result["alerts"] == 3
    assert result["storm_alert_reduction"] == round(len(anomalies) / 3, 2)
    assert result["routing_accuracy"] == 1.0
    assert result["zone_agreement"] == 1.0


def test_alerting_eval_notices_wrong_routing_and_split_incidents() -> None:
    from cityagent.alerting_eval import evaluate_alerting, expected_route
    from cityagent.routing import Router

    anomalies, labels = injected_run()
    doc = {"departments": {code: {"zh": d.zh, "en": d.en}
                           for code, d in default_router().departments.items()},
           "rule": [{"departments": ["water"]}, {"reason": "fault.*",
                                                 "departments": ["emergency"]}]}
    careless = IncidentEngine(AlertingConfig.from_dict(CONFIG), Router.from_dict(doc))
    result = evaluate_alerting(anomalies, labels, engine=careless, zone_points=0)
    assert result["routing_accuracy"] < 0.5  # no emergency for the burst, a fault paging it
    assert result["zone_agreement"] is None
    # With a join radius of 0.5 km, the two junctions 900 m apart become two alerts.
    split = {**CONFIG, "scope": {"pipe": {"level": "district", "join_radius_km": 0.5}}}
    apart = IncidentEngine(AlertingConfig.from_dict(split), default_router())
    result = evaluate_alerting(anomalies, labels, engine=apart, zone_points=0)
    assert result["alerts_per_incident_by_type"]["burst"] == 2.0
    assert expected_route("stuck", "traffic").correct(["transport", "city_command"], "blue")
    assert not expected_route("stuck", "traffic").correct(
        ["transport", "emergency", "city_command"], "blue")
    assert not expected_route("burst", "pipe_pressure").correct(["water", "city_command"], "red")


# -- held faults and echoes -----------------------------------------------------------------


def test_a_spike_followed_by_the_sensors_real_anomaly_is_one_incident() -> None:
    eng, state = engine(), ScopeState()
    spike = make("jn-pp-000001", kind="pipe_pressure", detector="spike",
                 reason="fault.spike_down", severity="blue")
    assert eng.on_anomaly(state, spike, None, T0) == []  # a step's first reading: held
    drop = make("jn-pp-000001", kind="pipe_pressure", reason="pressure.low", severity="orange",
                since=T0 + MIN)
    alert = one(eng.on_anomaly(state, drop, None, T0 + MIN))
    assert alert.family == "pipe" and alert.anomaly_count == 2 and alert.reason == "pressure.low"
    assert state.held == {}
    assert eng.tick(state, T0 + 10 * MIN) == []  # nothing left to release
    assert len(state.incidents) == 1


def test_a_lone_fault_becomes_its_own_alert_once_held_long_enough() -> None:
    eng, state = engine(), ScopeState()
    stuck = make("jn-wl-000009", detector="flatline", reason="fault.flatline", severity="blue")
    assert eng.on_anomaly(state, stuck, None, T0) == []
    assert eng.on_anomaly(state, stuck, None, T0 + MIN) == []  # a duplicate while held
    assert eng.tick(state, T0 + 2 * MIN) == []  # not yet due (150 s)
    alert = one(eng.tick(state, T0 + 3 * MIN))
    assert alert.family == "sensor_fault" and alert.sensors == ("jn-wl-000009",)
    # Held state survives a checkpoint.
    state2 = ScopeState.from_bytes(state.to_bytes())
    assert state2.held == {} and len(state2.incidents) == 1


def test_an_auto_resolved_incidents_echo_is_not_a_new_alert() -> None:
    eng, state = engine(), ScopeState()
    low = make("qd-pp-000001", kind="pipe_pressure", reason="pressure.low", severity="orange",
               district=370202)
    first = one(eng.on_anomaly(state, low, None, T0))
    eng.on_anomaly(state, replace(low, phase="end", ts_ms=T0 + 5 * MIN), None, T0 + 5 * MIN)
    resolved = one(eng.tick(state, T0 + 16 * MIN))  # normal for 600 s: auto-resolved
    assert resolved.status == "resolved" and resolved.resolved_by == "system"
    # The pressure rising back after the repair, half an hour later: the same incident's tail.
    rise = make("qd-pp-000001", kind="pipe_pressure", detector="change", reason="change.rise",
                severity="blue", since=T0 + 45 * MIN, district=370202)
    assert eng.on_anomaly(state, rise, None, T0 + 45 * MIN) == []
    # A worse episode is news, though.
    crit = make("qd-pp-000001", kind="pipe_pressure", reason="pressure.critical",
                severity="red", since=T0 + 50 * MIN, district=370202)
    assert one(eng.on_anomaly(state, crit, None, T0 + 50 * MIN)).alert_id != first.alert_id


def test_with_the_packaged_settings_a_zone_annotates_and_raises_a_city_flood() -> None:
    zones = ZoneSet.from_geojson({"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"zone_id": "t-school", "name": "t-school", "zone_kind": "school",
                       "department": "education", "severity_adjust": 1},
        "geometry": {"type": "Polygon", "coordinates": [[[117.079, 36.654], [117.081, 36.654],
                                                         [117.081, 36.656], [117.079, 36.656],
                                                         [117.079, 36.654]]]}}]})
    eng = IncidentEngine(AlertingConfig.load(), default_router())
    state = ScopeState()
    index = ZoneIndex(zones)
    outside = make("jn-wl-000002", at=near(40))  # ~7 km east: not in the school zone
    first = one(eng.on_anomaly(state, outside, index, T0))
    assert first.scope == "city:370100" and first.severity == "yellow" and first.zone_ids == ()
    inside = make("jn-wl-000003", since=T0 + MIN)  # at the school
    joined = one(eng.on_anomaly(state, inside, index, T0 + MIN))
    assert joined.alert_id == first.alert_id  # one city flood, not a second incident
    assert joined.zone_ids == ("t-school",) and joined.severity == "orange"
    assert "education" in joined.departments


def test_the_active_member_count_follows_every_start_end_replay_and_restore() -> None:
    """Alerts carry ``active_sensor_count``, kept as members change rather than counted per
    event; after any mix of episodes, ends, replays and a restore it equals the count."""
    import random

    rng = random.Random(7)
    eng, state = engine(), ScopeState()
    since = {f"jn-wl-{i:03d}": T0 for i in range(30)}
    for step in range(600):
        sensor = rng.choice(sorted(since))
        if rng.random() < 0.5:
            since[sensor] = T0 + step * MIN if rng.random() < 0.3 else since[sensor]
            anomaly = make(sensor, since=since[sensor], ts=T0 + step * MIN, at=near(1))
        else:
            anomaly = make(sensor, phase="end", since=since[sensor], ts=T0 + step * MIN,
                           at=near(1))
        events = eng.on_anomaly(state, anomaly, None, T0 + step * MIN)
        if rng.random() < 0.05:
            assert eng.on_anomaly(state, anomaly, None, T0 + step * MIN) == []  # a replay
        if rng.random() < 0.05:
            state = ScopeState.from_bytes(state.to_bytes())
        for incident in state.incidents:
            actual = sum(1 for m in incident.members.values() if m.active)
            assert incident.active_members == actual, step
        for event in events:
            incident = state.find(event.alert_id)
            assert event.alert.active_sensor_count == incident.active_members
    assert any(i.active_members for i in state.incidents)
    assert any(m.active == [] for i in state.incidents for m in i.members.values())
