"""The dashboard (一屏观全省) in a real headless Chromium, against a real broker, worker and API.

Needs the Python package ``playwright`` (its driver, not its browsers) and Debian's ``chromium``
(``CITYAGENT_CHROMIUM`` names another binary). Without them the tests skip locally, with the
reason, and FAIL in CI (``CI`` set): a skipped browser test would hide a broken page.

Every request the page makes to anything but the API is blocked and recorded, so the tests
also show the page works without internet access. The breach test saves a 1920×1080
screenshot (``CITYAGENT_SCREENSHOT=docs/img/dashboard.png`` refreshes the README's).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.helpers import AUTH, OPERATOR_KEY, Pipeline, running_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
#: Where the screenshot goes: a temporary folder, or ``CITYAGENT_SCREENSHOT`` (how the README's
#: docs/img/dashboard.png is refreshed), so a test run never changes the work tree.
SCREENSHOT = Path(os.environ.get("CITYAGENT_SCREENSHOT")
                  or Path(tempfile.gettempdir()) / "cityagent-dashboard.png")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEVERITY_COLORS = {"blue": "#1e90ff", "yellow": "#ffd400", "orange": "#ff8c00", "red": "#ff2d2d"}
JINAN = (117.0197, 36.6614)  # 泉城广场, 历下区
#: Breaches in other cities, so the screenshot shows a province with several colours.
OTHERS = {"qd": ((120.3844, 36.0610), 4.8), "yt": ((121.39, 37.52), 6.5),
          "ly": ((118.35, 35.05), 4.2)}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the browser test must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the dashboard test needs the Python package playwright "
                     "(pip install playwright; its browsers are not needed)")
    path = os.environ.get("CITYAGENT_CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not path:
        _unavailable("the dashboard test needs Chromium: apt-get install chromium "
                     "(or set CITYAGENT_CHROMIUM to a Chromium binary)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


Stack = Pipeline


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("dashboard"), "ui") as p:
        yield p


@dataclass
class Dashboard:
    """One browser page on the dashboard, with what it logged and tried to fetch elsewhere."""

    page: Any
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return self.page.evaluate("window.__cityagent.mapState()")

    def color(self, code: str) -> str:
        return next(r["color"] for r in self.state()["regions"] if r["code"] == code)

    def feed_ids(self) -> list[str]:
        return self.page.eval_on_selector_all("#feed li[data-alert-id]",
                                              "rows => rows.map(r => r.dataset.alertId)")

    def stats(self) -> dict[str, Any]:
        return self.page.evaluate("window.__cityagent.stats()")


def open_dashboard(chromium: Any, url: str, width: int = 1920, height: int = 1080,
                   key: str = OPERATOR_KEY, operator: str = "",
                   routes: dict[str, Callable[[Any], None]] | None = None) -> tuple[Any, Dashboard]:
    """A page on the dashboard with ``key`` taken and its alerts listed. ``routes``: Playwright
    route handlers by URL pattern, in place before the page's first call (an API that fails
    from the start)."""
    context = chromium.new_context(viewport={"width": width, "height": height},
                                   locale="zh-CN", timezone_id="Asia/Shanghai")
    page = context.new_page()
    board = Dashboard(page)
    page.on("console", lambda m: board.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: board.errors.append(f"uncaught: {e}"))
    api_host = urlsplit(url).netloc

    def offline(route: Any) -> None:  # the page must need nothing but the API
        if urlsplit(route.request.url).netloc == api_host or route.request.url.startswith("data:"):
            route.continue_()
        else:
            board.outside.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    for pattern, handler in (routes or {}).items():  # the later route is tried first
        context.route(pattern, handler)
    page.goto(url + "/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    if operator:
        page.fill("#operator-input", operator)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)
    return context, board


def wait_until(page: Any, done: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Wait for what the test itself records (a route handler's list of requests). A handler
    runs when Playwright delivers its event, which may come after the page has already drawn
    what followed the request: wait for it, letting Playwright deliver events meanwhile."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        page.wait_for_timeout(50)


def reading(sensor: str, where: tuple[float, float], level: float, ts: float) -> dict:
    return {"sensor_id": sensor, "kind": "water_level", "ts": ts,
            "lon": where[0], "lat": where[1], "level_m": level}


def has_situation(url: str) -> bool:
    return "/v1/situation" in httpx.get(f"{url}/openapi.json", timeout=5).json()["paths"]


def test_page_serves_itself_offline_and_shows_16_cities(chromium: Any, stack: Stack) -> None:
    # The page, its scripts, the vendored ECharts with its licence, and the boundaries.
    page = httpx.get(f"{stack.url}/", timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "static/vendor/echarts/echarts.min.js" in page.text
    assert "Apache License" in httpx.get(f"{stack.url}/static/vendor/echarts/LICENSE").text
    # The first request builds the shapes (~0.3 s of CPU): on a starved CI machine, more than
    # httpx's default 5 s was seen once.
    cities = httpx.get(f"{stack.url}/geo/cities.json", timeout=60).json()
    assert len(cities["features"]) == 16
    assert httpx.get(f"{stack.url}/geo/999900.json").status_code == 404
    assert httpx.get(f"{stack.url}/v1").json()["dashboard"] == "/"
    for path in (ROOT / "api" / "static").glob("*.*"):  # no CDN anywhere (vendor/ aside)
        assert "https://" not in path.read_text("utf-8") and "http://" not in path.read_text("utf-8"), path

    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto(stack.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "not-a-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_function("document.querySelector('#key-error').textContent.includes('无效')")
    finally:
        context.close()

    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        state = board.state()
        assert state["level"] == "province" and state["map"] == "shandong"
        names = {r["name"] for r in state["regions"]}
        assert len(state["regions"]) == 16 and {"济南市", "青岛市", "菏泽市"} <= names, names
        assert page.is_hidden("#legend-outside")  # a key for the whole province
        # Usable at 1366×768: nothing overflows, the map and the feed have room.
        assert page.evaluate("[document.documentElement.scrollWidth, "
                             "document.documentElement.scrollHeight]") == [1366, 768]
        for selector in ("#map", "#feed", "#trends"):
            box = page.locator(selector).bounding_box()
            assert box and box["width"] > 250 and box["height"] > 100, (selector, box)
        # The key is kept for the session: a reload does not ask again.
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert not page.evaluate("document.querySelector('#key-dialog').open")
        # English, and back.
        page.click("#lang")
        assert page.text_content("#map-title") == "Shandong"
        assert "Jinan" in {r["name"] for r in board.state()["regions"]}
        page.click("#lang")
        assert page.text_content("#map-title") == "山东省"
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


@pytest.mark.slow
def test_a_breach_reaches_the_feed_recolours_its_city_and_is_acknowledged(
        chromium: Any, stack: Stack) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        quiet = board.color("370100")
        assert quiet not in SEVERITY_COLORS.values()

        base = float(int(time.time()) // 2 * 2 - 20)  # a 2 s window boundary, in the recent past
        sensor = f"jn-wl-ui-{uuid.uuid4().hex[:6]}"
        body = [reading(sensor, JINAN, 2.0, base), reading(sensor, JINAN, 5.6, base + 4)]
        for prefix, (where, level) in OTHERS.items():
            other = f"{prefix}-wl-ui-{uuid.uuid4().hex[:6]}"
            body += [reading(other, where, 2.0, base), reading(other, where, level, base + 4)]
        answer = httpx.post(f"{stack.url}/v1/readings", headers=AUTH, json=body, timeout=10)
        assert answer.status_code == 202, answer.text

        # Detection needs its window to close: time the page from the alert's arrival in the API.
        alert, t_api, t_feed = None, None, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and t_feed is None:
            if alert is None:
                found = httpx.get(f"{stack.url}/v1/alerts", headers=AUTH, timeout=5,
                                  params={"city": "370100"}).json()["alerts"]
                alert = next((a for a in found if sensor in a["sensors"]), None)
                if alert is not None:
                    t_api = time.monotonic()
            if alert is not None and alert["alert_id"] in board.feed_ids():
                t_feed = time.monotonic()
            time.sleep(0.05)
        assert alert is not None, "no alert for the breach within 60 s"
        assert t_feed is not None and t_feed - t_api < 2.0, \
            f"the alert reached the feed {None if t_feed is None else t_feed - t_api} s after the API"
        print(f"feed latency after the API: {t_feed - t_api:.3f} s")
        row = page.locator(f"#feed li[data-alert-id='{alert['alert_id']}']")
        assert row.get_attribute("data-severity") == alert["severity"] == "orange"
        assert row.get_attribute("data-status") == "open"
        page.wait_for_function(
            f"window.__cityagent.mapState().regions.find(r => r.code === '370100').color"
            f" === '{SEVERITY_COLORS['orange']}'",
            timeout=max(100, int((t_api + 2.0 - time.monotonic()) * 1000)))

        # Ack from the page: the command goes round the worker, the row turns acknowledged.
        row.locator("button.ack").click()
        page.wait_for_selector(
            f"#feed li[data-alert-id='{alert['alert_id']}'][data-status='acknowledged']",
            timeout=30_000)
        now = httpx.get(f"{stack.url}/v1/alerts/{alert['alert_id']}", headers=AUTH).json()
        assert now["alert"]["status"] == "acknowledged" and now["alert"]["acknowledged_by"]

        # Drill down into Jinan by clicking it on the map, then back.
        districts = httpx.get(f"{stack.url}/geo/370100.json").json()["features"]
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("window.__cityagent.mapState().level === 'city'", timeout=5_000)
        page.wait_for_function(  # the alert's district, 历下区, carries its colour
            "window.__cityagent.mapState().regions.find(r => r.code === '370102').color"
            f" === '{SEVERITY_COLORS['orange']}'", timeout=2_000)
        city = board.state()
        assert city["map"] == "city-370100" and len(city["regions"]) == len(districts) >= 10
        assert city["points"] >= 1  # the alert (and sensors, with the situation service)
        assert page.text_content("#map-title") == "济南市"
        assert set(board.page.eval_on_selector_all(
            "#feed li[data-alert-id]", "rows => rows.map(r => r.dataset.city)")) == {"370100"}
        if has_situation(stack.url):
            situation = httpx.get(f"{stack.url}/v1/situation/370100", headers=AUTH, timeout=5)
            assert situation.status_code == 200, situation.text
            # The city's tiles: the province's, still on screen until the tiles' next render,
            # had a sensor count too.
            page.wait_for_function("document.querySelector('#kpi-title').textContent === '济南市态势'"
                                   " && document.querySelector('#kpi-sensors .v').textContent !== '—'",
                                   timeout=10_000)
        page.click("#back")
        page.wait_for_function("window.__cityagent.mapState().level === 'province'", timeout=5_000)
        assert len(board.state()["regions"]) == 16

        # The tiles: one acknowledged, the other cities' alerts open; situation figures if served.
        page.wait_for_function("document.querySelectorAll('#feed li[data-alert-id]').length >= 4",
                               timeout=30_000)
        assert page.text_content("#kpi-alerts .acked") == "1"
        if has_situation(stack.url):  # the province's figures, not the city's still shown
            page.wait_for_function("document.querySelector('#kpi-title').textContent === '全省态势'"
                                   " && document.querySelector('#kpi-rate .v').textContent !== '—'",
                                   timeout=10_000)
        else:
            assert page.is_visible("#kpi-note")  # says the figures are alerts only

        # The picture once it has settled: the map coloured and labelled with the alerts held,
        # a trend in each city's chart, no events waiting and no animation running.
        page.wait_for_function(SETTLED_JS, arg=SEVERITY_COLORS, timeout=10_000)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))
        assert SCREENSHOT.stat().st_size > 50_000
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


#: The page has drawn the alerts it holds: each city's colour is its worst alert's and its label
#: names it with its count (the map is drawn at most every 400 ms and its labels every 1.5 s,
#: app.js MAP_MS, map.js GEO_MS: just after 返回全省 it is the bare province), each city's
#: trend chart has its points, no event waits to be applied and neither chart is animating.
SETTLED_JS = """(colors) => {
  const app = window.__cityagent;
  const rank = {blue: 1, yellow: 2, orange: 3, red: 4};
  const held = new Map();
  for (const a of app.alerts()) {
    const c = held.get(a.city_code) || {n: 0, worst: 'blue'};
    held.set(a.city_code, {n: c.n + 1, worst: rank[a.severity] > rank[c.worst] ? a.severity : c.worst});
  }
  const map = echarts.getInstanceByDom(document.querySelector('#map'));
  const drawn = new Set();
  for (const el of map.getZr().storage.getDisplayList(true)) {
    if (el.type === 'tspan' && el.parent && el.parent.type === 'text') drawn.add(el.parent.style.text);
  }
  const want = app.map.cities.map((code) => app.map.name(code) + (held.has(code) ? `\n${held.get(code).n}` : ''));
  const coloured = app.mapState().regions.every((r) => !held.has(r.code) || r.color === colors[held.get(r.code).worst]);
  const trends = app.trends.chart.getOption().series || [];
  return held.size > 0 && coloured && want.length === drawn.size && want.every((text) => drawn.has(text))
    && trends.length === app.map.cities.length && trends.every((s) => s.data && s.data.length > 0)
    && app.stats().pending === 0
    && map.getZr().animation.isFinished() && app.trends.chart.getZr().animation.isFinished();
}"""


# Synthetic alert events in the shape of the stream's, for the load test: 1000 open alerts at
# once, then for 5 s every 100 ms 10 events (6 new alerts, 3 updates, 1 resolve): 100 events/s.
STORM_JS = """
async () => {
  const app = window.__cityagent;
  const rendersBefore = app.stats().renders;
  const startedMs = performance.now();
  const regions = app.mapState().regions;
  const sevs = ['blue', 'blue', 'blue', 'yellow', 'yellow', 'orange', 'red'];
  const depts = ['water', 'transport', 'city_management', 'emergency', 'city_command'];
  let n = 0;
  const alerts = [];
  const make = () => {
    const city = regions[n % regions.length];
    const sev = sevs[(n * 7) % sevs.length];
    const a = {
      alert_id: `load-${n}`, scope: `city:${city.code}`, status: 'open', severity: sev,
      kind: 'water_level', family: 'flood', title_zh: `${city.name} 负载测试告警 ${n}`,
      title_en: `load test alert ${n}`, reason_zh: '负载测试', reason_en: 'load test',
      city_code: city.code, city_name: city.name, district_code: '', district_name: '',
      zone_ids: [], departments: [depts[n % depts.length], 'city_command'],
      departments_zh: [], sensors: [`load-${n}`], sensor_count: 1, anomaly_count: 1,
      lon: 115.5 + (n % 97) / 97 * 6, lat: 34.6 + (n % 89) / 89 * 3, first_seen_ms: Date.now(),
      last_seen_ms: Date.now(), opened_ms: Date.now(), escalation_level: 'district',
      acknowledged_by: null, acknowledged_at_ms: null, seq: 1,
    };
    n += 1;
    alerts.push(a);
    return a;
  };
  const event = (a, type) => ({event_id: `${a.alert_id}-${a.seq}`, type, alert_id: a.alert_id,
                               actor: 'system', at_ms: Date.now(), alert: a});
  const first = [];
  for (let i = 0; i < 1000; i += 1) first.push(event(make(), 'opened'));
  app.ingest(first);

  const gaps = [];
  let last = performance.now();
  let running = true;
  const frame = (t) => { gaps.push(t - last); last = t; if (running) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);

  let ticks = 0, resolved = 0, u = 0;
  await new Promise((done) => {
    const timer = setInterval(() => {
      const batch = [];
      for (let i = 0; i < 6; i += 1) batch.push(event(make(), 'opened'));
      for (let i = 0; i < 3; i += 1) {
        const a = alerts[(u++ * 13) % 1000];
        Object.assign(a, {seq: a.seq + 1, anomaly_count: a.anomaly_count + 1,
                          last_seen_ms: Date.now()});
        batch.push(event({...a}, 'updated'));
      }
      const gone = alerts[1000 - 1 - resolved];
      resolved += 1;
      batch.push(event({...gone, seq: gone.seq + 100, status: 'resolved'}, 'resolved'));
      app.ingest(batch);
      ticks += 1;
      window.__stormTicks = ticks;
      if (ticks === 50) { clearInterval(timer); done(); }
    }, 100);
  });
  running = false;
  await new Promise((r) => setTimeout(r, 600));
  const load = app.alerts().filter((a) => a.alert_id.startsWith('load-')).length;
  return {ticks, resolved, made: n, load, gaps, stats: app.stats(), rendersBefore,
          tookMs: performance.now() - startedMs};
}
"""


@pytest.mark.slow
def test_stays_responsive_with_1000_open_alerts_and_100_new_per_second(
        chromium: Any, stack: Stack) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        # While the storm blows, an operator picks a department: the feed must follow at once.
        page.evaluate("""() => {
          window.__filterDelay = null;
          const select = document.querySelector('#f-dept');
          select.addEventListener('change', () => {
            const t0 = performance.now();
            const check = () => {
              const rows = [...document.querySelectorAll('#feed li[data-alert-id]')];
              if (rows.length && rows.every(r => r.querySelector('.meta').textContent.includes('交通运输局'))) {
                window.__filterDelay = performance.now() - t0;
              } else {
                requestAnimationFrame(check);
              }
            };
            requestAnimationFrame(check);
          }, {capture: true});
        }""")
        page.evaluate(f"window.__stormTicks = 0; window.__storm = ({STORM_JS})(); 0")
        # The storm is under way: its 1,000 alerts are in, and 20 of its 50 batches of new ones
        # have come (2 s of the 5), so the filter is chosen while events still arrive.
        page.wait_for_function("window.__stormTicks >= 20"
                               " && window.__cityagent.stats().alerts >= 1000", timeout=30_000)
        page.select_option("#f-dept", "transport")
        page.wait_for_function("window.__filterDelay !== null", timeout=5_000)
        filter_delay_ms = page.evaluate("window.__filterDelay")
        result = page.evaluate("window.__storm")

        stats = result["stats"]
        assert result["ticks"] == 50 and result["made"] == 1300
        assert result["load"] == result["made"] - result["resolved"]  # none lost, none revived
        assert stats["pending"] == 0
        assert 0 < stats["rows"] <= 200  # the feed keeps a bounded number of rows
        gaps = sorted(result["gaps"])
        renders = {part: n - result["rendersBefore"].get(part, 0)
                   for part, n in stats["renders"].items()}
        print(f"load: {stats['alerts']} alerts, {stats['rows']} rows, {stats['flushes']} flushes; "
              f"frame gaps median {gaps[len(gaps) // 2]:.0f} ms, max {gaps[-1]:.0f} ms; department "
              f"filter applied in {filter_delay_ms:.0f} ms; longest renders (ms) {stats['costs']}; "
              f"renders during the storm {renders}")
        # Responsive under the storm because it renders in batches: each part at most once per
        # its interval (app.js FEED_MS, KPI_MS, MAP_MS), however many events come (~1,500 here),
        # where a page that rendered per event or per frame would draw it hundreds of times.
        # Counted, not timed: a busy machine only makes fewer renders; the times printed above
        # are figures to read, not pass marks.
        every_ms = {"feed": 200, "kpi": 250, "map": 400}
        assert all(renders.get(part, 0) > 0 for part in every_ms), renders
        assert all(renders[part] <= result["tookMs"] / ms + 2 for part, ms in every_ms.items()), (
            renders, result["tookMs"])
        # The tiles agree with the alerts held (real alerts may still come and go meanwhile).
        page.wait_for_function("""() => {
          const n = (s) => Number(document.querySelector(s).textContent);
          const shown = ['red', 'orange', 'yellow', 'blue']
            .reduce((sum, sev) => sum + n(`#kpi-alerts [data-n="${sev}"]`), 0)
            + n('#kpi-alerts .acked');
          return shown === window.__cityagent.stats().alerts;
        }""", timeout=5_000)
        assert board.errors == [] and board.outside == []
    finally:
        context.close()
