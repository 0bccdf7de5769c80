"""The alert routes without Kafka: filters, pages, detail, keys and scope, action errors, SSE.

The app is made with ``create_app`` and used without its lifespan, so nothing connects to
Kafka: the alert book is filled directly, and the command publisher is not connected (so a
valid action is a 503, as when Kafka is down). What needs the broker (the feed, a command on
the commands topic, the stream over HTTP) is in tests/integration/test_alerts_api.py.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

import api.deps
from api.alert_book import AlertBook, AlertQuery
from api.main import create_app
from api.read_model import AlertHub
from api.routes.alert_stream import HEARTBEAT, alert_events
from api.schemas import AlertDetail, AlertEventPublic, AlertsPublic
from api.topic_feed import RecreatedTopicWatch
from cityagent.settings import Settings
from tests.api.test_alert_book import MIN, QINGDAO, T0, alert_event

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

KEYS = "admin:adm-key,operator:op-key,operator:jn-key:370100,integrator:int-key"


def auth(key: str = "op-key", **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **headers}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app(Settings(api_keys=KEYS, kafka="127.0.0.1:9"))  # never connected
    book: AlertBook = app.state.alert_book
    book.apply(alert_event("jn-1", seq=1, last_seen_ms=T0 + MIN, severity="red",
                           zone_ids=["jn-flood-old-city"], zone_kinds=["flood_risk"]))
    book.apply(alert_event("jn-1", seq=2, type="acknowledged", status="acknowledged",
                           actor="op", acknowledged_by="op", acknowledged_at_ms=T0 + 2 * MIN,
                           last_seen_ms=T0 + MIN, severity="red", zone_ids=["jn-flood-old-city"]))
    book.apply(alert_event("jn-2", last_seen_ms=T0 + 2 * MIN, status="resolved",
                           resolved_by="system", resolved_at_ms=T0 + 3 * MIN))
    book.apply(alert_event("jn-3", last_seen_ms=T0 + 3 * MIN, severity="blue", kind="traffic"))
    book.apply(alert_event("qd-1", last_seen_ms=T0 + 4 * MIN, where=QINGDAO))
    return TestClient(app)


def alert_ids(client: TestClient, key: str = "op-key", **params: Any) -> list[str]:
    answer = client.get("/v1/alerts", params=params, headers=auth(key))
    assert answer.status_code == 200, answer.text
    AlertsPublic.model_validate(answer.json())
    return [a["alert_id"] for a in answer.json()["alerts"]]


# -- reading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("params, expected", [
    ({}, ["qd-1", "jn-3", "jn-2", "jn-1"]),
    ({"status": "open,acknowledged"}, ["qd-1", "jn-3", "jn-1"]),
    ({"status": ["open", "resolved"]}, ["qd-1", "jn-3", "jn-2"]),
    ({"severity": "red"}, ["jn-1"]),
    ({"kind": "traffic"}, ["jn-3"]),
    ({"city": "济南"}, ["jn-3", "jn-2", "jn-1"]),
    ({"city": "Qingdao"}, ["qd-1"]),
    ({"district": "370202"}, ["qd-1"]),
    ({"zone": "jn-flood-old-city"}, ["jn-1"]),
    ({"department": "water", "city": "370100", "status": "open"}, ["jn-3"]),
    ({"bbox": "120,36,121,37"}, ["qd-1"]),
    ({"since": "2026-11-22T08:33:00+08:00"}, ["qd-1", "jn-3"]),
    ({"since": str(T0 + 2 * MIN), "until": str(T0 + 4 * MIN)}, ["jn-3", "jn-2"]),
    ({"until": str((T0 + 2 * MIN) // 1000)}, ["jn-1"]),  # epoch seconds work too
])
def test_list_filters(client: TestClient, params: dict[str, Any], expected: list[str]) -> None:
    assert alert_ids(client, **params) == expected


def test_list_shape_times_and_pages(client: TestClient) -> None:
    first = client.get("/v1/alerts", params={"limit": 3}, headers=auth()).json()
    assert set(first) == {"count", "alerts", "next_cursor"} and first["count"] == 3
    alert = first["alerts"][0]
    assert (alert["city_code"], alert["district_name"]) == ("370200", "市南区")
    assert alert["last_seen_at"] == "2026-11-22T00:34:00.000Z"
    rest = client.get("/v1/alerts", params={"limit": 3, "cursor": first["next_cursor"]},
                      headers=auth()).json()
    assert [a["alert_id"] for a in rest["alerts"]] == ["jn-1"] and rest["next_cursor"] is None


@pytest.mark.parametrize("params, words", [
    ({"status": "closed"}, "status must be among open, acknowledged, resolved; got 'closed'"),
    ({"severity": "purple"}, "severity must be among blue, yellow, orange, red"),
    ({"city": "Atlantis"}, "unknown city 'Atlantis'"),
    ({"district": "379999"}, "unknown district '379999'"),
    ({"bbox": "117,36,116,37"}, "bbox must be minLon,minLat,maxLon,maxLat"),
    ({"bbox": "1,2,3"}, "bbox must be"),
    ({"since": "yesterday"}, "since must be an RFC 3339 time"),
    ({"since": "2026-11-22T08:00:00 08:00"}, "+ written %2B in a URL"),  # an unencoded +
    ({"until": "0"}, "until must lie between 2000 and 2100; got '0'"),
    ({"kind": "foo"}, "kind must be among traffic, water_level, pipe_pressure; got 'foo'"),
    ({"department": "No Such!"}, "department must be a department code"),
    ({"cursor": "bogus"}, "not one this API gave out"),
    ({"limit": 0}, "greater than or equal to 1"),
])
def test_bad_filters_are_422_and_say_which(client: TestClient, params: dict[str, Any],
                                            words: str) -> None:
    answer = client.get("/v1/alerts", params=params, headers=auth())
    assert answer.status_code == 422
    assert words in answer.text


def test_one_alert_with_its_history(client: TestClient) -> None:
    answer = client.get("/v1/alerts/jn-1", headers=auth())
    assert answer.status_code == 200
    doc = AlertDetail.model_validate(answer.json())
    assert doc.alert.status == "acknowledged" and doc.history_complete
    assert [(h.type, h.actor) for h in doc.history] == [("opened", "system"),
                                                          ("acknowledged", "op")]
    assert client.get("/v1/alerts/nope", headers=auth()).status_code == 404


def test_an_alert_read_again_with_its_etag_is_304_until_it_changes() -> None:
    """An integrator following one alert got its whole history (up to 400 events) on every
    poll: the detail had no ETag, and If-None-Match was ignored."""
    app = create_app(Settings(api_keys=KEYS, kafka="127.0.0.1:9"))  # never connected
    book: AlertBook = app.state.alert_book
    book.apply(alert_event("jn-1", seq=1, last_seen_ms=T0 + MIN))
    book.apply(alert_event("qd-1", last_seen_ms=T0 + MIN, where=QINGDAO))
    client = TestClient(app)
    first = client.get("/v1/alerts/jn-1", headers=auth())
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    for sent in (tag, f"W/{tag}", f'"0", {tag}', "*"):
        again = client.get("/v1/alerts/jn-1", headers=auth(**{"If-None-Match": sent}))
        assert again.status_code == 304 and again.content == b"", sent
        assert again.headers["etag"] == tag
    book.apply(alert_event("jn-1", seq=2, type="acknowledged", status="acknowledged",
                           actor="op", acknowledged_by="op", acknowledged_at_ms=T0 + 2 * MIN,
                           last_seen_ms=T0 + MIN))
    changed = client.get("/v1/alerts/jn-1", headers=auth(**{"If-None-Match": tag}))
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json()["alert"]["status"] == "acknowledged"
    # Another city's alert is a 404 to a scoped key whatever the header; a bad one is a 400.
    assert client.get("/v1/alerts/qd-1", headers=auth(
        "jn-key", **{"If-None-Match": "*"})).status_code == 404
    assert client.get("/v1/alerts/jn-1", headers=auth(
        **{"If-None-Match": "jn-1"})).status_code == 400


def test_a_city_wide_flood_is_answered_with_every_district_and_found_by_each() -> None:
    """The engine's flood over 槐荫区, 历下区 and 天桥区 (packaged settings: one alert for the
    city), as an API started two days later reads it: only the restatement is in its
    lookback. Before, it carried 槐荫区 alone and ``district=370102`` did not find it."""
    from cityagent.incidents import ScopeState
    from tests.cityagent.test_alert_places import gauge, packaged

    engine, state = packaged(), ScopeState()
    for i, district in enumerate((370104, 370102, 370105)):
        engine.on_anomaly(state, gauge(i, district), None, T0 + i * MIN)
    restated = [e for e in engine.tick(state, T0 + 2 * 1440 * MIN) if e.type == "restated"]
    app = create_app(Settings(api_keys=KEYS, kafka="127.0.0.1:9"))  # never connected
    app.state.alert_book.apply(restated[0].to_dict())
    client = TestClient(app)
    alert_id = restated[0].alert_id
    for district in ("370104", "370102", "370105"):
        assert alert_ids(client, district=district) == [alert_id]
    assert alert_ids(client, district="370103") == []
    doc = AlertDetail.model_validate(client.get(f"/v1/alerts/{alert_id}", headers=auth()).json())
    assert doc.alert.district_codes == ["370104", "370102", "370105"]
    assert (doc.alert.district_code, doc.alert.district_name) == ("370104", "槐荫区")
    assert doc.alert.title_zh.startswith("济南市槐荫区、历下区、天桥区 橙色区域性内涝/洪水")


def test_alert_routes_wait_until_the_api_has_read_the_alerts_topic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after a start the book holds part of the topic: a list lacked alerts and an alert
    not read yet was a 404 (also to an ack). They wait for the read now, then 503."""
    import threading
    from types import SimpleNamespace

    import api.deps

    monkeypatch.setattr(api.deps, "FEED_WAIT_S", 0.1)
    app = create_app(Settings(api_keys=KEYS, kafka="127.0.0.1:9"))  # never connected
    app.state.alert_book.apply(alert_event("jn-1", last_seen_ms=T0 + MIN))
    feed = app.state.alert_feed = SimpleNamespace(caught_up=False)
    client = TestClient(app)
    for method, path in (("GET", "/v1/alerts"), ("GET", "/v1/alerts/jn-1"),
                         ("GET", "/v1/alerts/jn-9"), ("POST", "/v1/alerts/jn-9/ack")):
        answer = client.request(method, path, headers=auth())
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["retry-after"] == "5"
        assert "has not yet read the alerts topic" in answer.json()["detail"]
    assert client.get("/v1/alerts").status_code == 401  # the key first, not a wait
    assert client.get("/v1/alerts", params={"status": "nope"}, headers=auth()).status_code == 422
    # A read that ends within the wait is answered as usual.
    monkeypatch.setattr(api.deps, "FEED_WAIT_S", 10.0)
    threading.Timer(0.2, lambda: setattr(feed, "caught_up", True)).start()
    assert alert_ids(client) == ["jn-1"]
    assert client.get("/v1/alerts/jn-9", headers=auth()).status_code == 404


