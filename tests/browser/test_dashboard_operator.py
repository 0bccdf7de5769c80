"""The dashboard from an operator's side: clicks land where aimed, red alerts stay in reach,
failures are visible, a phone can use it, a city-scoped key sees its scope, and a read-only
(viewer) key gets no action buttons.

Most checks push synthetic alert events through ``window.__cityagent.ingest`` (see
test_dashboard.py) and fake API failures with Playwright routes; they share one pipeline, whose
API also knows an operator key scoped to Jinan (370100) and a viewer key.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser import test_dashboard as base
from tests.browser.test_dashboard import Dashboard, has_situation, open_dashboard, wait_until
from tests.helpers import (
    INTEGRATOR_KEY,
    OPERATOR_KEY,
    TEST_API_KEYS,
    Pipeline,
    free_port,
    running_pipeline,
    start_api,
)

chromium = base.chromium  # the fixture: Chromium through playwright, or skip (fail in CI)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

JINAN_KEY = "test-jinan-operator-key"
VIEWER_KEY = "test-wall-screen-viewer-key"
OUTSIDE = "#0a1426"  # map.js: a city outside the key's scope

# Synthetic alerts: [{id, sev, city, at (the event's at_ms), seen (last_seen_ms), status, seq,
# type (the event's, default opened)}].
INGEST_JS = """
(specs) => {
  const regions = window.__cityagent.mapState().regions;
  const name = (code) => (regions.find((r) => r.code === code) || {}).name || code;
  window.__cityagent.ingest(specs.map((s) => {
    const a = {
      alert_id: s.id, scope: `city:${s.city}`, status: s.status || 'open', severity: s.sev,
      kind: 'water_level', family: 'flood', title_zh: `测试告警 ${s.id}`, title_en: `test alert ${s.id}`,
      reason_zh: '测试', reason_en: 'test', city_code: s.city, city_name: name(s.city),
      district_code: '', district_name: '', zone_ids: [], departments: ['water'], departments_zh: [],
      sensors: [s.id], sensor_count: 1, anomaly_count: 1, lon: 117.0, lat: 36.6,
      first_seen_ms: s.at, last_seen_ms: s.seen || s.at, opened_ms: s.at, escalation_level: 'district',
      acknowledged_by: s.status === 'acknowledged' ? 'op' : null, acknowledged_at_ms: null, seq: s.seq || 1,
    };
    return {event_id: `${s.id}-${a.seq}`, type: s.type || 'opened', alert_id: s.id, actor: 'system',
            at_ms: s.at, alert: a};
  }));
}
"""


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    keys = f"{TEST_API_KEYS},operator:{JINAN_KEY}:370100,viewer:{VIEWER_KEY}"
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("operator-ui"), "uo",
                          api_keys=keys) as p:
        yield p


def ingest(board: Dashboard, specs: list[dict[str, Any]]) -> int:
    """Queue the events; returns how often the feed had been drawn then (see wait_feed_drawn)."""
    # In one task: the events are applied, and the feed drawn, in a later one.
    return board.page.evaluate(f"""(specs) => {{
      ({INGEST_JS.strip()})(specs);
      return window.__cityagent.stats().renders.feed || 0;
    }}""", specs)


def wait_feed_drawn(board: Dashboard, since: int) -> None:
    """Wait for a feed render after ``since`` (what ``ingest`` returned): every flush applies
    all queued events before it draws, so that render shows the events ingested then; a row
    that was to move, come or flash has done so."""
    board.page.wait_for_function(
        f"window.__cityagent.stats().renders.feed > {since}"
        " && window.__cityagent.stats().pending === 0", timeout=5_000)


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_rows(board: Dashboard, n: int) -> None:
    board.page.wait_for_function(
        f"document.querySelectorAll('#feed li[data-alert-id]').length >= {n}", timeout=5_000)


def fake_ack(board: Dashboard, status: int = 202, body: dict | None = None) -> list[str]:
    """Answer every ack with ``status``; returns the list of acked URLs' alert ids."""
    acked: list[str] = []

    def answer(route: Any) -> None:
        acked.append(route.request.url.rsplit("/", 2)[-2])
        route.fulfill(status=status, content_type="application/json",
                      body=json.dumps(body if body is not None else {}))

    board.page.route("**/v1/alerts/*/ack", answer)
    return acked


def test_a_new_alert_does_not_move_the_row_under_the_pointer_or_focus(
        chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        t0 = now_ms() - 60_000
        ingest(board, [{"id": f"hold-{i}", "sev": "blue", "city": "370100", "at": t0 + i * 1000}
                       for i in range(6)])
        wait_rows(board, 6)
        before = board.feed_ids()
        target = before[2]
        acked = fake_ack(board)
        page.hover(f"#feed li[data-alert-id='{target}'] button.ack")
        # A red alert and a newer blue one arrive while the pointer rests on the row.
        drawn = ingest(board, [{"id": "hold-red", "sev": "red", "city": "370200", "at": now_ms()},
                               {"id": "hold-new", "sev": "blue", "city": "370100", "at": now_ms()}])
        page.wait_for_selector("#feed-new:not([hidden])", timeout=2_000)
        wait_feed_drawn(board, drawn)
        assert board.feed_ids() == before
        assert page.text_content("#feed-new") == "2 条新告警"
        page.mouse.down()
        page.mouse.up()
        page.wait_for_function("document.querySelector('#feed').textContent.includes('提交中')")
        # The page draws 提交中 as it sends: the route may see the request a moment later.
        wait_until(page, lambda: bool(acked), "the ack reaching the API")
        assert acked == [target]
        # The pointer leaves the feed: the red alert comes first, the indicator goes.
        page.mouse.move(5, 300)
        page.wait_for_function("document.querySelector('#feed li[data-alert-id]').dataset.alertId"
                               " === 'hold-red'", timeout=2_000)
        assert page.is_hidden("#feed-new")

        # Keyboard: focus stays on the same alert's button while rows change and arrive.
        focused = "hold-red"
        page.focus("#f-sev")  # the last filter
        page.keyboard.press("Tab")  # to the first row's first button (its title)
        assert page.evaluate("document.activeElement.closest('li')?.dataset.alertId") == focused
        drawn = ingest(board, [
            {"id": focused, "sev": "red", "city": "370200", "at": now_ms(), "seq": 5},
            {"id": "hold-red-2", "sev": "red", "city": "370300", "at": now_ms() + 1000}])
        page.wait_for_selector("#feed-new:not([hidden])", timeout=2_000)
        wait_feed_drawn(board, drawn)
        assert page.evaluate("[document.activeElement.tagName, "
                             "document.activeElement.closest('li')?.dataset.alertId]") \
            == ["BUTTON", focused]
        # The indicator applies what waited.
        page.click("#feed-new")
        page.wait_for_function("document.querySelector('#feed li[data-alert-id]').dataset.alertId"
                               " === 'hold-red-2'", timeout=2_000)
        assert page.is_hidden("#feed-new")
        assert board.errors == []
    finally:
        context.close()


def test_a_restated_alert_keeps_its_place_and_time(chromium: Any, stack: Pipeline) -> None:
    """The worker restates a quiet open alert daily (same snapshot, next seq): it is not news,
    so it must not jump to the top of the feed with today's time, nor flash."""
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        t0 = now_ms() - 3 * 86_400_000
        ingest(board, [{"id": "quiet", "sev": "blue", "city": "370100", "at": t0},
                       {"id": "busy", "sev": "blue", "city": "370100", "at": t0 + 60_000}])
        wait_rows(board, 2)
        assert board.feed_ids() == ["busy", "quiet"]
        row = "#feed li[data-alert-id='quiet']"
        flashing = f"document.querySelector(\"{row}\").getAnimations().length"
        page.wait_for_function(f"{flashing} === 0", timeout=5_000)  # its arrival's flash
        before = page.text_content(row)
        drawn = ingest(board, [{"id": "quiet", "sev": "blue", "city": "370100", "at": now_ms(),
                                "seen": t0, "seq": 2, "type": "restated"},
                               {"id": "later", "sev": "blue", "city": "370100", "at": t0 + 120_000}])
        wait_rows(board, 3)
        wait_feed_drawn(board, drawn)
        assert board.feed_ids() == ["later", "busy", "quiet"]
        assert page.text_content(row) == before
        assert page.evaluate(flashing) == 0
        assert board.errors == []
    finally:
        context.close()


def test_red_alerts_stay_on_top_of_a_blue_flood_and_times_follow_the_order(
        chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        t0 = now_ms() - 3_600_000
        reds = [{"id": f"red-{i}", "sev": "red", "city": "370100", "at": t0 + i * 60_000,
                 "seen": t0 - i * 60_000} for i in range(3)]
        acked_red = {"id": "red-acked", "sev": "red", "city": "370100", "at": t0 + 600_000,
                     "status": "acknowledged"}
        blues = [{"id": f"blue-{i}", "sev": "blue", "city": "370200", "at": t0 + 1_000_000 + i * 1000,
                  "seen": t0 + 2_000_000 - i * 7000} for i in range(250)]
        ingest(board, reds + [acked_red] + blues)
        page.wait_for_function("document.querySelector('#feed-count').textContent === '254 条'",
                               timeout=5_000)
        ids = board.feed_ids()
        # Red first (open before acknowledged), newest first within: the flood cannot hide them.
        assert ids[:4] == ["red-2", "red-1", "red-0", "red-acked"], ids[:6]
        assert len(ids) == 200 and page.text_content("#feed-more") == "另有 54 条未显示"
        # The time shown is the time the rows are ordered by (the last change, newest first).
        times = page.eval_on_selector_all("#feed li[data-severity='blue'] time",
                                          "ts => ts.map(t => t.dateTime)")
        assert times == sorted(times, reverse=True) and len(times) == 196
        shown = page.eval_on_selector("#feed li[data-alert-id='red-2'] time", "t => t.dateTime")
        assert shown.startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime((t0 + 120_000) / 1000)))
    finally:
        context.close()


