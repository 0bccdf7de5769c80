"""The alert routes over real Kafka: alert events on the topic → list, detail, stream, actions.

Alert events are published straight onto the alerts topic of this test's own topics (as the
alerting worker would), the API runs as `cityagent up` runs it (uvicorn), and commands are
read back from the commands topic. Two API processes show that replicas agree, and that an
event id from one resumes the stream on the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from api.alert_book import AlertBook, AlertQuery
from api.read_model import AlertFeed, AlertHub
from api.schemas import AlertEventPublic
from cityagent.incident_alert import Command
from cityagent.settings import Settings
from control.topics import ensure_topics, pipeline_topics
from tests.api.test_alert_book import MIN, QINGDAO, T0, alert_event
from tests.helpers import ChildProcess, consume_records, free_port, start_api

pytestmark = [pytest.mark.integration]

KEYS = "admin:it-adm,operator:it-op,operator:it-jn:370100,integrator:it-int"


def auth(key: str = "it-op", **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **headers}


def key_id(key: str) -> str:
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:8]


class Alerts:
    """This module's topics, a producer onto the alerts topic and one running API."""

    def __init__(self, settings: Settings, api: ChildProcess) -> None:
        self.settings = settings
        self.api = api
        self.url = f"http://127.0.0.1:{settings.api_port}"
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")

    def publish(self, *events: dict[str, Any] | bytes) -> None:
        for event in events:
            if isinstance(event, bytes):
                self.producer.send(self.settings.alerts_topic, event, key=b"junk")
            else:
                self.producer.send(self.settings.alerts_topic, orjson.dumps(event),
                                   key=str(event.get("scope", "junk")).encode())
        self.producer.flush(10)

    def get(self, path: str, key: str = "it-op", url: str | None = None, **params: Any) -> Any:
        answer = httpx.get(f"{url or self.url}{path}", params=params, headers=auth(key), timeout=5)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_for(self, predicate: Callable[[list[dict]], bool], url: str | None = None,
                 timeout_s: float = 30.0) -> list[dict]:
        deadline, alerts = time.monotonic() + timeout_s, []
        while time.monotonic() < deadline:
            alerts = self.get("/v1/alerts", url=url)["alerts"]
            if predicate(alerts):
                return alerts
            time.sleep(0.2)
        raise AssertionError(f"the API did not show the alerts within {timeout_s} s: {alerts}")


@pytest.fixture(scope="module")
def alerts(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerts]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"al{tag}", app_id=f"al-{tag}",
                        partitions=4, api_port=free_port(), api_keys=KEYS)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    api = start_api(settings, tmp_path_factory.mktemp("alerts") / "api.log")
    world = Alerts(settings, api)
    try:
        world.publish(
            alert_event("jn-1", last_seen_ms=T0 + MIN, severity="red"),
            b"not json at all",  # skipped, logged; the feed goes on
            {"type": "opened", "alert": {"alert_id": "half"}},
            alert_event("jn-2", last_seen_ms=T0 + 2 * MIN, status="resolved",
                        resolved_by="system", resolved_at_ms=T0 + 3 * MIN),
            alert_event("qd-1", last_seen_ms=T0 + 3 * MIN, where=QINGDAO),
        )
        world.wait_for(lambda a: len(a) == 3)
        yield world
    finally:
        world.producer.close()
        api.stop()


def test_list_filter_detail_and_scope(alerts: Alerts) -> None:
    page = alerts.get("/v1/alerts", limit=2)
    assert [a["alert_id"] for a in page["alerts"]] == ["qd-1", "jn-2"] and page["next_cursor"]
    rest = alerts.get("/v1/alerts", limit=2, cursor=page["next_cursor"])
    assert [a["alert_id"] for a in rest["alerts"]] == ["jn-1"] and rest["next_cursor"] is None
    assert [a["alert_id"] for a in alerts.get("/v1/alerts", city="济南", status="open")["alerts"]] \
        == ["jn-1"]
    detail = alerts.get("/v1/alerts/jn-1")
    assert detail["alert"]["district_name"] == "历下区" and detail["history"][0]["type"] == "opened"
    assert [a["alert_id"] for a in alerts.get("/v1/alerts", key="it-jn")["alerts"]] == ["jn-2", "jn-1"]
    url = alerts.url
    assert httpx.get(f"{url}/v1/alerts/qd-1", headers=auth("it-jn")).status_code == 404
    assert httpx.get(f"{url}/v1/alerts").status_code == 401
    assert httpx.get(f"{url}/v1/alerts", headers=auth("it-int")).status_code == 403
    assert httpx.post(f"{url}/v1/alerts/jn-1/ack", headers=auth("it-int")).status_code == 403


