"""Response shapes of the API, so the OpenAPI document says what clients get."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ("ItemError", "ReadingsAccepted", "ReadingsRejected", "AlertPublic", "AlertsPublic",
           "AlertHistoryItem", "AlertDetail", "AlertEventPublic", "AlertNote", "AlertAssign",
           "AlertComment", "CommandQueued", "Health", "KeyScope", "MePublic", "ALERT_EXAMPLE",
           "EVENT_EXAMPLE")


_ITEM_ERROR_EXAMPLE: dict[str, Any] = {
    "index": 1, "field": "level_m", "reason": "'level_m' must be a number; got str 'high'",
    "sensor_id": "jn-wl-000043"}


class ItemError(BaseModel):
    """One refused item of an ingest request: its index (from 0), the field at fault and why."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ITEM_ERROR_EXAMPLE]})

    index: int
    field: str | None
    reason: str
    sensor_id: str | None = None


class ReadingsAccepted(BaseModel):
    """202: ``accepted`` readings are stored (Kafka acknowledged); ``rejected`` were refused."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"accepted": 1, "rejected": [_ITEM_ERROR_EXAMPLE]}]})

    accepted: int
    rejected: list[ItemError]


class ReadingsRejected(BaseModel):
    """422 / 403: no reading of the request was accepted; ``rejected`` says why, per item."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "detail": "the reading is invalid and was not accepted: 'level_m' must be a number; "
                  "got str 'high'",
        "accepted": 0, "rejected": [{**_ITEM_ERROR_EXAMPLE, "index": 0}]}]})

    detail: str
    accepted: int
    rejected: list[ItemError]


#: One alert as the examples of the OpenAPI document (and docs/api.md) show it: the alert the
#: incident engine makes, with the packaged settings, of three gauges over 警戒 in 历下区 and
#: an acknowledgement (tests/api/test_schema_examples.py builds it and compares).
ALERT_EXAMPLE: dict[str, Any] = {
    "alert_id": "inc-8179774cb767c89d67a0", "scope": "city:370100",
    "incident_key": "flood@city:370100", "status": "acknowledged",
    "severity": "orange", "kind": "water_level", "family": "flood",
    "reason": "water.warning",
    "title_zh": "济南市历下区 橙色区域性内涝/洪水（3个传感器）",
    "title_en": "orange area flooding at Lixia District (Jinan), 3 sensors",
    "reason_zh": "水位超警戒", "reason_en": "water level over warning level",
    "province_code": "370000", "city_code": "370100", "city_name": "济南市",
    "district_code": "370102", "district_name": "历下区", "district_codes": ["370102"],
    "zone_ids": ["jn-flood-old-city"], "zone_kinds": ["flood_risk"],
    "departments": ["water", "city_management", "emergency", "city_command"],
    "departments_zh": ["水务局", "城市管理局", "应急管理局", "市指挥中心"],
    "sensors": ["jn-wl-000042", "jn-wl-000043", "jn-wl-000051"], "sensor_count": 3,
    "active_sensor_count": 3, "anomaly_count": 3, "peak_score": 3.2, "correlated": True,
    "lon": 117.0197, "lat": 36.6614,
    "first_seen_ms": 1795307400000, "last_seen_ms": 1795307700000, "opened_ms": 1795307405120,
    "acknowledged_by": "zhang.san@kops1234", "acknowledged_at_ms": 1795307760000,
    "assigned_to": None, "resolved_by": None, "resolved_at_ms": None,
    "escalation_level": "district", "comments": 0, "seq": 4,
    "first_seen_at": "2026-11-22T00:30:00.000Z", "last_seen_at": "2026-11-22T00:35:00.000Z",
    "opened_at": "2026-11-22T00:30:05.120Z", "acknowledged_at": "2026-11-22T00:36:00.000Z",
    "resolved_at": None,
}
_HISTORY_EXAMPLE: dict[str, Any] = {
    "event_id": "5ca99a3df61932e4d60e8d72", "type": "acknowledged", "actor": "zhang.san@kops1234",
    "at_ms": 1795307760000, "at": "2026-11-22T00:36:00.000Z", "detail": "crew on the way",
    "seq": 4, "status": "acknowledged", "severity": "orange", "escalation_level": "district",
    "assigned_to": None, "anomaly_id": None, "sensor_id": None,
}
EVENT_EXAMPLE: dict[str, Any] = {
    "event_id": "5ca99a3df61932e4d60e8d72", "type": "acknowledged",
    "alert_id": "inc-8179774cb767c89d67a0", "scope": "city:370100",
    "actor": "zhang.san@kops1234", "at_ms": 1795307760000,
    "at": "2026-11-22T00:36:00.000Z", "alert": ALERT_EXAMPLE, "anomaly_id": None,
    "sensor_id": None, "detail": "crew on the way",
}