@pytest.mark.parametrize("failure", ["down", 404, 409])
def test_a_failed_ack_is_shown_in_the_row_in_words(chromium: Any, stack: Pipeline,
                                                    failure: Any) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        ingest(board, [{"id": "fail-1", "sev": "orange", "city": "370100", "at": now_ms()}])
        wait_rows(board, 1)
        if failure == "down":
            page.route("**/v1/alerts/*/ack", lambda route: route.abort("connectionrefused"))
            words, detail = ("无法连接服务", "the service cannot be reached"), None
        else:
            detail = f"no alert 'fail-1' ({failure})"
            fake_ack(board, failure, {"detail": detail})
            words = {404: ("告警不存在", "no such alert"),
                     409: ("告警状态已变化", "the alert changed meanwhile")}[failure]
        page.click("#feed li[data-alert-id='fail-1'] button.ack")
        err = page.locator("#feed li[data-alert-id='fail-1'] .err")
        err.wait_for(state="visible", timeout=3_000)
        assert err.get_attribute("role") == "alert"
        text = err.text_content()
        assert text.startswith("确认失败：") and words[0] in text, text
        if detail:
            assert detail in err.locator("small").text_content()
        assert page.text_content("#feed li[data-alert-id='fail-1'] button.ack") == "重试"
        page.click("#lang")
        page.wait_for_function("document.querySelector(\"#feed li[data-alert-id='fail-1'] .err b\")"
                               ".textContent.startsWith('Ack failed')", timeout=2_000)
        text = page.locator("#feed li[data-alert-id='fail-1'] .err b").text_content()
        assert text.startswith("Ack failed: ") and words[1].lower() in text.lower(), text
        page.click("#lang")
    finally:
        context.close()


def test_another_key_does_not_inherit_the_rows_failed_commands(chromium: Any,
                                                              stack: Pipeline) -> None:
    """A failure (or a pending command) in a row was the previous key's: after 更换密钥 the
    row offers 确认 again, not the old key's 重试."""
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        spec = {"id": "handover-1", "sev": "orange", "city": "370100", "at": now_ms()}
        ingest(board, [spec])
        wait_rows(board, 1)
        fake_ack(board, 409, {"detail": "changed"})
        row = "#feed li[data-alert-id='handover-1']"
        page.click(f"{row} button.ack")
        page.locator(f"{row} .err").wait_for(state="visible", timeout=3_000)
        assert page.text_content(f"{row} button.ack") == "重试"
        change_key(board, JINAN_KEY)
        ingest(board, [spec])  # the same alert, seen with the new key
        # The feed redraws on its own schedule: until it has, the old row is still on screen.
        page.wait_for_function(
            f"document.querySelector(\"{row} button.ack\")?.textContent === '确认'", timeout=5_000)
        assert page.locator(f"{row} .err").count() == 0
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_phone_gets_a_stacked_scrollable_page(chromium: Any, stack: Pipeline, lang: str) -> None:
    context, board = open_dashboard(chromium, stack.url, 390, 844)
    try:
        page = board.page
        if lang == "en":
            page.click("#lang")
        ingest(board, [{"id": f"phone-{i}", "sev": "yellow", "city": "370100", "at": now_ms()}
                       for i in range(30)])
        wait_rows(board, 30)
        width, height = page.evaluate("[document.documentElement.scrollWidth, "
                                      "document.documentElement.scrollHeight]")
        assert width == 390 and height > 844  # no sideways overflow; the page scrolls down
        title = page.locator(".brand h1").bounding_box()
        clock = page.locator("#clock").bounding_box()
        assert title["y"] + title["height"] <= clock["y"] or clock["x"] >= title["x"] + title["width"]
        box = page.locator("#map").bounding_box()
        assert box["width"] >= 350 and 280 <= box["height"] <= 600, box
        button = page.locator("#feed li[data-alert-id] button.ack").first
        button.scroll_into_view_if_needed()
        b = button.bounding_box()
        assert b and 0 <= b["x"] and b["x"] + b["width"] <= 390, b
        button.click()  # reachable and clickable (no fake: the API says 404, shown in the row)
        page.locator("#feed li[data-alert-id] .err").first.wait_for(timeout=3_000)
    finally:
        context.close()


# The map panel's header: boxes of the legend's entries and of what shares its line, and the map.
LEGEND_JS = """
() => {
  const box = (el) => { const r = el.getBoundingClientRect();
                        return [el.id || el.textContent.trim(), r.left, r.top, r.right, r.bottom]; };
  const shown = (el) => !el.hidden && el.getClientRects().length > 0;
  return {
    panel: box(document.querySelector('.map-panel')),
    map: box(document.querySelector('#map')),
    labels: ['#back', '#map-title', '#scope'].map((s) => document.querySelector(s)).filter(shown).map(box),
    entries: [...document.querySelectorAll('.legend > span')].filter(shown).map(box),
    words: [...document.querySelectorAll('.legend > span')].filter(shown).map((s) => s.querySelector('em')).map((e) =>
      [e.textContent, e.getBoundingClientRect().width, parseFloat(getComputedStyle(e).fontSize)]),
  };
}
"""