def test_ack_puts_a_command_keyed_by_scope_on_the_scopes_topic(alerts: Alerts) -> None:
    idem = str(uuid.uuid4())
    answer = httpx.post(f"{alerts.url}/v1/alerts/jn-1/ack", json={"note": "crew on the way"},
                        headers=auth(**{"idempotency-key": idem,
                                        "x-operator": "%E5%BC%A0%E4%B8%89"}), timeout=15)
    assert answer.status_code == 202, answer.text
    command_id = answer.json()["command_id"]
    assert re.fullmatch(rf"{key_id('it-op')}:{idem}:[0-9a-f]{{12}}", command_id), command_id
    assert answer.json() == {"command_id": command_id, "alert_id": "jn-1", "action": "ack",
                             "status": "queued"}
    # A retry gets the first answer and publishes nothing; the key on another action is 422
    # (it was 202 with the ack's command id, and the worker dropped the resolve as a duplicate).
    again = httpx.post(f"{alerts.url}/v1/alerts/jn-1/ack", json={"note": "crew on the way"},
                       headers=auth(**{"idempotency-key": idem,
                                       "x-operator": "%E5%BC%A0%E4%B8%89"}), timeout=15)
    assert again.status_code == 202 and again.json() == answer.json()
    assert again.headers["idempotency-replayed"] == "true"
    other = httpx.post(f"{alerts.url}/v1/alerts/jn-1/resolve", headers=auth(**{"idempotency-key": idem}),
                       timeout=15)
    assert other.status_code == 422 and "different request" in other.text
    # Every command was acknowledged before its answer: a marker behind them, in the same
    # partition (same key), is read after all of them.
    # The scopes topic, where the scope's anomalies are: one log orders both (api/commands.py).
    alerts.producer.send(alerts.settings.scopes_topic, b"marker", key=b"district:370102")
    alerts.producer.flush(10)
    records = consume_records(alerts.settings.bootstrap, alerts.settings.scopes_topic,
                              lambda rs: any(r.value == b"marker" for r in rs), timeout_s=15)
    records = [r for r in records if r.value != b"marker"]
    assert len(records) == 1
    assert records[0].key == b"district:370102"
    command = Command.from_dict(orjson.loads(records[0].value)["command"])
    assert (command.command_id, command.alert_id, command.action) == (command_id, "jn-1", "ack")
    assert command.actor == f"张三@{key_id('it-op')}" and command.text == "crew on the way"
    assert abs(command.at_ms - time.time() * 1000) < 60_000
    resolved = httpx.post(f"{alerts.url}/v1/alerts/jn-2/resolve", headers=auth(), timeout=15)
    assert resolved.status_code == 409 and "already resolved" in resolved.text


