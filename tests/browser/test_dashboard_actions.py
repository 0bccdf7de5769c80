"""The feed's actions beyond ack: resolve, assign and comment reach the API and come back
through the worker; a command that hangs times out in its row; a key that may not act is told
so in words; the tools fit a wall screen, a laptop and a phone.

Resolve, assign and comment act on real alerts (readings posted over HTTP, detected by the
worker); the timeout and the 403 use synthetic alerts (``window.__cityagent.ingest``) and
Playwright routes, as test_dashboard_operator.py does.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import test_dashboard as base
from tests.browser.test_dashboard import Dashboard, open_dashboard, reading, wait_until
from tests.browser.test_dashboard_operator import INGEST_JS, now_ms, wait_rows
from tests.helpers import AUTH, INTEGRATOR_KEY, OPERATOR_KEY, Pipeline, running_pipeline

chromium = base.chromium  # the fixture: Chromium through playwright, or skip (fail in CI)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

#: Where the layout test's screenshots go (a temporary folder unless named).
SHOTS = Path(os.environ.get("CITYAGENT_SCREENSHOT_DIR") or tempfile.gettempdir())
#: Gauges over their level in three cities: one alert each, to resolve, assign and comment on.
PLACES = {"resolve": (120.3844, 36.0610), "assign": (121.39, 37.52), "named": (118.35, 35.05)}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("actions-ui"), "ua") as p:
        yield p


@pytest.fixture(scope="module")
def alerts(stack: Pipeline) -> dict[str, dict[str, Any]]:
    """Real alerts, detected by the worker from posted readings: {purpose: alert}."""
    start = float(int(time.time()) // 2 * 2 - 20)  # a 2 s window boundary, in the recent past
    sensors = {purpose: f"act-{purpose}-{uuid.uuid4().hex[:6]}" for purpose in PLACES}
    body = []
    for purpose, where in PLACES.items():
        body += [reading(sensors[purpose], where, 2.0, start),
                 reading(sensors[purpose], where, 5.6, start + 4)]
    answer = httpx.post(f"{stack.url}/v1/readings", headers=AUTH, json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(found) < len(PLACES):
        stack.worker.assert_running()
        listed = httpx.get(f"{stack.url}/v1/alerts", headers=AUTH, timeout=5,
                           params={"limit": 1000}).json()["alerts"]
        for purpose, sensor in sensors.items():
            match = next((a for a in listed if sensor in a["sensors"]), None)
            if match is not None:
                found[purpose] = match
        time.sleep(0.2)
    assert len(found) == len(PLACES), f"alerts within 90 s for {sorted(found)} of {sorted(PLACES)}"
    return found


def row(alert_id: str) -> str:
    return f"#feed li[data-alert-id='{alert_id}']"


def alert_now(stack: Pipeline, alert_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{stack.url}/v1/alerts/{alert_id}", headers=AUTH, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_feed_has(board: Dashboard, alert_id: str) -> None:
    board.page.wait_for_selector(row(alert_id), timeout=15_000)


def test_resolve_from_the_feed_reaches_the_api_and_the_row_turns_resolved(
        chromium: Any, stack: Pipeline, alerts: dict[str, dict[str, Any]]) -> None:
    alert_id = alerts["resolve"]["alert_id"]
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        wait_feed_has(board, alert_id)
        title = alerts["resolve"]["title_zh"]
        more = page.locator(f"{row(alert_id)} button[data-act='more']")
        assert more.get_attribute("aria-label") == f"更多操作: {title}"
        assert more.get_attribute("aria-expanded") == "false"
        more.click()
        resolve = page.locator(f"{row(alert_id)} button[data-act='resolve']")
        assert more.get_attribute("aria-expanded") == "true"
        assert resolve.get_attribute("aria-label") == f"解决: {title}"
        resolve.click()  # the pointer stays on the list: the row stays, and says resolved
        page.wait_for_selector(f"{row(alert_id)}[data-status='resolved']", timeout=30_000)
        assert page.text_content(f"{row(alert_id)} .st") == "已解除"
        assert page.locator(f"{row(alert_id)} button:not(:disabled)").count() == 0
        now = alert_now(stack, alert_id)["alert"]
        assert now["status"] == "resolved" and now["resolved_by"], now
        # The pointer leaves: the resolved alert leaves the feed.
        page.mouse.move(5, 300)
        page.wait_for_selector(row(alert_id), state="detached", timeout=5_000)
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_assign_and_comment_from_the_feed_reach_the_api(
        chromium: Any, stack: Pipeline, alerts: dict[str, dict[str, Any]]) -> None:
    alert = alerts["assign"]
    alert_id = alert["alert_id"]
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        wait_feed_has(board, alert_id)
        # Keyboard only: 更多, then 指派 opens a form in the row; Esc closes it, focus stays.
        page.focus(f"{row(alert_id)} button[data-act='more']")
        page.keyboard.press("Enter")
        assign = f"{row(alert_id)} button[data-act='assign']"
        page.wait_for_selector(assign)
        page.focus(assign)
        page.keyboard.press("Enter")
        field = f"{row(alert_id)} form.edit input"
        page.wait_for_selector(field)
        assert page.evaluate("document.activeElement.matches(\"form.edit input\")")
        assert page.get_attribute(field, "aria-label") == f"指派给: {alert['title_zh']}"
        chips = page.eval_on_selector_all(f"{row(alert_id)} form.edit .chip",
                                          "cs => cs.map(c => c.textContent)")
        assert "水务局" in chips, chips  # the alert's departments, one tap each
        page.keyboard.press("Escape")
        page.wait_for_selector(f"{row(alert_id)} form.edit", state="detached")
        assert page.evaluate("document.activeElement.dataset.act") == "assign"
        assert board.state()["level"] == "province"
        # Assign, typed, sent with Enter.
        page.keyboard.press("Enter")
        page.wait_for_selector(field)
        page.keyboard.type("历下区排水抢险一队")
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"document.querySelector(\"{row(alert_id)} .info\")?.textContent"
            ".includes('指派：历下区排水抢险一队')", timeout=30_000)
        # Comment, with the pointer: 备注, type, 提交.
        page.click(f"{row(alert_id)} button[data-act='comment']")
        page.fill(field, "泵车已到达现场")
        page.click(f"{row(alert_id)} form.edit button.go")
        page.wait_for_function(
            f"document.querySelector(\"{row(alert_id)} .info\")?.textContent"
            ".includes('备注：泵车已到达现场')", timeout=30_000)
        detail = alert_now(stack, alert_id)
        assert detail["alert"]["assigned_to"] == "历下区排水抢险一队"
        assert detail["alert"]["comments"] == 1
        assert [(h["type"], h["detail"]) for h in detail["history"]
                if h["type"] in ("assigned", "commented")] == [
            ("assigned", "历下区排水抢险一队"), ("commented", "泵车已到达现场")]
        page.click("#lang")
        page.wait_for_function(
            f"document.querySelector(\"{row(alert_id)} .info\")?.textContent"
            ".startsWith('Assigned: 历下区排水抢险一队 · Note: 泵车已到达现场')", timeout=2_000)
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_an_operator_who_gives_a_name_is_recorded_as_who_acknowledged(
        chromium: Any, stack: Pipeline, alerts: dict[str, dict[str, Any]]) -> None:
    # A shift shares one operator key: the name typed with it says who acted (NAME@KEY_ID),
    # in the alert's history, in the row, and for the next command after a change of key.
    alert_id = alerts["named"]["alert_id"]
    context, board = open_dashboard(chromium, stack.url, operator="张三")
    try:
        page = board.page
        wait_feed_has(board, alert_id)
        page.click(f"{row(alert_id)} button[data-act='ack']")
        page.wait_for_selector(f"{row(alert_id)}[data-status='acknowledged']", timeout=30_000)
        detail = alert_now(stack, alert_id)
        acker = detail["alert"]["acknowledged_by"]
        assert acker.startswith("张三@") and len(acker) > len("张三@"), acker
        assert [h["actor"] for h in detail["history"] if h["type"] == "acknowledged"] == [acker]
        page.wait_for_function(
            f"document.querySelector(\"{row(alert_id)} .info\")?.textContent === '确认：张三'",
            timeout=5_000)
        assert page.get_attribute(f"{row(alert_id)} .st", "title") == acker
        page.click("#lang")
        page.wait_for_function(
            f"document.querySelector(\"{row(alert_id)} .info\")?.textContent"
            " === 'Acknowledged by 张三'", timeout=2_000)
        # The name is kept for the session and offered again with 更换密钥, where the next
        # shift at the same key gives theirs without typing the key (empty: the key stays).
        page.click("#change-key")
        page.wait_for_selector("#key-dialog[open]")
        assert page.input_value("#operator-input") == "张三"
        assert "leave empty" in page.get_attribute("#key-input", "placeholder")
        page.fill("#operator-input", "李四")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-dialog", state="hidden")
        assert page.evaluate("[sessionStorage.getItem('cityagent.key'),"
                             " sessionStorage.getItem('cityagent.operator')]") == [
            OPERATOR_KEY, "李四"]
        page.click(f"{row(alert_id)} button[data-act='more']")
        page.click(f"{row(alert_id)} button[data-act='resolve']")
        page.wait_for_selector(f"{row(alert_id)}[data-status='resolved']", timeout=30_000)
        resolver = alert_now(stack, alert_id)["alert"]["resolved_by"]
        assert resolver == "李四@" + acker.split("@", 1)[1], resolver
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_a_command_that_hangs_times_out_in_the_row_and_a_retry_is_the_same_request(
        chromium: Any, stack: Pipeline) -> None:
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        page.evaluate(INGEST_JS, [{"id": f"hang-{i}", "sev": "red", "city": "370100",
                                   "at": now_ms() - i} for i in range(2)])
        wait_rows(board, 2)
        keys: list[tuple[str, str | None]] = []

        def hang(route: Any) -> None:  # the API never answers (the route is left pending)
            keys.append((route.request.url.rsplit("/", 1)[-1],
                         route.request.headers.get("idempotency-key")))

        page.route("**/v1/alerts/*/ack", hang)
        page.route("**/v1/alerts/*/resolve", hang)
        page.clock.install()  # the page's 15 s is jumped over, not sat through
        page.click(f"{row('hang-0')} button.ack")
        page.click(f"{row('hang-1')} button[data-act='more']")
        page.click(f"{row('hang-1')} button[data-act='resolve']")
        page.wait_for_function(f"document.querySelector(\"{row('hang-0')}\").textContent"
                               ".includes('提交中')")
        page.wait_for_timeout(500)
        assert not page.locator(f"{row('hang-0')} .err").is_visible()  # not before its 15 s
        # Both calls are in the route's hands before the page gives up on them (a call the
        # route had not seen yet would be given up on unrecorded).
        wait_until(page, lambda: len(keys) == 2, "the ack and the resolve reaching the route")
        page.clock.fast_forward(15_000)
        for alert_id, verb in (("hang-0", "确认"), ("hang-1", "解决")):
            err = page.locator(f"{row(alert_id)} .err")
            err.wait_for(state="visible", timeout=5_000)
            assert err.get_attribute("role") == "alert"
            assert err.text_content().startswith(f"{verb}失败：服务无响应"), err.text_content()
        assert page.text_content(f"{row('hang-0')} button.ack") == "重试"
        assert page.text_content(f"{row('hang-1')} button[data-act='resolve']") == "重试"
        page.click("#lang")
        page.wait_for_function(f"document.querySelector(\"{row('hang-0')} .err b\").textContent"
                               ".startsWith('Ack failed: the service did not answer')",
                               timeout=2_000)
        page.click("#lang")
        # 重试 sends the same request again, with the same Idempotency-Key: the API applies a
        # command it took before the page gave up once. (The real API does not know the alert.)
        page.unroute("**/v1/alerts/*/ack")
        page.route("**/v1/alerts/*/ack", lambda route: (
            keys.append(("retry", route.request.headers.get("idempotency-key"))),
            route.continue_()))
        page.click(f"{row('hang-0')} button.ack")
        page.wait_for_function(f"document.querySelector(\"{row('hang-0')} .err\")?.textContent"
                               ".includes('告警不存在')", timeout=10_000)
        first = dict(keys)
        assert first["ack"] and first["resolve"] and first["ack"] != first["resolve"]
        assert keys[-1] == ("retry", first["ack"])
    finally:
        context.close()


def test_an_accepted_command_whose_event_does_not_come_says_so_and_retries_the_same_request(
        chromium: Any, stack: Pipeline) -> None:
    """The API took the ack (202) but the alerting worker never applies it (busy, or down):
    after 30 s the row says so instead of 提交中 forever, and 重试 sends the same request with
    the same Idempotency-Key. The event, when it comes at last, settles the row."""
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        spec = {"id": "late-1", "sev": "red", "city": "370100", "at": now_ms()}
        page.evaluate(INGEST_JS, [spec])
        wait_rows(board, 1)
        keys: list[str | None] = []

        def accepted(route: Any) -> None:  # a 202, and no event ever comes on the stream
            keys.append(route.request.headers.get("idempotency-key"))
            route.fulfill(status=202, content_type="application/json", body=json.dumps({
                "command_id": f"kops:{keys[-1]}:0123456789ab", "alert_id": "late-1",
                "action": "ack", "status": "queued"}))

        page.route("**/v1/alerts/*/ack", accepted)
        # The page's clock, faked from here (it keeps running): its 30 s wait is jumped over,
        # not sat through (it was a third of this file's time).
        page.clock.install()
        page.click(f"{row('late-1')} button.ack")
        page.wait_for_function(f"document.querySelector(\"{row('late-1')} button.ack\")"
                               ".textContent === '提交中'")
        err = page.locator(f"{row('late-1')} .err")
        page.wait_for_timeout(500)
        assert not err.is_visible()  # not before its 30 s
        page.clock.fast_forward(30_000)
        err.wait_for(state="visible", timeout=5_000)
        assert err.get_attribute("role") == "alert"
        assert err.text_content() == ("确认已受理，尚未生效：30 秒内未见处理结果，"
                                      "告警服务可能繁忙或已停止"), err.text_content()
        assert page.text_content(f"{row('late-1')} button.ack") == "重试"
        page.click("#lang")
        page.wait_for_function(
            f"document.querySelector(\"{row('late-1')} .err b\").textContent === 'Ack accepted "
            "but not applied yet: no result within 30 s; the alerting service may be busy or down'",
            timeout=2_000)
        assert page.text_content(f"{row('late-1')} button.ack") == "Retry"
        page.click("#lang")
        # 重试: the same request, with the same Idempotency-Key (the API would replay its 202).
        page.click(f"{row('late-1')} button.ack")
        page.wait_for_function(f"document.querySelector(\"{row('late-1')} button.ack\")"
                               ".textContent === '提交中'", timeout=2_000)
        # The route sees the request a moment after the click.
        wait_until(page, lambda: len(keys) >= 2, "the retry reaching the route")
        assert len(keys) == 2 and keys[0] and keys[1] == keys[0]
        assert page.locator(f"{row('late-1')} .err").count() == 0
        # The worker catches up: the ack's event settles the row.
        page.evaluate(INGEST_JS, [{**spec, "status": "acknowledged", "type": "acknowledged",
                                   "seq": 2, "at": now_ms()}])
        page.wait_for_selector(f"{row('late-1')}[data-status='acknowledged']", timeout=2_000)
        assert page.text_content(f"{row('late-1')} .st") == "已确认"
        assert page.locator(f"{row('late-1')} .err").count() == 0
        assert "提交中" not in page.text_content(row("late-1"))
        assert board.errors == [] and board.outside == []
    finally:
        context.close()


def test_a_key_that_may_not_act_is_told_so_in_the_row(chromium: Any, stack: Pipeline) -> None:
    """A key that may not act, in case the page offers its buttons anyway (a viewer key with an
    API without /v1/me): the page runs on an operator key and its commands go to the real API
    with an integrator's key, which answers 403 (as it would a viewer's)."""
    context, board = open_dashboard(chromium, stack.url)
    try:
        page = board.page
        page.evaluate(INGEST_JS, [{"id": "deny-1", "sev": "orange", "city": "370100",
                                   "at": now_ms()}])
        wait_rows(board, 1)
        page.route("**/v1/alerts/deny-1/*", lambda route: route.continue_(headers={
            **route.request.headers, "authorization": f"Bearer {INTEGRATOR_KEY}"}))
        cases = [("ack", "确认失败：此密钥无权确认该告警", "Ack failed: this key may not acknowledge it"),
                 ("resolve", "解决失败：此密钥无权解决该告警", "Resolve failed: this key may not resolve it"),
                 ("assign", "指派失败：此密钥无权指派该告警", "Assign failed: this key may not assign it"),
                 ("comment", "备注失败：此密钥无权为该告警添加备注",
                  "Comment failed: this key may not comment on it")]
        for action, zh, en in cases:
            if action == "ack":
                page.click(f"{row('deny-1')} button.ack")
            else:
                if page.get_attribute(f"{row('deny-1')} button[data-act='more']",
                                      "aria-expanded") == "false":
                    page.click(f"{row('deny-1')} button[data-act='more']")
                page.click(f"{row('deny-1')} button[data-act='{action}']")
                if action in ("assign", "comment"):
                    page.fill(f"{row('deny-1')} form.edit input", "测试")
                    page.press(f"{row('deny-1')} form.edit input", "Enter")
            err = f"{row('deny-1')} .err"
            page.wait_for_function(f"document.querySelector(\"{err} b\")?.textContent === '{zh}'",
                                   timeout=10_000)
            assert page.get_attribute(err, "role") == "alert"
            assert "needs an operator or admin key" in page.text_content(f"{err} small")
            page.click("#lang")
            page.wait_for_function(f"document.querySelector(\"{err} b\")?.textContent === '{en}'",
                                   timeout=2_000)
            page.click("#lang")
        assert all("403" in e for e in board.errors), board.errors  # the console's failed calls
    finally:
        context.close()


# Alerts with an assignee and comments, for the layout check.
DECORATE_JS = """
() => {
  const app = window.__cityagent;
  const events = app.alerts().filter((a) => a.alert_id.startsWith('fit-')).map((a, i) => {
    const alert = {...a, seq: a.seq + 1, assigned_to: i % 2 ? null : '历下区排水抢险一队（夜班）',
                   comments: i % 3};
    return {event_id: `${a.alert_id}-c`, type: 'commented', alert_id: a.alert_id, actor: 'op',
            at_ms: a._at, detail: i % 3 ? '泵车已到达现场，正在抽排积水，预计一小时内恢复通行' : '',
            alert};
  });
  app.ingest(events);
}
"""


@pytest.mark.parametrize("size", [(1920, 1080), (1366, 768), (390, 844)],
                         ids=["wall", "laptop", "phone"])
def test_the_feed_tools_fit_the_screen(chromium: Any, stack: Pipeline,
                                       size: tuple[int, int]) -> None:
    width, height = size
    context, board = open_dashboard(chromium, stack.url, width, height)
    try:
        page = board.page
        t0 = now_ms()
        page.evaluate(INGEST_JS, [{"id": f"fit-{i}", "sev": ("red", "orange", "yellow", "blue")[i % 4],
                                   "city": "370100", "at": t0 - i * 60_000,
                                   "status": "acknowledged" if i % 5 == 4 else "open"}
                                  for i in range(12)])
        wait_rows(board, 12)
        page.evaluate(DECORATE_JS)
        page.wait_for_function("document.querySelectorAll('#feed .info').length >= 8", timeout=5_000)
        first = board.feed_ids()[0]
        page.click(f"{row(first)} button[data-act='more']")
        page.click(f"{row(first)} button[data-act='assign']")
        field = f"{row(first)} form.edit input"
        page.wait_for_selector(field)
        page.click(f"{row(first)} form.edit .chip")  # fills in the department's name
        assert page.input_value(field) == "水务局"
        page.fill(field, "历下区排水抢险一队")
        # The open form follows the language, and keeps what was typed.
        page.click("#lang")
        page.wait_for_function(f"document.querySelector(\"{row(first)} form.edit label span\")"
                               ".textContent === 'Assign to'", timeout=2_000)
        assert page.text_content(f"{row(first)} form.edit .chip") == "Water Affairs"
        assert page.input_value(field) == "历下区排水抢险一队"
        page.click("#lang")
        page.wait_for_function(f"document.querySelector(\"{row(first)} form.edit label span\")"
                               ".textContent === '指派给'", timeout=2_000)
        # Every control of the open row lies inside the feed and inside its row, none overlaps.
        boxes = page.eval_on_selector_all(
            f"{row(first)} button, {row(first)} input, {row(first)} .info, {row(first)} .ttl",
            "els => els.map(e => { const r = e.getBoundingClientRect();"
            " return [e.dataset.act || e.className || e.tagName, r.left, r.top, r.right, r.bottom]; })")
        li = page.locator(row(first)).bounding_box()
        for name, left, top, right, bottom in boxes:
            assert li["x"] - 0.5 <= left and right <= li["x"] + li["width"] + 0.5, (name, li, left, right)
            assert li["y"] - 0.5 <= top and bottom <= li["y"] + li["height"] + 0.5, (name, li, top, bottom)
        controls = [b for b in boxes if b[0] not in ("info", "ttl")]
        for i, a in enumerate(controls):
            for b in controls[i + 1:]:
                apart = a[3] <= b[1] + 0.5 or b[3] <= a[1] + 0.5 or a[4] <= b[2] + 0.5 or b[4] <= a[2] + 0.5
                assert apart, (a, b)
        assert page.evaluate("document.documentElement.scrollWidth") == width
        if width > 760:  # the wall layout does not scroll
            assert page.evaluate("document.documentElement.scrollHeight") == height
        else:
            page.locator(row(first)).scroll_into_view_if_needed()
        page.wait_for_function(  # the rows' flash (1.6 s) ends, for the picture
            "document.querySelector('#feed').getAnimations({subtree: true}).length === 0",
            timeout=5_000)
        path = SHOTS / f"cityagent-feed-{width}x{height}.png"
        if width > 760:
            page.screenshot(path=str(path))
        else:
            page.locator(".feed-panel").screenshot(path=str(path))
        assert path.stat().st_size > 10_000
        assert board.errors == [] and board.outside == []
    finally:
        context.close()