def _example(example: Any) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


class AlertPublic(BaseModel):
    """One alert: an incident (anomalies of one problem in one place) as operators see it.

    The snapshot after its latest change (``seq`` counts them); each ``*_ms`` epoch time also
    comes as RFC 3339 UTC text (``opened_ms`` → ``opened_at``, ``first_seen_ms`` →
    ``first_seen_at``, ``acknowledged_at_ms`` → ``acknowledged_at``...).
    """

    model_config = _example(ALERT_EXAMPLE)

    alert_id: str
    scope: str = Field(description="The correlation scope that owns the incident")
    incident_key: str
    status: str = Field(description="open, acknowledged or resolved")
    severity: str = Field(description="blue, yellow, orange or red (蓝 黄 橙 红)")
    kind: str
    family: str = Field(description="flood, pipe, traffic, sensor_fault or other")
    reason: str
    title_zh: str
    title_en: str
    reason_zh: str
    reason_en: str
    province_code: str
    city_code: str
    city_name: str
    district_code: str = Field(description="The district of the sensor that opened it "
                                           "(district_codes[0])")
    district_name: str = Field(description="The name of district_code")
    district_codes: list[str] = Field(description=(
        "Every district of its sensors: the opener's first, then in the order the first "
        "sensor of each joined (a city-wide flood lists many); at most 137"))
    zone_ids: list[str]
    zone_kinds: list[str]
    departments: list[str] = Field(description="Department codes the alert is routed to")
    departments_zh: list[str]
    sensors: list[str] = Field(description="The first member sensors (capped)")
    sensor_count: int
    active_sensor_count: int
    anomaly_count: int
    peak_score: float
    correlated: bool = Field(description="Several sensors agree: an area-wide incident")
    lon: float
    lat: float
    first_seen_ms: int
    last_seen_ms: int
    opened_ms: int
    acknowledged_by: str | None
    acknowledged_at_ms: int | None
    assigned_to: str | None
    resolved_by: str | None
    resolved_at_ms: int | None
    escalation_level: str = Field(description="district, city or province")
    comments: int
    seq: int
    first_seen_at: str
    last_seen_at: str
    opened_at: str
    acknowledged_at: str | None
    resolved_at: str | None


class AlertsPublic(BaseModel):
    """A page of alerts, newest ``last_seen`` first; ``next_cursor`` is null on the last page."""

    model_config = _example({"count": 1, "alerts": [ALERT_EXAMPLE],
                             "next_cursor": "WzE3OTUzMDc3MDAwMDAsImluYy04MTc5Nzc0Y2I3NjdjODlkNjdhMCJd"})

    count: int
    alerts: list[AlertPublic]
    next_cursor: str | None


class AlertHistoryItem(BaseModel):
    """One change of an alert: what (``type``), who, when, and the alert's state after it."""

    model_config = _example(_HISTORY_EXAMPLE)

    event_id: str
    type: str = Field(description="opened, updated, escalated, acknowledged, assigned, "
                                  "commented, resolved or restated")
    actor: str = Field(description="system, or the operator")
    at_ms: int
    at: str
    detail: str = Field(description="Comment text, assignee, note or escalation target")
    seq: int
    status: str
    severity: str
    escalation_level: str
    assigned_to: str | None
    anomaly_id: str | None
    sensor_id: str | None


