"""The OpenAPI examples and docs/api.md show an alert the alerting code really produces.

The example alert had a zone scope the packaged settings never give a flood (they scope floods
by city), a title and reason texts the code does not write ("区域内涝", "水位超过保证水位"), the
departments of another routing and an orange severity with a red reason. Here the incident
engine, with the packaged alerting settings, routing rules and demo zones, builds the
example's alert from three gauges over 警戒 in 历下区 and one acknowledgement; the examples
must be that alert, field for field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from api.alert_book import AlertBook, encode_cursor, public_alert
from api.schemas import ALERT_EXAMPLE, EVENT_EXAMPLE, AlertDetail, AlertPublic, AlertsPublic
from cityagent.detection import Anomaly, anomaly_id
from cityagent.incident_alert import AlertEvent, Command
from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
from cityagent.regions import default_regions
from cityagent.routing import default_router
from cityagent.zones import ZoneIndex, demo_zones

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
T0 = 1_795_307_400_000  # 2026-11-22T00:30:00Z (08:30 in 济南)
MIN = 60_000
#: Three gauges of 历下区 in the demo zone jn-flood-old-city: (id, lon, lat, minutes after T0).
GAUGES = (("jn-wl-000042", 117.0197, 36.6614, 0), ("jn-wl-000043", 117.0231, 36.6622, 2),
          ("jn-wl-000051", 117.0268, 36.6597, 5))


def _anomaly(sensor: str, lon: float, lat: float, minutes: int) -> Anomaly:
    ts = T0 + minutes * MIN
    return Anomaly(
        anomaly_id=anomaly_id(sensor, "level", ts), phase="start", sensor_id=sensor,
        kind="water_level", detector="level", reason="water.warning", score=0.8,
        peak_score=3.2 if minutes == 0 else 1.4, severity="yellow", field="level_m",
        observed=4.31, expected=4.0, window_start_ms=ts - MIN, window_end_ms=ts, since_ms=ts,
        ts_ms=ts, detected_at_ms=ts, lon=lon, lat=lat, district_code=370102,
        city_code=370100)


def example_events() -> list[AlertEvent]:
    """What the alerting agent publishes: three anomalies (each seen 5.12 s after its window
    closed), then 张三's acknowledgement at 00:36."""
    regions = default_regions()
    for _, lon, lat, _ in GAUGES:  # the gauges are where the anomalies say
        assert regions.district_codes(regions.locate([lon], [lat]))[0] == "370102"
    engine = IncidentEngine(AlertingConfig.load(), default_router())
    zones = ZoneIndex(demo_zones(regions))
    state, out = ScopeState(), []
    for gauge in GAUGES:
        anomaly = _anomaly(*gauge)
        out += engine.on_anomaly(state, anomaly, zones, anomaly.ts_ms + 5_120)
    alert_id = out[-1].alert_id
    out += engine.on_command(state, Command(
        command_id="kops1234:7d0c6a4e-5b1f-4f3e-9a51-0c2d9e6b7a10:3f9a0c1d2e4b",
        alert_id=alert_id, action="ack", actor="zhang.san@kops1234", at_ms=T0 + 6 * MIN,
        text="crew on the way"), T0 + 6 * MIN)
    return out


@pytest.fixture(scope="module")
def events() -> list[AlertEvent]:
    return example_events()


def test_the_example_alert_is_the_alert_the_engine_makes(events: list[AlertEvent]) -> None:
    assert [e.type for e in events] == ["opened", "updated", "updated", "acknowledged"]
    assert len({e.alert_id for e in events}) == 1
    real = public_alert(events[-1].alert.to_dict())
    assert list(ALERT_EXAMPLE) == list(real)  # the same keys, in the order served
    assert ALERT_EXAMPLE == real
    AlertPublic.model_validate(ALERT_EXAMPLE)


def test_the_example_event_and_history_are_the_acknowledgement(events: list[AlertEvent]) -> None:
    book = AlertBook()
    for event in events:
        entry = book.apply(event.to_dict())
    served = json.loads(entry.data)
    assert EVENT_EXAMPLE == {k: served[k] for k in EVENT_EXAMPLE}
    history, _ = book.history(events[-1].alert_id)
    example = AlertDetail.model_config["json_schema_extra"]["examples"][0]
    assert example["history"] == [history[-1]]
    assert example["alert"] == book.get(events[-1].alert_id)


def test_the_example_page_cursor_is_the_one_the_book_gives(events: list[AlertEvent]) -> None:
    example = AlertsPublic.model_config["json_schema_extra"]["examples"][0]
    alert = example["alerts"][0]
    assert example["next_cursor"] == encode_cursor(alert["last_seen_ms"], alert["alert_id"])


def _docs_alert_list() -> dict:
    text = DOCS.read_text("utf-8")
    block = re.search(r'```json\n(\{"count": .*?)\n```', text, re.S)
    assert block, "docs/api.md has no alert list example"
    return json.loads(block.group(1))


def test_the_docs_alert_list_shows_the_example_alert() -> None:
    page = _docs_alert_list()
    shown = page["alerts"][0]
    assert shown.pop("...") == "..."
    assert shown == {k: ALERT_EXAMPLE[k] for k in shown}
    assert page["next_cursor"] == encode_cursor(shown["last_seen_ms"], shown["alert_id"])


def test_the_docs_name_the_example_alert_s_id() -> None:
    """Every alert id in docs/api.md is the example's, so the curl lines fit the list."""
    ids = set(re.findall(r"inc-[0-9a-f]{20}", DOCS.read_text("utf-8")))
    assert ids == {ALERT_EXAMPLE["alert_id"]}