def apart(a: list[Any], b: list[Any]) -> bool:
    """Two [name, left, top, right, bottom] boxes do not intersect (half a pixel of slack)."""
    return a[3] <= b[1] + 0.5 or b[3] <= a[1] + 0.5 or a[4] <= b[2] + 0.5 or b[4] <= a[2] + 0.5


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080), (390, 844)],
                         ids=["laptop", "wall", "phone"])
def test_the_map_legend_is_legible_and_clear_of_the_map_and_labels(
        chromium: Any, stack: Pipeline, size: tuple[int, int]) -> None:
    """The legend's colours come with their words (红 … 无告警, 无权查看 for a scoped key's
    province), at 12 px or more, beside the
    title, the scoped key's label and 返回全省 or on a line of their own, never over them or
    over the map: with the longest header there is (a scoped key drilled into its city), in
    both languages. At 1366×768 the words used to be hidden."""
    context, board = open_dashboard(chromium, stack.url, *size, key=JINAN_KEY)
    try:
        page = board.page
        page.wait_for_selector("#scope:not([hidden])", timeout=10_000)
        for level in ("province", "city"):
            if level == "city":
                where = page.evaluate("window.__cityagent.pixelOf('370100')")
                page.mouse.click(where["x"], where["y"])
                page.wait_for_selector("#back:not([hidden])", timeout=5_000)
            for lang, words in (("zh", ["红", "橙", "黄", "蓝", "无告警", "无权查看"]),
                                ("en", ["Red", "Orange", "Yellow", "Blue", "no alerts",
                                        "outside this key's scope"])):
                if lang == "en":
                    page.click("#lang")
                got = page.evaluate(LEGEND_JS)
                where = (level, lang)
                # The cities outside the key's scope are drawn (dark) only on the province.
                words = words if level == "province" else words[:-1]
                assert [w[0] for w in got["words"]] == words, (where, got["words"])
                assert all(w[1] > 0 and w[2] >= 12 for w in got["words"]), (where, got["words"])
                panel = got["panel"]
                assert len(got["labels"]) == (3 if level == "city" else 2), (where, got["labels"])
                for entry in got["entries"]:
                    assert panel[1] <= entry[1] and entry[3] <= panel[3], (where, entry, panel)
                    assert entry[4] <= got["map"][2] + 0.5, (where, entry, got["map"])
                    for other in got["labels"] + [e for e in got["entries"] if e is not entry]:
                        assert apart(entry, other), (where, entry, other)
                if lang == "en":
                    page.click("#lang")
        assert board.errors == []
    finally:
        context.close()


#: Every visible word on the page under 12 px: [size, where, text].
SMALL_TEXT_JS = """() => {
  const small = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!node.data.trim() || !el.checkVisibility() || !el.getClientRects().length) continue;
    const size = parseFloat(getComputedStyle(el).fontSize);
    if (size < 12) small.push([size, `${el.tagName}.${el.className}`, node.data.trim().slice(0, 20)]);
  }
  return small;
}"""
#: The font size of the map's region labels (drawn on its canvas).
MAP_LABEL_JS = "window.__cityagent.map.chart.getOption().geo[0].label.fontSize"