def test_keys_roles_and_scope(client: TestClient) -> None:
    assert client.get("/v1/alerts").status_code == 401
    assert client.get("/v1/alerts/stream").status_code == 401
    assert client.get("/v1/alerts", headers=auth("int-key")).status_code == 403
    assert client.post("/v1/alerts/jn-3/ack", headers=auth("int-key")).status_code == 403
    assert alert_ids(client, "jn-key") == ["jn-3", "jn-2", "jn-1"]
    assert alert_ids(client, "jn-key", city="青岛") == []
    hidden = client.get("/v1/alerts/qd-1", headers=auth("jn-key"))
    assert hidden.status_code == 404 and "in the cities of this key" in hidden.text
    assert client.post("/v1/alerts/qd-1/ack", headers=auth("jn-key")).status_code == 404
    assert alert_ids(client, "adm-key")[0] == "qd-1"


# -- acting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, body, headers, status, words", [
    ("/v1/alerts/nope/ack", None, {}, 404, "no alert 'nope'"),
    ("/v1/alerts/jn-2/resolve", None, {}, 409, "already resolved by system at 2026-11-22T00:33"),
    ("/v1/alerts/jn-2/assign", {"assignee": "crew 1"}, {}, 409, "only comments are taken"),
    ("/v1/alerts/jn-1/ack", {"note": "again"}, {}, 409, "already acknowledged by op"),
    ("/v1/alerts/jn-3/assign", {}, {}, 422, "assignee"),
    ("/v1/alerts/jn-3/assign", {"assignee": ""}, {}, 422, "at least 1 character"),
    ("/v1/alerts/jn-3/comment", {"text": ""}, {}, 422, "at least 1 character"),
    ("/v1/alerts/jn-3/ack", {"nota": "typo"}, {}, 422, "Extra inputs are not permitted"),
    ("/v1/alerts/jn-3/ack", {"note": "x" * 2001}, {}, 422, "at most 2000 characters"),
    ("/v1/alerts/jn-3/ack", None, {"idempotency-key": "a b"}, 400, "Idempotency-Key must be"),
    ("/v1/alerts/jn-3/ack", None, {"idempotency-key": ""}, 400, "Idempotency-Key must be"),
    ("/v1/alerts/jn-3/ack", None, {"idempotency-key": "  "}, 400, "Idempotency-Key must be"),
    ("/v1/alerts/jn-3/ack", None, {"x-operator": "%0A"}, 400, "X-Operator must be"),
    ("/v1/alerts/jn-3/ack", None, {"x-operator": "%E5%BC"}, 400, "X-Operator must be"),
])
def test_action_errors(client: TestClient, path: str, body: Any, headers: dict[str, str],
                       status: int, words: str) -> None:
    answer = client.post(path, json=body, headers=auth(**headers))
    assert answer.status_code == status, answer.text
    assert words in answer.text