class AlertDetail(BaseModel):
    """One alert and its recent history (oldest first: its last 200 sensor updates and its last
    200 other events)."""

    model_config = _example({"alert": ALERT_EXAMPLE, "history": [_HISTORY_EXAMPLE],
                             "history_complete": False})

    alert: AlertPublic
    history: list[AlertHistoryItem]
    history_complete: bool = Field(description="False when older events were dropped")


class AlertEventPublic(BaseModel):
    """The ``data`` of a stream event: one change of an alert (``alert`` null if suppressed)."""

    model_config = _example(EVENT_EXAMPLE)

    event_id: str
    type: str
    alert_id: str
    scope: str
    actor: str
    at_ms: int
    at: str
    alert: AlertPublic | None
    anomaly_id: str | None
    sensor_id: str | None
    detail: str
    city_code: str | None = Field(None, description="Suppressed events only: the city of the "
                                                    "anomaly (null when not known)")
    district_code: str | None = Field(None, description="Suppressed events only: its district "
                                                        "(null when not known)")


class AlertNote(BaseModel):
    """Body of ``ack`` and ``resolve`` (optional): a note kept with the event."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"note": "crew on the way"}]})

    note: str | None = Field(None, max_length=2000)


class AlertAssign(BaseModel):
    """Body of ``assign``: who takes the alert, and an optional note."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"assignee": "历下区排水抢险一队", "note": "nearest crew"}]})

    assignee: str = Field(min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)


class AlertComment(BaseModel):
    """Body of ``comment``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": "泵车已到达现场 / pump truck on site"}]})

    text: str = Field(min_length=1, max_length=2000)


class CommandQueued(BaseModel):
    """202: the command is stored on the commands topic; the alert changes once it is applied."""

    model_config = _example({"command_id": "kops1234:7d0c6a4e-5b1f-4f3e-9a51-0c2d9e6b7a10:3f9a0c1d2e4b",
                             "alert_id": "inc-8179774cb767c89d67a0", "action": "ack",
                             "status": "queued"})

    command_id: str
    alert_id: str
    action: str
    status: str


class KeyScope(BaseModel):
    """What a scoped key covers: an item is in scope when its city is one of ``cities`` or its
    sensor id starts with one of ``sensor_prefixes``."""

    cities: list[str] = Field(description="City codes (370100 济南市)")
    sensor_prefixes: list[str] = Field(description="Sensor-id prefixes (jn-)")


class MePublic(BaseModel):
    """Who the caller is: the role, scope and id of the key it sent, and what the key may do."""

    model_config = _example({"role": "viewer", "key_id": "kd41a07f2",
                             "scope": {"cities": ["370100"], "sensor_prefixes": []},
                             "may": ["read"]})

    role: Literal["integrator", "viewer", "operator", "admin"]
    key_id: str = Field(description="The key's non-secret id: its name in the keys file, or "
                                     "k and the first 8 hex digits of its SHA-256 (as in "
                                     "actors, 403s and logs)")
    scope: KeyScope | None = Field(description="null: the whole province")
    may: list[Literal["ingest", "read", "act", "configure"]] = Field(
        description="ingest: post readings; read: alerts and their stream, situation, sensors, "
                    "zones, routing, maintenance windows; act: ack, resolve, assign and comment "
                    "on alerts; configure: change zones, routing and maintenance windows")


class Health(BaseModel):
    """The process is alive (it says nothing of Kafka: see ``/readyz``)."""

    model_config = _example({"status": "ok"})

    status: str


# -- situation and sensors (issue #6 parts 4-5) ---------------------------------------------

_TREND_EXAMPLE: dict[str, Any] = {"t_ms": 1795307940000, "readings_per_s": 41.2,
                                  "open_alerts": 3, "traffic_index": 3.15, "complete": True}
_SUMMARY_EXAMPLE: dict[str, Any] = {
    "code": "370100", "name": "济南市", "name_en": "Jinan",
    "sensors": {"total": 1250, "reporting": 1243, "silent": 7},
    "readings_per_s": 41.6,
    "alerts": {"open": 3, "by_severity": {"blue": 1, "yellow": 0, "orange": 2, "red": 0},
               "by_kind": {"water_level": 2, "pipe_pressure": 0, "traffic": 1, "generic": 0},
               "worst": "orange"},
    "indicators": {"traffic_index": 3.15, "gauges_over_warning": 2,
                   "gauges_over_guaranteed": 1, "pressure_compliance": 0.9862},
    "trend": [_TREND_EXAMPLE],
}
_DISTRICT_EXAMPLE: dict[str, Any] = {
    **{k: v for k, v in _SUMMARY_EXAMPLE.items() if k != "trend"},
    "code": "370102", "name": "历下区", "name_en": "Lixia District",
}
SENSOR_EXAMPLE: dict[str, Any] = {
    "sensor_id": "jn-wl-000042", "kind": "water_level", "lon": 117.0197, "lat": 36.6614,
    "district_code": "370102", "district_name": "历下区", "city_code": "370100",
    "status": "reporting", "latest": {"level_m": 5.12}, "ts_ms": 1795307995000,
    "ts": "2026-11-22T00:39:55.000Z",
    "city_name": "济南市", "expected_interval_s": 60.0, "water_site": "river",
    "warning_level_m": 4.0, "guaranteed_level_m": 5.0,
}


class SensorCounts(BaseModel):
    """Sensors of the area: all known, and those reporting or silent at the as-of time."""

    total: int
    reporting: int
    silent: int = Field(description="No reading for over max(3 x its interval, 120 s) of "
                                    "stream time, or never one (a registry sensor)")


class AlertCounts(BaseModel):
    """Open (not resolved) alerts of the area that the key may see."""

    open: int
    by_severity: dict[str, int] = Field(description="blue, yellow, orange, red")
    by_kind: dict[str, int] = Field(description="water_level, pipe_pressure, traffic, generic")
    worst: str | None = Field(description="The highest severity open, null when none")


class Indicators(BaseModel):
    """Domain indicators over the area's reporting sensors (null when it has none of a kind)."""

    traffic_index: float | None = Field(description="Mean 0-10 traffic performance index "
                                                    "of the latest speeds against free flow")
    gauges_over_warning: int = Field(description="Gauges at or over 警戒 (warning)")
    gauges_over_guaranteed: int = Field(description="Gauges at or over 保证 (guaranteed)")
    pressure_compliance: float | None = Field(description="Share of pressure sensors at or "
                                                          "over their floor (0.14 MPa)")