def test_no_word_is_under_12_px_at_1366x768(chromium: Any, stack: Pipeline) -> None:
    """At 1366×768 the page's root font is 12 px, and the tiles' labels, the feed's times,
    places and buttons, the trends' tabs and the district names were drawn at
    0.8-0.9 of it (10-11 px; a failed command's detail 8.7 px): too small to read at a
    console. Every word (but the trends' titles on their canvas: see docs/dashboard.md), with a row's tools, its assign field and a failure open, the
    indicator of waiting alerts and the stale badge shown, in both languages, on the
    province and drilled into a city."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        ingest(board, [{"id": "small-1", "sev": "orange", "city": "370100", "at": now_ms()}])
        wait_rows(board, 1)
        row = "#feed li[data-alert-id='small-1']"
        fake_ack(board, 409, {"detail": "alert small-1 is acknowledged"})
        page.click(f"{row} button.ack")
        page.wait_for_selector(f"{row} .err small", timeout=3_000)
        page.click(f"{row} button.more")
        page.click(f"{row} button[data-act=assign]")
        page.wait_for_selector(f"{row} form.edit input", timeout=2_000)  # focused: the feed is held
        ingest(board, [{"id": "small-2", "sev": "blue", "city": "370200", "at": now_ms()}])
        page.wait_for_selector("#feed-new:not([hidden])", timeout=2_000)
        page.route("**/v1/situation", lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"detail": "unavailable"}'))
        page.wait_for_selector("#stale:not([hidden])", timeout=12_000)
        for level in ("province", "city"):
            if level == "city":
                page.press(f"{row} form.edit input", "Escape")
                where = page.evaluate("window.__cityagent.pixelOf('370100')")
                page.mouse.click(where["x"], where["y"])
                page.wait_for_selector("#back:not([hidden])", timeout=5_000)
            for lang in ("zh", "en"):
                if lang == "en":
                    page.click("#lang")
                    page.wait_for_function(f"document.querySelector(\"{row} .badge\")"
                                           ".textContent === 'Orange'", timeout=2_000)
                assert page.evaluate(SMALL_TEXT_JS) == [], (level, lang)
                assert page.evaluate(MAP_LABEL_JS) >= 12, (level, lang)
                if lang == "en":
                    page.click("#lang")
        # Chromium's own lines for the faked 409 and 503, and nothing else.
        assert [e for e in board.errors if not e.startswith("Failed to load resource")] == []
    finally:
        context.close()


#: The trends' titles as drawn: [text, left, right] in the chart's pixels, and its width.
TREND_TITLES_JS = """() => {
  const chart = window.__cityagent.trends.chart;
  const titles = [];
  for (const el of chart.getZr().storage.getDisplayList(true)) {
    if (!['text', 'tspan'].includes(el.type) || !el.style.text) continue;
    const r = el.getBoundingRect().clone();
    r.applyTransform(el.getComputedTransform());
    titles.push([el.style.text, r.x, r.x + r.width, r.y]);
  }
  return {width: chart.getWidth(), titles};
}"""


def test_the_trends_titles_keep_their_figure_inside_their_column(
        chromium: Any, stack: Pipeline) -> None:
    """At 1366×768 a column of the trends is ~77 px: "Zaozhuang 12" in the last one ran past
    the panel's edge (the figure cut off), and a longer title into its neighbour. The name
    gives way (Zaozhua… 12): every title stays in its column and ends with its figure."""
    refuse = {"**/v1/situation": lambda route: route.fulfill(  # the trends: the page's samples
        status=503, content_type="application/json", body='{"detail": "unavailable"}')}
    context, board = open_dashboard(chromium, stack.url, 1366, 768, routes=refuse)
    try:
        page = board.page
        ingest(board, [{"id": f"zz-{city}-{i}", "sev": "blue", "city": city, "at": now_ms()}
                       for city in ("370400", "371500", "370500") for i in range(1234)])
        page.click("#lang")
        page.wait_for_function("window.__cityagent.trends.chart.getOption().title"
                               ".filter((t) => t.text.endsWith(' 1,234')).length === 3", timeout=10_000)
        got = page.evaluate(TREND_TITLES_JS)
        column = got["width"] / 4
        assert len(got["titles"]) == 16, got
        for text, left, right, _ in got["titles"]:
            col = int(left // column)
            assert right <= (col + 1) * column, (text, left, right, got["width"])
        texts = page.evaluate("window.__cityagent.trends.chart.getOption().title.map((t) => t.text)")
        assert texts[:3] == ["Jinan 0", "Qingdao 0", "Zibo 0"], texts
        for i, name in ((3, "Zaozhuang"), (4, "Dongying"), (13, "Liaocheng")):
            assert texts[i].endswith("… 1,234") and name.startswith(texts[i][:2]), texts
    finally:
        context.close()


def test_map_tooltip_names_the_city_with_its_figures(chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        ingest(board, [{"id": "tip-1", "sev": "red", "city": "370100", "at": now_ms()}])
        page.wait_for_function("window.__cityagent.mapState().regions"
                               ".find(r => r.code === '370100').color === '#ff2d2d'")
        for lang, words in (("zh", ["济南市", "最高级别: 红", "未处理 1"]),
                            ("en", ["Jinan", "worst: Red", "open 1"])):
            if lang == "en":
                page.click("#lang")
            page.mouse.move(5, 5)
            where = page.evaluate("window.__cityagent.pixelOf('370100')")
            page.mouse.move(where["x"], where["y"] + 8)
            page.wait_for_function(f"document.querySelector('#map').innerText.includes('{words[1]}')",
                                   timeout=3_000)
            tip = page.inner_text("#map")
            assert all(w in tip for w in words) and "370100" not in tip, tip
    finally:
        context.close()


def test_drilling_sets_the_feed_city_and_going_back_clears_it(chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        ingest(board, [{"id": "dr-jn", "sev": "red", "city": "370100", "at": now_ms()},
                       {"id": "dr-qd", "sev": "red", "city": "370200", "at": now_ms()}])
        wait_rows(board, 2)
        page.select_option("#f-city", "370200")
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("window.__cityagent.mapState().level === 'city'", timeout=5_000)
        page.wait_for_function("document.querySelector('#f-city').value === '370100'", timeout=2_000)
        page.wait_for_function("[...document.querySelectorAll('#feed li[data-alert-id]')]"
                               ".map(r => r.dataset.alertId).join() === 'dr-jn'", timeout=2_000)
        page.click("#back")
        page.wait_for_function("document.querySelector('#f-city').value === ''", timeout=2_000)
        wait_rows(board, 2)
    finally:
        context.close()


def test_a_failing_situation_service_is_shown_as_stale(chromium: Any, stack: Pipeline) -> None:
    if not has_situation(stack.url):
        pytest.skip("the API has no situation service")
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        page.wait_for_function("document.querySelector('#kpi-rate .v').textContent !== '—'",
                               timeout=10_000)
        assert page.is_hidden("#stale")
        boxes = "['.kpis h2', '.tiles', '#trends'].map((s) => document.querySelector(s)" \
                ".getBoundingClientRect()).map((r) => [r.x, r.width, r.height])"
        before = page.evaluate(boxes)
        page.route("**/v1/situation", lambda route: route.fulfill(
            status=503, content_type="application/json", body='{"detail": "unavailable"}'))
        page.wait_for_selector("#stale:not([hidden])", timeout=12_000)
        assert page.text_content("#stale").startswith("态势数据已过时 · 截至 ")
        # Dimmed, not rearranged: the header badge's style (inline-flex, centred) once reached
        # the panel, whose tiles shrank to the middle and whose trends went to no width.
        assert page.evaluate("document.querySelector('.kpis').classList.contains('stale')")
        assert page.evaluate(boxes) == before
        assert page.text_content("#live b") == "实时"  # the alerts are still live
        page.click("#lang")
        page.wait_for_function("document.querySelector('#stale').textContent"
                               ".startsWith('Situation data stale · as of ')", timeout=2_000)
        page.unroute("**/v1/situation")
        page.wait_for_selector("#stale", state="hidden", timeout=12_000)
    finally:
        context.close()


def test_a_click_on_a_city_drills_though_the_map_is_redrawn_meanwhile(
        chromium: Any, stack: Pipeline) -> None:
    """ECharts drops a click whose press and release are on different elements, and every map
    update draws the regions anew (every 400 ms while alerts come in): an operator's click on
    a city with an update between press and release did nothing."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.move(where["x"], where["y"])
        page.mouse.down()
        page.evaluate("() => { const map = window.__cityagent.map;"
                      " map.chart.setOption({geo: {regions: map.regionsOption()}}); }")
        page.mouse.up()
        page.wait_for_function("window.__cityagent.mapState().city === '370100'", timeout=5_000)
        assert board.errors == []
    finally:
        context.close()


#: Record every drill the map starts (the city's code), from the click that asks for it on.
RECORD_DRILLS_JS = """() => {
  const map = window.__cityagent.map;
  const drill = map.drill.bind(map);
  window.__drills = [];
  map.drill = (code) => { window.__drills.push(code); return drill(code); };
}"""


def test_a_city_scoped_key_sees_its_scope_labelled(chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url, key=JINAN_KEY)
    try:
        page = board.page
        page.wait_for_function("window.__cityagent.mapState().scope !== null", timeout=10_000)
        assert board.state()["scope"] == ["370100"]
        page.wait_for_function(  # the tiles are redrawn at most every 250 ms
            "document.querySelector('#kpi-title').textContent === '济南市态势（本密钥范围）'",
            timeout=2_000)
        _assert_the_province_drawn_for_jinan_only(page, board)
        where = page.evaluate("window.__cityagent.pixelOf('370200')")
        page.mouse.move(where["x"], where["y"] + 8)
        page.wait_for_function("document.querySelector('#map').innerText.includes('无权查看')",
                               timeout=3_000)
        page.evaluate(RECORD_DRILLS_JS)
        page.mouse.click(where["x"], where["y"] + 8)
        assert board.state()["level"] == "province"
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("window.__cityagent.mapState().city === '370100'", timeout=5_000)
        # A drill starts in the click's own handler: Qingdao's click, handled before Jinan's,
        # would be on the list before it.
        assert page.evaluate("window.__drills") == ["370100"]
        assert page.is_hidden("#legend-outside")  # Jinan's districts: all in scope
        page.click("#back")
        page.wait_for_selector("#legend-outside", state="visible", timeout=2_000)
        assert board.errors == []
    finally:
        context.close()


#: Click 中文/EN and read the tiles' title in the same task, before any frame is drawn.
SWITCH_LANG_JS = """() => {
  document.querySelector('#lang').click();
  return document.querySelector('#kpi-title').textContent;
}"""


