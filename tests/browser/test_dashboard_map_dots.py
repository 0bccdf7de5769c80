"""The dots on the map open what they stand for: drilled into a city, a click on an alert's dot,
or on the dot of a sensor that an unresolved alert lists, opens that alert (the panel the feed's
titles open); a sensor's dot names the sensor, its kind and district, its latest reading and its
state. On the province, a click on an alert's dot drills into its city, as a click beside it.

Before, a click on a dot did nothing, and a dot's tooltip was the district's (最高级别: 无,
未处理 0 · 已确认 0 under the sensor's id): ECharts gives the dots the tooltip of the geo
component they are drawn on, whose formatter took every item for a region.

The sensors are real (readings posted to the API, listed by /v1/situation/{city}); the alert is
synthetic and lists one of them, so no detection window has to close.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser import test_dashboard as base
from tests.browser.test_dashboard import Dashboard, open_dashboard
from tests.browser.test_dashboard_map_labels import SIZED_JS
from tests.helpers import AUTH, Pipeline, running_pipeline

chromium = base.chromium  # the fixture: Chromium through playwright, or skip (fail in CI)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: Jinan: two gauges in 历下区, far enough apart for their dots not to touch, and the alert's own
#: position, in 槐荫区.
IN_ALERT = (117.10, 36.68)
ALONE = (117.16, 36.70)
ALERT_AT = (116.93, 36.65)

#: A dot drawn on the map, by its name (a sensor's id) or its position: its page coordinates.
DOT_JS = """([name, at]) => {
  const chart = echarts.getInstanceByDom(document.querySelector('#map'));
  const dot = chart.getOption().series[0].data.find((d) => name ? d.name === name
    : d.value[0] === at[0] && d.value[1] === at[1]);
  if (!dot) return null;
  const [x, y] = chart.convertToPixel({geoIndex: 0}, dot.value);
  const box = document.querySelector('#map').getBoundingClientRect();
  return {x: box.left + x, y: box.top + y};
}"""

#: The map's tooltip, if one is shown: ECharts draws it as a div in the chart's element.
TIP_JS = """() => [...document.querySelectorAll('#map > div')]
  .filter((d) => d.style.display !== 'none' && d.style.opacity !== '0' && d.innerText.trim())
  .map((d) => d.innerText).join('\\n')"""


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("map-dots"), "md") as p:
        yield p


@pytest.fixture(scope="module")
def sensors(stack: Pipeline) -> dict[str, str]:
    """Two water-level gauges in Jinan, listed by the city's situation: {role: sensor id}."""
    tag = uuid.uuid4().hex[:6]
    ids = {"in_alert": f"jn-wl-dot-a{tag}", "alone": f"jn-wl-dot-b{tag}"}
    now = time.time()
    body = [base.reading(ids["in_alert"], IN_ALERT, 2.0, now),
            base.reading(ids["alone"], ALONE, 2.35, now)]
    answer = httpx.post(f"{stack.url}/v1/readings", headers=AUTH, json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = httpx.get(f"{stack.url}/v1/situation/370100", headers=AUTH, timeout=10).json()
        if set(ids.values()) <= {s["sensor_id"] for s in listed["sensors"]}:
            return ids
        time.sleep(0.5)
    raise AssertionError("the sensors are not in /v1/situation/370100 within 30 s")


def alert_event(alert_id: str, sensor: str) -> dict[str, Any]:
    """An open red alert in Jinan's 槐荫区 that lists ``sensor``."""
    now = int(time.time() * 1000)
    alert = {
        "alert_id": alert_id, "scope": "district:370104", "status": "open", "severity": "red",
        "kind": "water_level", "family": "flood", "title_zh": "济南市槐荫区 红色区域性内涝（2个传感器）",
        "title_en": "red area flooding at Huaiyin District (Jinan), 2 sensors",
        "reason_zh": "水位超保证", "reason_en": "water level over guaranteed",
        "city_code": "370100", "city_name": "济南市", "district_code": "370104",
        "district_name": "槐荫区", "zone_ids": [], "departments": ["water"],
        "departments_zh": ["水务局"], "sensors": [sensor, "jn-wl-elsewhere"], "sensor_count": 2,
        "active_sensor_count": 2, "anomaly_count": 2, "lon": ALERT_AT[0], "lat": ALERT_AT[1],
        "first_seen_ms": now, "last_seen_ms": now, "opened_ms": now,
        "escalation_level": "district", "acknowledged_by": None, "acknowledged_at_ms": None,
        "seq": 1}
    return {"event_id": f"{alert_id}-1", "type": "opened", "alert_id": alert_id,
            "actor": "system", "at_ms": now, "alert": alert}


def serve_alerts(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Playwright routes answering GET /v1/alerts/{id} for the synthetic alerts (the panel
    fetches the alert it opens; the API does not know them)."""
    alerts = {e["alert_id"]: e["alert"] for e in events}

    def answer(route: Any) -> None:
        alert = alerts.get(route.request.url.rsplit("/", 1)[-1])
        if alert is None:
            route.fulfill(status=404, json={"detail": "no such alert"})
        else:
            route.fulfill(json={"alert": alert, "history": [], "history_complete": True})

    return {"**/v1/alerts/dot-*": answer}


def dot(board: Dashboard, name: str | None = None,
        at: tuple[float, float] | None = None) -> dict[str, float]:
    """The page coordinates of a sensor's dot (by its id) or an alert's (by its position), once
    drawn (the sensors come with the city's situation, polled every 5 s)."""
    board.page.wait_for_function(DOT_JS, arg=[name, at], timeout=15_000)
    # A new dot grows from nothing (ECharts' entry animation): the pointer misses it meanwhile.
    board.page.wait_for_function("echarts.getInstanceByDom(document.querySelector('#map'))"
                                 ".getZr().animation.isFinished()", timeout=5_000)
    return board.page.evaluate(DOT_JS, [name, at])


def tooltip_at(board: Dashboard, where: dict[str, float], expect: str) -> str:
    """Hover ``where`` until the map's tooltip says ``expect``; the tooltip's text."""
    page = board.page
    page.mouse.move(1, 1)
    page.mouse.move(where["x"], where["y"])
    page.wait_for_function(f"({TIP_JS})().includes({expect!r})", timeout=3_000)
    return page.evaluate(TIP_JS)


def drill_jinan(board: Dashboard) -> None:
    page = board.page
    where = page.evaluate("window.__cityagent.pixelOf('370100')")
    page.mouse.click(where["x"], where["y"])
    # The chart takes its element's size after the level changed (the map is shorter drilled in):
    # the dots move then.
    page.wait_for_function(f"window.__cityagent.mapState().city === '370100' && {SIZED_JS}",
                           timeout=5_000)


@pytest.mark.parametrize(("width", "height"), [(1366, 768), (390, 844)])
def test_a_sensor_dot_of_an_alert_opens_it_and_another_names_the_sensor(
        chromium: Any, stack: Pipeline, sensors: dict[str, str], width: int, height: int) -> None:
    alert_id = f"dot-{uuid.uuid4().hex[:8]}"
    events = [alert_event(alert_id, sensors["in_alert"])]
    context, board = open_dashboard(chromium, stack.url, width, height, routes=serve_alerts(events))
    try:
        page = board.page
        page.evaluate("(events) => window.__cityagent.ingest(events)", events)
        page.wait_for_selector(f"#feed li[data-alert-id='{alert_id}']", timeout=5_000)
        page.wait_for_function("window.__cityagent.stats().situation", timeout=10_000)
        drill_jinan(board)

        # A sensor in no alert: its id, kind, district, latest reading with its unit, state.
        alone = dot(board, sensors["alone"])
        tip = tooltip_at(board, alone, sensors["alone"])
        assert "水位 · 历下区" in tip and "最新读数：2.35 m" in tip and "状态：在线" in tip, tip
        assert "最高级别" not in tip and "所属告警" not in tip, tip
        page.mouse.click(alone["x"], alone["y"])  # a tap on a phone: the same summary, no panel
        page.wait_for_function(f"({TIP_JS})().includes({sensors['alone']!r})", timeout=3_000)
        assert not page.evaluate("document.querySelector('#alert-detail').open")

        # A sensor the alert lists: its tooltip names the alert, and a click opens it.
        member = dot(board, sensors["in_alert"])
        tip = tooltip_at(board, member, sensors["in_alert"])
        assert "所属告警：济南市槐荫区 红色区域性内涝（2个传感器）" in tip and "点击查看告警详情" in tip, tip
        page.mouse.click(member["x"], member["y"])
        page.wait_for_selector("#alert-detail[open]", timeout=3_000)
        page.wait_for_function("document.querySelector('#alert-detail').innerText"
                               ".includes('济南市槐荫区 红色区域性内涝')", timeout=3_000)
        page.keyboard.press("Escape")  # closes the panel, not the drilled map
        page.wait_for_selector("#alert-detail:not([open])", state="attached", timeout=3_000)
        assert board.state()["level"] == "city"
        # The focus does not land on the alert's row in the feed, which would hold it.
        assert not page.evaluate("document.querySelector('#feed').contains(document.activeElement)")

        # The alert's own dot opens it too.
        own = dot(board, at=ALERT_AT)
        page.mouse.move(1, 1)
        page.mouse.click(own["x"], own["y"])
        page.wait_for_selector("#alert-detail[open]", timeout=3_000)
        page.keyboard.press("Escape")
        page.wait_for_selector("#alert-detail:not([open])", state="attached", timeout=3_000)

        # In English.
        page.click("#lang")
        page.wait_for_function("document.querySelector('#map-title').textContent === 'Jinan'",
                               timeout=2_000)
        alone = dot(board, sensors["alone"])
        tip = tooltip_at(board, alone, "Water level")
        assert "Water level · Lixia District" in tip and "Latest: 2.35 m" in tip, tip
        assert "State: Reporting" in tip, tip
        member = dot(board, sensors["in_alert"])
        tip = tooltip_at(board, member, "In alert")
        assert "In alert: red area flooding at Huaiyin District (Jinan), 2 sensors" in tip, tip
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_an_alert_dot_on_the_province_drills_into_its_city(
        chromium: Any, stack: Pipeline, sensors: dict[str, str]) -> None:
    """The dots cover the cities' middles where alerts are (600 of them in a storm): a click on
    one was lost, not a drill."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        alert_id = f"dot-{uuid.uuid4().hex[:8]}"
        page.evaluate("(events) => window.__cityagent.ingest(events)",
                      [alert_event(alert_id, sensors["in_alert"])])
        own = dot(board, at=ALERT_AT)
        page.mouse.click(own["x"], own["y"])
        page.wait_for_function("window.__cityagent.mapState().city === '370100'", timeout=3_000)
        assert not page.evaluate("document.querySelector('#alert-detail').open")
        assert board.errors == [] and board.outside == []
    finally:
        context.close()