class TrendPoint(BaseModel):
    """One minute of stream time: its readings/s (complete minutes only), open alerts at its
    end (the current minute: at stream time), mean traffic index."""

    model_config = _example(_TREND_EXAMPLE)

    t_ms: int = Field(description="Start of the minute, epoch ms")
    readings_per_s: float | None = Field(description="Readings of the minute / 60; null for "
                                                     "the current minute (not complete)")
    open_alerts: int
    traffic_index: float | None
    complete: bool = Field(description="False for the last point: the minute stream time is in")


class AreaSummary(BaseModel):
    """The situation of one district: sensors, readings/s, open alerts, indicators."""

    model_config = _example(_DISTRICT_EXAMPLE)

    code: str
    name: str
    name_en: str = Field(description="English name: Shandong, Jinan, Lixia District")
    sensors: SensorCounts
    readings_per_s: float = Field(description="Readings that entered Kafka in the last 10 s "
                                              "of wall clock, per second")
    alerts: AlertCounts
    indicators: Indicators


class RegionSummary(AreaSummary):
    """The situation of the province or a city, with its trend over the last 30 minutes."""

    model_config = _example(_SUMMARY_EXAMPLE)

    trend: list[TrendPoint]


class SituationPublic(BaseModel):
    """The province now and all 16 cities (the cities a scoped key may see)."""

    model_config = _example({
        "as_of": "2026-11-22T00:39:55.000Z", "as_of_ms": 1795307995000,
        "province": {**_SUMMARY_EXAMPLE, "code": "370000", "name": "山东省",
                     "name_en": "Shandong"},
        "cities": [_SUMMARY_EXAMPLE]})

    as_of: str = Field(description="Stream time: the newest reading's event time (RFC 3339)")
    as_of_ms: int
    province: RegionSummary
    cities: list[RegionSummary]