@pytest.mark.parametrize("path, body", [
    ("/v1/alerts/jn-3/ack", None), ("/v1/alerts/jn-3/resolve", {"note": "dry again"}),
    ("/v1/alerts/jn-3/assign", {"assignee": "crew 1"}), ("/v1/alerts/jn-2/comment", {"text": "ok"}),
])
def test_valid_actions_need_kafka_503_when_it_is_not_there(client: TestClient, path: str,
                                                           body: Any) -> None:
    answer = client.post(path, json=body, headers=auth())
    assert answer.status_code == 503 and answer.headers["retry-after"].isdigit()
    assert "not connected to Kafka" in answer.json()["detail"]


def test_a_long_idempotency_key_of_a_long_named_key_is_taken(tmp_path) -> None:
    """A key named with 64 characters (keys file) and an Idempotency-Key of 150 (1-255 are
    allowed) made a command id over Command's 200 characters: a 422 'command_id must be ...
    at most 200 characters' for a valid request. The key is now hashed when the id would
    pass 200; a short one is kept as it is."""
    from api.auth import Principal
    from api.routes.alerts import _command_id

    name = "jinan-water-affairs-bureau-duty-desk-lixia-district-night-shift1"
    assert len(name) == 64
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[[keys]]\nrole = "operator"\nkey = "long-op-key"\nname = "{name}"\n')
    app = create_app(Settings(api_keys="admin:adm-key", api_keys_path=keys, kafka="127.0.0.1:9"))
    app.state.alert_book.apply(alert_event("jn-3", last_seen_ms=T0 + 3 * MIN))
    for length in (100, 135, 150, 160, 161, 255):
        answer = TestClient(app).post("/v1/alerts/jn-3/ack", headers=auth(
            "long-op-key", **{"idempotency-key": "k" * length}))
        assert answer.status_code == 503, (length, answer.text)  # it got as far as Kafka
        assert "not connected to Kafka" in answer.json()["detail"]
    fingerprint = bytes(32)
    for key_id in ("k1a2b3c4d", name):
        for length in (1, 100, 160, 161, 255):
            command_id = _command_id(Principal("operator", key_id), "k" * length, fingerprint)
            assert len(command_id) <= 200, (key_id, length)
    assert _command_id(Principal("operator", name), "k" * 100, fingerprint) == \
        f"{name}:{'k' * 100}:{'0' * 12}"