def read_frames(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parse an SSE response into frames (dicts of fields; comments under ``comment``)."""
    frame: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            frame["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


def next_alert(frames: Iterator[dict[str, str]]) -> tuple[str, AlertEventPublic]:
    for frame in frames:
        if frame.get("event") == "alert":
            return frame["id"], AlertEventPublic.model_validate_json(frame["data"])
    raise AssertionError("the stream ended")


def test_stream_live_heartbeat_and_resume_on_either_replica(alerts: Alerts,
                                                            tmp_path: Path) -> None:
    url = f"{alerts.url}/v1/alerts/stream"
    params = {"city": "370100", "heartbeat_s": 1}
    with httpx.stream("GET", url, params=params, headers=auth(), timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = read_frames(response)
        assert next(frames)["retry"] == "3000"
        assert next(frames) == {"comment": "heartbeat"}  # idle: a heartbeat within a second
        alerts.publish(alert_event("qd-1", seq=2, type="updated", where=QINGDAO),  # filtered out
                       alert_event("jn-1", seq=2, type="escalated", severity="red",
                                   escalation_level="city", last_seen_ms=T0 + MIN))
        first_id, event = next_alert(frames)
    assert (event.alert_id, event.type) == ("jn-1", "escalated")
    assert event.alert is not None and event.alert.escalation_level == "city"

    # Two more changes while the client is away; it resumes after the one it had.
    alerts.publish(alert_event("jn-1", seq=3, type="assigned", assigned_to="crew 7",
                               severity="red", last_seen_ms=T0 + MIN),
                   alert_event("jn-3", last_seen_ms=T0 + 5 * MIN))
    alerts.wait_for(lambda a: any(x["alert_id"] == "jn-3" for x in a))
    other = dataclasses.replace(alerts.settings, api_port=free_port())
    second = start_api(other, tmp_path / "api2.log")
    try:
        other_url = f"http://127.0.0.1:{other.api_port}"
        alerts.wait_for(lambda a: any(x["alert_id"] == "jn-3" for x in a), url=other_url)
        assert alerts.get("/v1/alerts", url=other_url) == alerts.get("/v1/alerts")
        for base in (alerts.url, other_url):  # the same id means the same on both replicas
            with httpx.stream("GET", f"{base}/v1/alerts/stream", params=params,
                              headers=auth(**{"last-event-id": first_id}), timeout=10) as response:
                frames = read_frames(response)
                got = [next_alert(frames)[1], next_alert(frames)[1]]
            # (one scope, so one partition: in order)
            assert [(e.alert_id, e.type) for e in got] == [("jn-1", "assigned"),
                                                           ("jn-3", "opened")], base
    finally:
        second.stop()
    bad = httpx.get(url, params={"last_event_id": "x"}, headers=auth(), timeout=5)
    assert bad.status_code == 422 and "Last-Event-ID" in bad.text


def test_the_feed_catches_up_skips_junk_and_fans_out(alerts: Alerts) -> None:
    """In this process: the feed reads the same topic into a fresh book and says when it is done."""
    async def scenario() -> tuple[AlertBook, AlertFeed, list[str]]:
        book, hub = AlertBook(), AlertHub()
        feed = AlertFeed(alerts.settings.bootstrap, alerts.settings.alerts_topic, book, hub)
        feed.start()
        try:
            deadline = time.monotonic() + 20
            while not feed.caught_up and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert feed.caught_up
            live = hub.subscribe(lambda entry: True)
            await asyncio.to_thread(alerts.publish, alert_event("qd-9", where=QINGDAO))
            entry = await asyncio.wait_for(live.queue.get(), 15)
            return book, feed, [entry.event_id]
        finally:
            await feed.stop()

    book, feed, live = asyncio.run(scenario())
    assert feed.malformed == 2 and live == ["qd-9-1"]
    assert {"jn-1", "jn-2", "qd-1", "qd-9"} <= {a["alert_id"] for a in
                                               book.query(AlertQuery(), limit=100).alerts}


def test_an_id_past_the_end_gets_reset_then_live_events(alerts: Alerts) -> None:
    """The dashboard's old id after the embedded broker restarted empty (offsets from 0 again)."""
    stale = "-".join(["99999999"] * 8)  # more partitions than the topic's 4, each far past its end
    with httpx.stream("GET", f"{alerts.url}/v1/alerts/stream", params={"heartbeat_s": 1},
                      headers=auth(**{"last-event-id": stale}), timeout=10) as response:
        assert response.status_code == 200
        frames = read_frames(response)
        first = next(frames)
        assert first["retry"] == "3000" and first["id"] != stale
        assert len(first["id"].split("-")) <= 4 and all(
            int(n) < 1000 for n in first["id"].split("-"))
        reset = next(frames)
        assert reset.get("event") == "reset" and "re-read GET /v1/alerts" in reset["data"]
        alerts.publish(alert_event("jn-7", last_seen_ms=T0 + 7 * MIN))
        # Live from here on: jn-7 comes (after, perhaps, an event an earlier test of this
        # module published that this API had not read yet when the stream opened: qd-9 did,
        # once, on a loaded machine).
        seen = [next_alert(frames)[1]]
        while seen[-1].alert_id != "jn-7" and len(seen) < 5:
            seen.append(next_alert(frames)[1])
    assert (seen[-1].alert_id, seen[-1].type) == ("jn-7", "opened"), seen