class SensorPublic(BaseModel):
    """One sensor: where, its latest values, its status; plus its registry fields if any."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [SENSOR_EXAMPLE]})

    sensor_id: str
    kind: str
    lon: float | None
    lat: float | None
    district_code: str | None
    district_name: str | None
    city_code: str | None
    status: str = Field(description="reporting or silent")
    latest: dict[str, float | None] = Field(description="The latest reading's values "
                                                        "(empty if none yet)")
    ts_ms: int | None = Field(description="The latest reading's event time")
    ts: str | None


class CitySituationPublic(BaseModel):
    """One city, each of its districts, and its sensors worst first (at most 2000)."""

    model_config = _example({
        "as_of": "2026-11-22T00:39:55.000Z", "as_of_ms": 1795307995000,
        "city": _SUMMARY_EXAMPLE, "districts": [_DISTRICT_EXAMPLE],
        "sensors": [SENSOR_EXAMPLE]})

    as_of: str
    as_of_ms: int
    city: RegionSummary
    districts: list[AreaSummary]
    sensors: list[SensorPublic] = Field(description="Over 保证 first, then over 警戒, under "
                                                    "the pressure floor or congested, then "
                                                    "silent, then the rest (by id)")


class SensorsPublic(BaseModel):
    """A page of sensors in id order; ``next_cursor`` is null on the last page."""

    model_config = _example({"count": 1, "total": 1250, "sensors": [SENSOR_EXAMPLE],
                             "next_cursor": "WyJzZW5zb3IiLCJqbi13bC0wMDAwNDIiXQ"})

    count: int = Field(description="Sensors on this page")
    total: int = Field(description="Sensors matching the filters, all pages")
    sensors: list[SensorPublic]
    next_cursor: str | None


class SensorReadings(BaseModel):
    """A sensor's recent readings kept by the API, oldest first (for charts)."""

    model_config = _example({"sensor_id": "jn-wl-000042", "kind": "water_level", "readings": [
        {"ts_ms": 1795307935000, "ts": "2026-11-22T00:38:55.000Z", "level_m": 5.08},
        {"ts_ms": 1795307995000, "ts": "2026-11-22T00:39:55.000Z", "level_m": 5.12}]})

    sensor_id: str
    kind: str
    readings: list[dict[str, Any]] = Field(description="ts_ms, ts and the kind's values")


class Readiness(BaseModel):
    """200 when the broker answers and the read models, idempotency records and settings
    (zones, maintenance, routing) caught up; 503 says what is missing."""

    model_config = _example({"status": "ready", "broker": True, "readings_caught_up": True,
                             "alerts_caught_up": True, "idempotency_caught_up": True,
                             "settings_caught_up": True,
                             "readings_messages_read": 5210,
                             "readings_messages_to_read": 5210, "missing": []})

    status: str = Field(description="ready or not ready")
    broker: bool
    readings_caught_up: bool
    alerts_caught_up: bool
    idempotency_caught_up: bool = Field(
        description="The idempotency records other API processes wrote were read; until then "
                    "POSTs of readings with an Idempotency-Key are answered 503")
    settings_caught_up: bool = Field(
        description="The zones, maintenance windows and routing rules were read up to where "
                    "their topics ended when the API started (until then GET /v1/zones shows "
                    "the packaged zones and admin writes wait)")
    readings_messages_read: int = Field(
        description="Messages of the readings topic the start-up catch-up has read (from "
                    "CITYAGENT_SITUATION_LOOKBACK_H ago); equal to readings_messages_to_read "
                    "once caught up")
    readings_messages_to_read: int = Field(
        description="Messages the start-up catch-up reads: from where it began to where the "
                    "topic ended when the API started")
    missing: list[str]

__all__ += ("SensorCounts", "AlertCounts", "Indicators", "TrendPoint", "AreaSummary",
            "RegionSummary", "SituationPublic", "SensorPublic", "CitySituationPublic",
            "SensorsPublic", "SensorReadings", "Readiness", "SENSOR_EXAMPLE")