def test_openapi_has_an_example_for_every_alert_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = {p: v for p, v in doc["paths"].items() if p.startswith("/v1/alerts")}
    assert set(paths) == {"/v1/alerts", "/v1/alerts/stream", "/v1/alerts/{alert_id}",
                          *(f"/v1/alerts/{{alert_id}}/{a}" for a in
                            ("ack", "resolve", "assign", "comment"))}
    schemas = doc["components"]["schemas"]
    for path, methods in paths.items():
        for op in methods.values():
            ok = op["responses"]["200" if "202" not in op["responses"] else "202"]
            content = ok["content"]
            if "text/event-stream" in content:
                assert "event: alert" in content["text/event-stream"]["example"], path
                continue
            ref = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert schemas[ref].get("examples"), (path, ref)
            assert op["security"] == [{"APIKey": []}], path
            if "requestBody" in op:
                body = op["requestBody"]["content"]["application/json"]["schema"]
                refs = [s["$ref"] for s in body.get("anyOf", [body]) if "$ref" in s]
                assert all(schemas[r.rsplit("/", 1)[1]].get("examples") for r in refs), path


# -- the stream, without HTTP --------------------------------------------------------------------


def frames(chunks: list[bytes]) -> list[dict[str, str]]:
    """SSE chunks as dicts of their fields (comments as ``comment``)."""
    out = []
    for block in b"".join(chunks).decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ") if not line.startswith(":") else (
                "comment", "", line[2:])
            fields[name] = value
        out.append(fields)
    return out