def test_the_tiles_title_is_right_in_the_frame_the_language_changes(
        chromium: Any, stack: Pipeline) -> None:
    """A language change set the tiles' title to the province's word (全省态势, Province), and
    the scoped or drilled title came back only with the next tiles render (up to 250 ms later):
    it must be right at once."""
    context, board = open_dashboard(chromium, stack.url, key=JINAN_KEY)
    try:
        page = board.page
        page.wait_for_function(
            "document.querySelector('#kpi-title').textContent === '济南市态势（本密钥范围）'",
            timeout=10_000)
        assert page.evaluate(SWITCH_LANG_JS) == "Jinan (this key's scope)"
        assert page.evaluate(SWITCH_LANG_JS) == "济南市态势（本密钥范围）"
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("document.querySelector('#kpi-title').textContent === '济南市态势'",
                               timeout=5_000)
        assert page.evaluate(SWITCH_LANG_JS) == "Jinan"
        assert page.evaluate(SWITCH_LANG_JS) == "济南市态势"
        page.click("#back")
        page.wait_for_function(
            "document.querySelector('#kpi-title').textContent === '济南市态势（本密钥范围）'",
            timeout=2_000)
        assert board.errors == []
    finally:
        context.close()


def test_a_scoped_key_gets_its_scope_from_v1_me_while_the_situation_does_not_answer(
        chromium: Any, stack: Pipeline) -> None:
    """GET /v1/me states the key's scope: a Jinan key's map and tiles are Jinan's while the
    situation routes fail (an API just started, or failing), not the whole province; and when
    the situation answers, stating the same scope, nothing changes."""
    situation_calls: list[str] = []

    def unavailable(route: Any) -> None:
        situation_calls.append(route.request.url)
        route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "5"},
                      body='{"detail": "starting"}')

    context, board = open_dashboard(chromium, stack.url, key=JINAN_KEY,
                                    routes={"**/v1/situation**": unavailable})
    try:
        page = board.page
        page.wait_for_function(
            "document.querySelector('#kpi-title').textContent === '济南市态势（本密钥范围）'",
            timeout=10_000)
        assert board.state()["scope"] == ["370100"]
        _assert_the_province_drawn_for_jinan_only(page, board)
        page.wait_for_selector("#stale:not([hidden])", timeout=12_000)  # asked, and refused
        assert situation_calls
        assert page.text_content("#kpi-sensors .v") == "—"
        assert page.text_content("#kpi-title") == "济南市态势（本密钥范围）"
        assert board.state()["scope"] == ["370100"]

        context.unroute("**/v1/situation**")
        page.wait_for_selector("#stale", state="hidden", timeout=12_000)
        page.wait_for_function("document.querySelector('#kpi-sensors .v').textContent !== '—'",
                               timeout=2_000)
        assert board.state()["scope"] == ["370100"]
        assert page.text_content("#kpi-title") == "济南市态势（本密钥范围）"
        assert page.text_content("#scope") == "本密钥可查看：济南市"
        # The console's only errors are the 503s of the situation calls.
        assert all("503" in e for e in board.errors), board.errors
    finally:
        context.close()