def test_stream_replays_after_an_id_then_goes_live_with_heartbeats() -> None:
    async def scenario() -> list[bytes]:
        book, hub = AlertBook(), AlertHub()
        for n in range(3):
            book.apply(alert_event(f"i{n}", last_seen_ms=T0 + n))
        stream = alert_events(book, hub, AlertQuery(), {0: 1}, heartbeat_s=0.05)
        chunks = [await anext(stream) for _ in range(3)]  # retry+id, then i1, i2 replayed
        entry = book.apply(alert_event("i3", severity="red"))
        assert entry is not None
        hub.publish(entry)
        chunks += [await anext(stream), await anext(stream)]  # i3, then a heartbeat
        assert len(hub) == 1
        await stream.aclose()
        assert len(hub) == 0  # a closed client is forgotten
        return chunks

    got = frames(asyncio.run(scenario()))
    assert got[0] == {"retry": "3000", "id": "1"}
    assert [f.get("event") for f in got] == [None, "alert", "alert", "alert", None]
    assert [f.get("id") for f in got[1:4]] == ["2", "3", "4"]
    events = [AlertEventPublic.model_validate_json(f["data"]) for f in got[1:4]]
    assert [e.alert_id for e in events] == ["i1", "i2", "i3"]
    assert got[4] == {"comment": HEARTBEAT.decode().strip()[2:]}


def test_stream_filters_and_says_reset_when_the_id_is_too_old() -> None:
    async def scenario() -> list[bytes]:
        book, hub = AlertBook(feed_size=2), AlertHub()
        for n in range(4):
            book.apply(alert_event(f"i{n}", severity="red" if n % 2 else "blue"))
        stream = alert_events(book, hub, AlertQuery(severities=frozenset({"red"})), {0: 0}, 60)
        return [await anext(stream) for _ in range(3)]

    got = frames(asyncio.run(scenario()))
    assert got[1]["event"] == "reset" and "re-read GET /v1/alerts" in got[1]["data"]
    assert orjson.loads(got[2]["data"])["alert_id"] == "i3"  # i2 is blue


def test_stream_says_reset_when_the_id_is_older_than_where_the_feed_began_reading() -> None:
    async def scenario(seen: dict[int, int]) -> list[bytes]:
        book, hub = AlertBook(), AlertHub()
        book.skip_to(0, 3)  # the lookback (7 days) began at offset 3
        book.apply(alert_event("i3"), partition=0, offset=3)
        stream = alert_events(book, hub, AlertQuery(), seen, 60)
        chunks = [await anext(stream) for _ in range(2)]
        await stream.aclose()
        return chunks

    before = frames(asyncio.run(scenario({0: 2})))
    assert before[1]["event"] == "reset" and "re-read GET /v1/alerts" in before[1]["data"]
    within = frames(asyncio.run(scenario({0: 3})))
    assert within[1]["event"] == "alert" and orjson.loads(within[1]["data"])["alert_id"] == "i3"


def test_a_resumed_stream_waits_until_the_feed_knows_where_it_began_then_503(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until then an old id could not be told from a good one (the app here never reads the
    topic, so the book never learns it)."""
    monkeypatch.setattr(api.deps, "FEED_WAIT_S", 0.05)
    # Streamed, so that a 200 (the stream, which never ends) fails rather than hangs.
    with client.stream("GET", "/v1/alerts/stream",
                       headers=auth(**{"last-event-id": "3-0"})) as answer:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert "cannot tell whether your Last-Event-ID is older" in answer.read().decode()


@pytest.mark.parametrize("params, named", [({"limit": 10}, "'limit'"),
                                           ({"cursor": "WzEsImEiXQ"}, "'cursor'"),
                                           ({"limit": 5, "cursor": "x", "city": "370100"},
                                            "'cursor' and 'limit'")])
def test_the_stream_refuses_the_lists_paging(client: TestClient, params: dict[str, Any],
                                             named: str) -> None:
    """limit and cursor were taken and ignored: 'limit=10' streamed every change, and a
    list's next_cursor did not resume anything."""
    # Streamed, so that a 200 (the stream, which never ends) fails rather than hangs.
    with client.stream("GET", "/v1/alerts/stream", params=params, headers=auth()) as answer:
        assert answer.status_code == 422
        detail = orjson.loads(answer.read())["detail"]
    # It reads as a sentence whichever was given ("limit page GET /v1/alerts; the stream
    # takes neither" for one of them).
    assert detail.startswith(f"the alert stream does not take {named}: 'limit' and 'cursor' "
                             "page GET /v1/alerts"), detail
    assert "Last-Event-ID" in detail


def test_stream_says_reset_when_the_id_is_past_the_end_then_goes_live() -> None:
    """The tester's id after the broker restarted empty: reset, a fresh id, then live events."""
    async def scenario() -> list[bytes]:
        book, hub = AlertBook(), AlertHub()
        for n in range(2):
            book.apply(alert_event(f"i{n}"), partition=0, offset=n)
        book.note_topic_ends({0: 2, 1: 0})
        stream = alert_events(book, hub, AlertQuery(), dict.fromkeys(range(8), 99_999_999), 60)
        chunks = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]  # retry+id, reset
        entry = book.apply(alert_event("i2"), partition=1, offset=0)
        assert entry is not None
        hub.publish(entry)
        chunks.append(await asyncio.wait_for(anext(stream), 5))
        await stream.aclose()
        return chunks

    got = frames(asyncio.run(scenario()))
    assert got[0] == {"retry": "3000", "id": "2"}  # where the feed is, not the id it was sent
    assert got[1]["event"] == "reset"
    assert "past the end" in got[1]["data"] and "re-read GET /v1/alerts" in got[1]["data"]
    assert got[2]["event"] == "alert" and got[2]["id"] == "2-1"
    assert orjson.loads(got[2]["data"])["alert_id"] == "i2"


def test_heartbeats_go_on_while_the_events_coming_in_are_ones_the_client_had() -> None:
    """A replica catching up to a client's id: a busy queue of skipped events is no excuse."""
    async def scenario() -> bytes:
        book, hub = AlertBook(), AlertHub()
        book.note_topic_ends({0: 100})  # the client had 100 events; this book has read one
        old = book.apply(alert_event("i0"), partition=0, offset=0)
        assert old is not None
        stream = alert_events(book, hub, AlertQuery(), {0: 100}, heartbeat_s=0.05)
        await anext(stream)  # retry+id

        async def busy() -> None:
            while True:
                hub.publish(old)  # an event the client had: skipped
                await asyncio.sleep(0.005)

        feeding = asyncio.create_task(busy())
        try:
            return await asyncio.wait_for(anext(stream), 2)
        finally:
            feeding.cancel()
            await stream.aclose()

    assert asyncio.run(scenario()) == HEARTBEAT