def test_the_key_dialog_can_be_cancelled_and_labels_are_translated(
        chromium: Any, stack: Pipeline) -> None:
    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto(stack.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        # The tiles drawn with what the page knows before a key: nothing about the service.
        page.wait_for_function("(window.__cityagent?.stats().renders.kpi || 0) >= 1", timeout=5_000)
        assert page.is_hidden("#kpi-note")
        assert page.is_hidden("#key-cancel")
        page.keyboard.press("Escape")  # the first key cannot be skipped
        assert page.evaluate("document.querySelector('#key-dialog').open")
    finally:
        context.close()

    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        assert page.get_attribute("#f-city", "aria-label") == "按城市筛选告警"
        ingest(board, [{"id": "name-1", "sev": "red", "city": "370100", "at": now_ms()}])
        wait_rows(board, 1)
        label = page.get_attribute("#feed li[data-alert-id='name-1'] button.ack", "aria-label")
        assert label == "确认: 测试告警 name-1"
        page.wait_for_function("document.querySelector('#live').dataset.state === 'live'")
        page.click("#change-key")
        page.wait_for_selector("#key-dialog[open]")
        assert page.is_visible("#key-cancel")
        page.keyboard.press("Escape")
        page.wait_for_selector("#key-dialog", state="hidden")
        assert page.evaluate("sessionStorage.getItem('cityagent.key')") == OPERATOR_KEY
        assert page.get_attribute("#live", "data-state") == "live"
        page.click("#change-key")
        page.click("#key-cancel")
        assert not page.evaluate("document.querySelector('#key-dialog').open")
        page.click("#lang")
        assert page.get_attribute("#f-city", "aria-label") == "Filter alerts by city"
        page.wait_for_function("document.querySelector(\"#feed li[data-alert-id='name-1'] button.ack\")"
                               ".getAttribute('aria-label') === 'Ack: test alert name-1'", timeout=2_000)
        assert board.errors == []
    finally:
        context.close()


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_blank_key_is_answered_in_words(chromium: Any, stack: Pipeline, lang: str) -> None:
    """A key of spaces passes the field's own check (only an empty one fails it) and was then
    dropped without a word: the dialog did nothing, or went on showing the previous key's
    error (此密钥无权查看告警) as if this one had been refused."""
    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.add_init_script(f"localStorage.setItem('cityagent.lang', '{lang}')")
        page.goto(stack.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        blank = {"zh": "请输入密钥。", "en": "Please enter a key."}[lang]
        page.fill("#key-input", "   ")
        page.click("#key-form button[type=submit]")
        page.wait_for_function(f"document.querySelector('#key-error').textContent === '{blank}'",
                               timeout=2_000)
        page.fill("#key-input", INTEGRATOR_KEY)  # refused: 403
        page.click("#key-form button[type=submit]")
        page.wait_for_function("!['', '正在验证…', 'Checking…', "
                               f"'{blank}'].includes(document.querySelector('#key-error').textContent)",
                               timeout=5_000)
        page.fill("#key-input", "  ")
        page.click("#key-form button[type=submit]")
        page.wait_for_function(f"document.querySelector('#key-error').textContent === '{blank}'",
                               timeout=2_000)
        assert page.evaluate("document.activeElement.id") == "key-input"
    finally:
        context.close()


def change_key(board: Dashboard, key: str) -> None:
    """更换密钥 with another key: the page starts over with it."""
    page = board.page
    page.click("#change-key")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#key-dialog", state="hidden", timeout=10_000)
    page.wait_for_selector("body[data-ready='1']", timeout=15_000)


def test_a_failed_v1_me_is_asked_again_and_then_applies(chromium: Any, stack: Pipeline) -> None:
    """GET /v1/me answering 503 (an API restarting) is asked again a few seconds later: the
    viewer key then loses its buttons and the Jinan key gets its scope. Only a 404 (an API
    from before /v1/me) is taken as final."""
    def failing_once(asked: list[int]) -> Callable[[Any], None]:
        def route_me(route: Any) -> None:
            asked.append(len(asked))
            if len(asked) == 1:
                route.fulfill(status=503, content_type="application/json",
                              body='{"detail": "restarting"}', headers={"Retry-After": "1"})
            else:
                route.continue_()
        return route_me

    for key, shown in ((VIEWER_KEY, "#readonly"), (JINAN_KEY, "#scope")):
        asked: list[int] = []
        context, board = open_dashboard(chromium, stack.url, key=key,
                                        routes={"**/v1/me": failing_once(asked)})
        try:
            page = board.page
            page.wait_for_function("window.__cityagent.stats().me !== null", timeout=15_000)
            assert len(asked) == 2, asked
            page.wait_for_selector(f"{shown}:not([hidden])", timeout=2_000)
            if key == JINAN_KEY:
                assert board.stats()["scope"] == ["370100"]
        finally:
            context.close()


def test_a_viewer_key_gets_the_feed_without_buttons_and_says_it_is_read_only(
        chromium: Any, stack: Pipeline) -> None:
    """A wall screen's key: GET /v1/me says it may read, not act; the feed has no 确认 and no
    更多, each row says its status instead, and the header says 只读 / Read-only."""
    context, board = open_dashboard(chromium, stack.url, key=VIEWER_KEY)
    try:
        page = board.page
        page.wait_for_selector("#readonly:not([hidden])", timeout=10_000)
        assert board.stats()["me"]["role"] == "viewer"
        specs = [{"id": "ro-open", "sev": "red", "city": "370100", "at": now_ms()},
                 {"id": "ro-acked", "sev": "orange", "city": "370200", "at": now_ms() - 1000,
                  "status": "acknowledged"}]
        ingest(board, specs)
        wait_rows(board, 2)
        assert page.locator("#feed button:not(.ttl)").count() == 0  # the title opens details
        statuses = "[...document.querySelectorAll('#feed li[data-alert-id] .st')].map(s => s.textContent)"
        assert page.evaluate(statuses) == ["未处理", "已确认"]
        assert page.text_content("#readonly") == "只读"
        assert page.get_attribute("#readonly", "title") == "此密钥只能查看，不能确认、处置或备注告警"
        page.click("#lang")
        page.wait_for_function("document.querySelector('#readonly').textContent === 'Read-only'",
                               timeout=2_000)
        assert page.get_attribute("#readonly", "title").startswith("This key may view only")
        page.wait_for_function(f"JSON.stringify({statuses}) === '[\"open\",\"acknowledged\"]'",
                               timeout=2_000)
        assert page.locator("#feed button:not(.ttl)").count() == 0  # the title opens details
        page.click("#lang")
        # The alerts stay live for a viewer: an ack made elsewhere shows in the row.
        ingest(board, [{**specs[0], "status": "acknowledged", "type": "acknowledged", "seq": 2,
                        "at": now_ms()}])
        page.wait_for_function("document.querySelector(\"#feed li[data-alert-id='ro-open']\")"
                               ".dataset.status === 'acknowledged'", timeout=2_000)
        assert board.errors == [] and board.outside == []

        # Another key in the key dialog: the page asks /v1/me again; an operator acts.
        change_key(board, OPERATOR_KEY)
        page.wait_for_function("window.__cityagent.stats().me?.role === 'operator'", timeout=10_000)
        assert page.is_hidden("#readonly")
        # New alerts: the viewer's rows may still show until the feed's next render.
        ingest(board, [{**spec, "id": f"op-{spec['id']}"} for spec in specs])
        page.wait_for_selector("#feed li[data-alert-id='op-ro-open'] button.ack", timeout=5_000)
        assert page.locator("#feed button[data-act='more']").count() == 2

        # An API without /v1/me (404): the page behaves as before it existed, buttons and all.
        asked: list[str] = []

        def old_api(route: Any) -> None:
            asked.append(route.request.headers.get("authorization", ""))
            route.fulfill(status=404, content_type="application/json",
                          body='{"detail": "Not Found"}')

        page.route("**/v1/me", old_api)
        # The page says when it had its 404 (a warning): stats().me is null from the key
        # change on, so it alone would not show the page took the 404 in its stride.
        with page.expect_console_message(lambda m: m.text.startswith("GET /v1/me:"),
                                         timeout=10_000):
            change_key(board, VIEWER_KEY)
        assert asked == [f"Bearer {VIEWER_KEY}"]
        assert board.stats()["me"] is None
        ingest(board, [{**spec, "id": f"old-{spec['id']}"} for spec in specs])
        page.wait_for_selector("#feed li[data-alert-id='old-ro-open'] button.ack", timeout=5_000)
        assert page.is_hidden("#readonly")
        assert page.locator("#feed button[data-act='more']").count() == 2
    finally:
        context.close()


def test_an_api_told_to_stop_ends_the_stream_and_the_page_says_so(
        chromium: Any, stack: Pipeline, tmp_path: Any) -> None:
    """SIGTERM (a restart by `cityagent up`, systemd, docker stop) made uvicorn wait for every
    open request to end, and a dashboard's alert stream never ends: the API refused new calls
    but went on sending heartbeats, so the page said 实时 over stale tiles, and the process
    stayed until every dashboard was closed (so `up` never started it again). It must exit,
    closing the stream, and the page must say 重连中."""
    settings = dataclasses.replace(stack.settings, api_port=free_port())
    api = start_api(settings, tmp_path / "api.log")  # its own API on the stack's topics
    try:
        context, board = open_dashboard(chromium, f"http://127.0.0.1:{settings.api_port}")
        try:
            page = board.page
            page.wait_for_function("document.querySelector('#live').dataset.state === 'live'",
                                   timeout=10_000)
            api.proc.send_signal(signal.SIGTERM)
            try:
                api.proc.wait(30)
            except subprocess.TimeoutExpired:
                pytest.fail("the API did not exit within 30 s of SIGTERM with a dashboard open")
            page.wait_for_function("document.querySelector('#live').dataset.state === 'retry'",
                                   timeout=10_000)
            assert page.text_content("#live b") == "重连中"
        finally:
            context.close()
    finally:
        api.stop()


def _assert_the_province_drawn_for_jinan_only(page: Any, board: Dashboard) -> None:
    """What a Jinan-scoped key sees of the province: its scope named, the other cities dark
    and the legend saying why, the city filter and the trends of Jinan alone."""
    assert page.text_content("#scope") == "本密钥可查看：济南市"
    assert board.color("370200") == OUTSIDE and board.color("370100") != OUTSIDE
    # The legend names the dark colour while the province (with the other cities) is drawn.
    assert page.is_visible("#legend-outside")
    assert page.text_content("#legend-outside") == "无权查看"
    options = page.eval_on_selector_all("#f-city option", "os => os.map(o => o.value)")
    assert options == ["", "370100"]
    # One city's trend: one chart across the panel, not a quarter of it. The trends are drawn
    # at most every 2 s (TRENDS_MS), so the scope reaches them up to 2 s after the tiles: wait.
    grids = "window.__cityagent.trends.chart.getOption().grid.map(g => g.width)"
    wait_until(page, lambda: page.evaluate(grids) == ["97%"],
               "one trend chart across the panel (grid width 97%)", timeout_s=5.0)


def test_the_feed_says_loading_not_no_alerts_until_the_alerts_are_listed(
        chromium: Any, stack: Pipeline) -> None:
    """An API slow to list its alerts (or not answering): the feed said 暂无告警 and the tiles
    0 0 0 0 meanwhile, an all-clear the page could not know; now 正在加载告警… and —."""
    listing: list[Any] = []  # held, never answered

    def hold(route: Any) -> None:
        listing.append(route)

    context = chromium.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                   timezone_id="Asia/Shanghai")
    try:
        context.route(lambda url: "/v1/alerts?" in url and "status=open" in url, hold)
        page = context.new_page()
        page.goto(stack.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", OPERATOR_KEY)
        page.click("#key-form button[type=submit]")
        wait_until(page, lambda: bool(listing), "the page lists the alerts")
        page.wait_for_function("document.querySelector('#live').dataset.state === 'live'"
                               " && window.__cityagent.stats().renders.feed > 0"
                               " && window.__cityagent.stats().renders.kpi > 0", timeout=10_000)
        assert page.text_content("#feed") == "正在加载告警…"
        assert page.text_content("#kpi-alerts [data-n='red']") == "—"
        assert page.text_content("#kpi-alerts .acked") == "—"
        page.click("#lang")
        page.wait_for_function("document.querySelector('#feed').textContent === 'Loading alerts…'",
                               timeout=2_000)
    finally:
        context.close()


DETAIL = {"alert_id": "det-1", "scope": "city:370100", "status": "acknowledged",
          "severity": "red", "kind": "water_level", "family": "flood",
          "title_zh": "济南市槐荫区 红色区域性内涝/洪水（123个传感器）",
          "title_en": "red area flooding at Huaiyin District (Jinan), 123 sensors",
          "reason_zh": "水位超过保证水位", "reason_en": "water level above the guaranteed level",
          "city_code": "370100", "city_name": "济南市", "district_code": "370104",
          "district_name": "槐荫区", "zone_ids": [], "departments": ["water", "emergency"],
          "departments_zh": ["水务局", "应急管理局"], "sensors": ["jn-wl-000880", "jn-wl-001105"],
          "sensor_count": 123, "active_sensor_count": 0, "anomaly_count": 300,
          "lon": 116.89, "lat": 36.65, "escalation_level": "district",
          "acknowledged_by": "张三@prov-duty", "assigned_to": "槐荫排水一队", "comments": 1}


def test_an_alert_opens_with_its_history_and_says_its_sensors_are_back_to_normal(
        chromium: Any, stack: Pipeline) -> None:
    """The feed's row cuts a storm's title, departments and comments short, and a comment made
    before the page opened showed only as 备注 1 条: the title now opens the alert's details
    (GET /v1/alerts/{id}), the comment's text and who made it among them, the sensor changes
    folded into one line. A row whose sensors are all back to normal says so, before the
    auto-resolve."""
    t0 = now_ms() - 600_000
    alert = {**DETAIL, "first_seen_ms": t0, "last_seen_ms": t0 + 60_000, "opened_ms": t0,
             "acknowledged_at_ms": t0 + 120_000, "seq": 7}
    item = {"event_id": "", "detail": "", "escalation_level": "district", "anomaly_id": None,
            "sensor_id": None, "severity": "red", "assigned_to": None}
    history = [
        {**item, "type": "opened", "actor": "system", "at_ms": t0, "seq": 1, "status": "open"},
        *({**item, "type": "updated", "actor": "system", "at_ms": t0 + 1000 * i, "seq": 1 + i,
           "status": "open", "sensor_id": f"jn-wl-00{i}"} for i in (1, 2, 3)),
        {**item, "type": "acknowledged", "actor": "张三@prov-duty", "at_ms": t0 + 120_000,
         "seq": 5, "status": "acknowledged"},
        {**item, "type": "escalated", "actor": "system", "at_ms": t0 + 125_000, "seq": 6,
         "status": "acknowledged", "detail": "city"},  # the engine's word: shown in words
        {**item, "type": "commented", "actor": "张三@prov-duty", "at_ms": t0 + 130_000,
         "seq": 7, "status": "acknowledged", "detail": "泵车已到达现场"}]
    asked: list[str] = []

    def answer(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(
            {"alert": alert, "history": history, "history_complete": True}))

    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        page.route("**/v1/alerts/det-1", answer)
        since = board.page.evaluate("window.__cityagent.stats().renders.feed || 0")
        page.evaluate("(a) => window.__cityagent.ingest([{event_id: 'det-1-7', type: 'acknowledged',"
                      " alert_id: a.alert_id, actor: 'system', at_ms: a.acknowledged_at_ms,"
                      " alert: a}])", alert)
        wait_feed_drawn(board, since)
        row = "#feed li[data-alert-id='det-1']"
        assert page.text_content(f"{row} .calm") == "传感器均已恢复正常，待自动解除"
        assert page.text_content(f"{row} .info").endswith("备注 1 条")  # no text in the row
        page.click(f"{row} button.ttl")
        page.wait_for_selector("#alert-detail[open] .history li", timeout=5_000)
        assert asked and asked[-1].endswith("/v1/alerts/det-1")
        assert page.text_content("#detail-title") == DETAIL["title_zh"]
        lines = page.eval_on_selector_all(  # newest first; each line but its time
            "#alert-detail .history li",
            "lis => lis.map(li => [...li.children].slice(1).map(c => c.textContent).join(' '))")
        assert lines == ["备注 张三（prov-duty） 泵车已到达现场", "升级 系统 升级至市级",
                         "确认 张三（prov-duty）",
                         "3 次传感器状态变化", "生成告警 系统"]
        facts = page.inner_text("#alert-detail .facts")
        assert "水务局、应急管理局" in facts and "槐荫排水一队" in facts and "共 123 个" in facts
        # Esc closes the details only (the map stays where it was), focus back on the title.
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#alert-detail').open", timeout=2_000)
        assert board.state()["level"] == "province"
        assert page.evaluate("document.activeElement.matches(\"li[data-alert-id='det-1'] button.ttl\")")
        page.click("#lang")
        page.wait_for_function(f"document.querySelector(\"{row} .info\")?.textContent.endsWith('1 note')",
                               timeout=2_000)
        page.click(f"{row} button.ttl")
        page.wait_for_selector("#alert-detail[open] .history li", timeout=5_000)
        assert page.text_content("#detail-title") == DETAIL["title_en"]
        assert "3 sensor changes" in page.inner_text("#alert-detail .history")
        assert "escalated to the city" in page.inner_text("#alert-detail .history")
        assert "张三 (prov-duty)" in page.inner_text("#alert-detail .history")
        page.click("#alert-detail .detail-close")
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_the_feed_filters_by_least_severity(chromium: Any, stack: Pipeline) -> None:
    """After the storm 22 blue pipe-pressure alerts filled the feed under the one that
    mattered: 橙色及以上 (orange and red) and 黄色及以上 leave the rest out, with the city and
    department filters."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        t0 = now_ms() - 60_000
        specs = [{"id": f"lvl-{sev}-{i}", "sev": sev, "city": "370100", "at": t0 + i}
                 for sev in ("red", "orange", "yellow", "blue") for i in range(2)]
        ingest(board, specs)
        wait_rows(board, 8)

        def shown() -> set[str]:
            return {i.split("-")[1] for i in board.feed_ids() if i.startswith("lvl-")}

        page.select_option("#f-sev", "orange")
        page.wait_for_function("document.querySelectorAll('#feed li[data-severity=yellow]').length === 0",
                               timeout=2_000)
        assert shown() == {"red", "orange"}
        page.select_option("#f-sev", "yellow")
        page.wait_for_function("document.querySelectorAll('#feed li[data-severity=yellow]').length > 0",
                               timeout=2_000)
        assert shown() == {"red", "orange", "yellow"}
        # Filtered to nothing, the feed says the other alerts exist (not 暂无告警).
        page.select_option("#f-dept", "education")
        page.wait_for_function("!document.querySelector('#feed li[data-alert-id]')", timeout=2_000)
        total = board.stats()["alerts"]
        assert page.text_content("#feed") == f"当前筛选下暂无告警（全部共 {total} 条）"
        page.select_option("#f-dept", "")
        page.click("#lang")
        page.wait_for_function("document.querySelector('#f-sev').selectedOptions[0].text === 'Yellow and up'",
                               timeout=2_000)
        assert page.get_attribute("#f-sev", "aria-label") == "Filter alerts by severity"
        page.select_option("#f-sev", "")
        page.wait_for_function("document.querySelectorAll('#feed li[data-severity=blue]').length > 0",
                               timeout=2_000)
        assert shown() == {"red", "orange", "yellow", "blue"}
        assert board.errors == []
    finally:
        context.close()


def test_a_drilled_city_says_what_its_sensor_dots_mean(chromium: Any, stack: Pipeline) -> None:
    """Drilled into Jinan during the storm, orange and yellow sensor dots (gauges over 保证 and
    警戒) lay all over the city under a legend of alert colours, beside a tile of 0 orange
    alerts: the map now says which dots are sensors and what their colours mean."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        page.wait_for_function("window.__cityagent.stats().situation", timeout=10_000)
        assert page.is_hidden("#sensor-legend")  # the province draws no sensors
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("window.__cityagent.mapState().level === 'city'", timeout=5_000)
        page.wait_for_selector("#sensor-legend:not([hidden])", timeout=2_000)
        assert page.inner_text("#sensor-legend").split() == [
            "传感器（小圆点）：", "超保证水位", "超警戒水位", "正常", "静默", "告警（大圆点）"]
        box = page.locator("#sensor-legend").bounding_box()
        panel = page.locator(".map-panel").bounding_box()
        assert box["height"] < 24 and box["y"] + box["height"] <= panel["y"] + panel["height"]
        page.click("#lang")
        page.wait_for_function("document.querySelector('#sensor-legend').innerText"
                               ".startsWith('Sensor dots:')", timeout=2_000)
        assert page.locator("#sensor-legend").bounding_box()["height"] < 24  # one line
        page.click("#back")
        page.wait_for_selector("#sensor-legend[hidden]", state="attached", timeout=2_000)
    finally:
        context.close()


def test_the_department_and_severity_filters_outlive_a_reload(chromium: Any, stack: Pipeline) -> None:
    """A water-affairs dispatcher filters the feed to 水务局; a reload (a stuck page, a wall PC
    restarting its browser) put it back to 全部部门 and 全部级别 before."""
    context, board = open_dashboard(chromium, stack.url, 1366, 768)
    try:
        page = board.page
        page.select_option("#f-dept", "water")
        page.select_option("#f-sev", "orange")
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert page.input_value("#f-dept") == "water" and page.input_value("#f-sev") == "orange"
        ingest(board, [{"id": "keep-red", "sev": "red", "city": "370100", "at": now_ms()},
                       {"id": "keep-blue", "sev": "blue", "city": "370100", "at": now_ms()}])
        page.wait_for_selector("#feed li[data-alert-id='keep-red']", timeout=5_000)
        assert "keep-blue" not in board.feed_ids()  # drawn in the same render as keep-red
        page.select_option("#f-dept", "")
        page.select_option("#f-sev", "")
        page.reload()
        page.wait_for_selector("body[data-ready='1']", timeout=15_000)
        assert page.input_value("#f-dept") == "" and page.input_value("#f-sev") == ""
    finally:
        context.close()


#: A city-wide flood as the alerting worker publishes it since 2026-11-25: opened in 槐荫区,
#: with sensors in 历下区 and 天桥区 too; ``codes`` is its district_codes (null: an event
#: from before the field, with its one district_code).
CITY_WIDE_JS = """([id, codes, opener, name]) => window.__cityagent.ingest([{
  event_id: `${id}-1`, type: 'opened', alert_id: id, actor: 'system', at_ms: Date.now(),
  alert: {alert_id: id, scope: 'city:370100', status: 'open', severity: 'red',
    kind: 'water_level', family: 'flood', title_zh: `济南市 测试 ${id}`, title_en: `test ${id}`,
    reason_zh: '测试', reason_en: 'test', city_code: '370100', city_name: '济南市',
    district_code: opener, district_name: name,
    ...(codes ? {district_codes: codes} : {}), zone_ids: [], departments: ['water'],
    departments_zh: [], sensors: ['jn-wl-1', 'jn-wl-2', 'jn-wl-3'], sensor_count: 3,
    anomaly_count: 3, lon: null, lat: null, first_seen_ms: Date.now(), last_seen_ms: Date.now(),
    opened_ms: Date.now(), escalation_level: 'district', acknowledged_by: null,
    acknowledged_at_ms: null, seq: 1}}])"""


def test_a_city_wide_alert_colours_every_district_it_reaches_and_its_row_names_them(
        chromium: Any, stack: Pipeline) -> None:
    """Drilled into Jinan, a red flood over 槐荫区, 历下区 and 天桥区 painted 槐荫区 alone (its
    opener's district) and its row said 济南市 · 槐荫区. A row names up to three districts and
    counts more; the opened alert names them all."""
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        page.evaluate(CITY_WIDE_JS, ["cw-flood", ["370104", "370102", "370105"], "370104", "槐荫区"])
        page.evaluate(CITY_WIDE_JS, ["cw-old", None, "370112", "历城区"])  # no district_codes
        five = ["370104", "370102", "370105", "370103", "370112"]
        page.evaluate(CITY_WIDE_JS, ["cw-wide", five, "370104", "槐荫区"])
        wait_rows(board, 3)
        wide = "#feed li[data-alert-id='cw-wide']"
        assert "济南市 · 5 个区县" in page.inner_text(wide)  # more than 3: counted in the row
        alert = next(a for a in page.evaluate("window.__cityagent.alerts()")
                     if a["alert_id"] == "cw-wide")
        page.route("**/v1/alerts/cw-wide", lambda route: route.fulfill(
            status=200, content_type="application/json",
            body=json.dumps({"alert": alert, "history": [], "history_complete": True})))
        page.click(f"{wide} button.ttl")
        page.wait_for_selector("#alert-detail[open]", timeout=5_000)
        page.wait_for_function("document.querySelector('#alert-detail .facts')?.innerText"
                               ".includes('槐荫区、历下区、天桥区、市中区、历城区')", timeout=3_000)
        page.keyboard.press("Escape")
        page.wait_for_function("!document.querySelector('#alert-detail').open", timeout=2_000)
        where = page.evaluate("window.__cityagent.pixelOf('370100')")
        page.mouse.click(where["x"], where["y"])
        page.wait_for_function("window.__cityagent.mapState().city === '370100'", timeout=5_000)
        red = base.SEVERITY_COLORS["red"]
        page.wait_for_function(f"window.__cityagent.mapState().regions"
                               f".find(r => r.code === '370102').color === '{red}'", timeout=5_000)
        colours = {r["code"]: r["color"] for r in board.state()["regions"]}
        assert {c for c, colour in colours.items() if colour == red} == {
            "370104", "370102", "370105", "370103", "370112"}
        row = page.inner_text("#feed li[data-alert-id='cw-flood']")
        assert "济南市 · 槐荫区、历下区、天桥区" in row, row
        assert "济南市 · 历城区" in page.inner_text("#feed li[data-alert-id='cw-old']")
        page.click("#lang")
        page.wait_for_function("document.querySelector('#feed li[data-alert-id=\"cw-flood\"]')"
                               ".innerText.includes('Huaiyin District, Lixia District')",
                               timeout=3_000)
        assert not board.errors, board.errors
    finally:
        context.close()