def test_a_slow_client_is_cut_off_and_the_others_go_on() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        book, hub = AlertBook(), AlertHub(queue_size=2)
        slow = alert_events(book, hub, AlertQuery(), None, 60)
        fast = alert_events(book, hub, AlertQuery(), None, 60)
        slow_chunks, fast_chunks = [await anext(slow)], [await anext(fast)]
        for n in range(5):
            entry = book.apply(alert_event(f"i{n}"))
            assert entry is not None
            hub.publish(entry)  # never waits, whoever is slow
            fast_chunks.append(await anext(fast))
        slow_chunks += [chunk async for chunk in slow]  # overflow, then the end
        await fast.aclose()
        return slow_chunks, fast_chunks

    slow, fast = (frames(c) for c in asyncio.run(scenario()))
    assert [orjson.loads(f["data"])["alert_id"] for f in fast[1:]] == [f"i{n}" for n in range(5)]
    assert [f.get("event") for f in slow] == [None, "overflow"]
    overflow = orjson.loads(slow[1]["data"])
    assert overflow["last_event_id"] == "0" and "reconnect with Last-Event-ID" in overflow["detail"]


def test_a_recreated_topic_drops_a_full_queue_of_old_changes_and_says_reset() -> None:
    """The feed found the topic recreated while a client's queue was full of the old topic's
    changes: the client gets none of them, then the reset with id 0, then the new changes."""
    async def scenario() -> list[bytes]:
        book, hub = AlertBook(), AlertHub(queue_size=2)
        stream = alert_events(book, hub, AlertQuery(), None, 60)
        chunks = [await anext(stream)]
        for n in range(2):
            entry = book.apply(alert_event(f"old{n}"), partition=0, offset=10 + n)
            assert entry is not None
            hub.publish(entry)  # queued, not yet sent: the client has not read them
        book.clear()
        hub.recreated()
        entry = book.apply(alert_event("new0"), partition=0, offset=0)
        assert entry is not None
        hub.publish(entry)
        chunks += [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
        await stream.aclose()
        return chunks

    got = frames(asyncio.run(scenario()))
    assert [f.get("event") for f in got] == [None, "reset", "alert"]
    assert got[1]["id"] == "0" and "recreated" in got[1]["data"]
    assert orjson.loads(got[2]["data"])["alert_id"] == "new0" and got[2]["id"] == "1"


def test_a_cleared_book_holds_nothing_and_reads_offsets_from_zero() -> None:
    book = AlertBook()
    for n in range(3):
        book.apply(alert_event(f"i{n}"), partition=n % 2, offset=n)
    book.note_topic_ends({0: 3, 1: 2})
    book.clear()
    assert len(book) == 0 and book.next_offsets == {} and book.suppressed() == []
    assert book.replay({0: 0}) == ([], False)
    assert book.past_end({0: 1})  # an id of the old topic names nothing now
    assert book.apply(alert_event("i0", seq=1), partition=0, offset=0) is not None  # not "older"


def test_a_topic_counts_as_recreated_once_a_partition_ended_below_the_feed_for_the_grace() -> None:
    """A partition's new leader on a Kafka cluster may lag for a moment: that is no new topic."""
    watch = RecreatedTopicWatch(grace_s=10)
    read = {0: 50, 1: 40}
    assert watch.check({0: 50, 1: 40}, read, now=0) == []  # at the end: nothing
    assert watch.check({0: 3, 1: 40}, read, now=1) == []  # below, since t=1
    assert watch.check({0: 3, 1: None}, read, now=10.9) == []  # not for 10 s yet
    assert watch.check({0: 50, 1: 40}, read, now=11) == []  # caught up: a lagging leader
    assert watch.check({0: 3, 1: 2}, read, now=12) == []  # below again: the clock restarts
    assert watch.check({0: 4, 1: 2}, read, now=22) == [0, 1]
    watch.reset()
    assert watch.check({0: 4, 1: 2}, read, now=23) == []
