"""Ingest: body shapes, the fast validation path, limits, idempotency, and the route on Kafka.

The unit tests need nothing running. The route tests (marked integration) run the app in
this process with its lifespan, against the session's real broker: nothing is mocked.
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from api import ingest
from api.auth import Principal
from api.idempotency import IdempotencyCache, IdempotencyConflict, StoredResponse
from api.ingest import BadBody, check_items, decode_body, thingsboard_items
from api.main import create_app
from api.ratelimit import RateLimiter, TooLarge
from api.routes.readings import MAX_BODY_BYTES
from cityagent.batch import decode_batch
from cityagent.readings import _MAX_TS_MS, parse_reading
from cityagent.regions import default_regions
from cityagent.settings import Settings
from control.topics import ensure_topics, pipeline_topics
from tests.helpers import consume_records, consume_to_end

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

JINAN = (117.0197, 36.6614)  # 泉城广场, 历下区
QINGDAO = (120.3844, 36.0610)  # 五四广场, 市南区
NOW = 1_795_307_400  # 2026-11-22T00:30:00Z


def level(sensor: str, value: Any = 2.0, where: tuple[float, float] = JINAN,
          ts: Any = NOW) -> dict[str, Any]:
    return {"sensor_id": sensor, "kind": "water_level", "ts": ts, "lon": where[0],
            "lat": where[1], "level_m": value}


def traffic(sensor: str, **overrides: Any) -> dict[str, Any]:
    return {"sensor_id": sensor, "kind": "traffic", "ts": NOW, "lon": JINAN[0], "lat": JINAN[1],
            "speed_kmh": 40.0, "flow_vph": 900, "occupancy_pct": 12.5, **overrides}


# -- the fast path agrees with parse_reading ------------------------------------------------------

EDGE_ITEMS: list[Any] = [
    level("a"), level("a", 0), level("a", -100), level("a", 10_000), level("a", 10_000.001),
    level("a", float("nan")), level("a", float("inf")), level("a", True), level("a", "2.4"),
    level("a", None), level("a", 2**70),  # (orjson turns bigger integers into floats)
    level("a", ts=946_684_800), level("a", ts=946_684_799.9994), level("a", ts=946_684_799.9996),
    level("a", ts=4_102_444_799.999), level("a", ts=4_102_444_800), level("a", ts=99_999_999_999),
    level("a", ts=100_000_000_000), level("a", ts=1_795_307_400_123), level("a", ts=1.7953074001235e12),
    level("a", ts=-5), level("a", ts=float("nan")), level("a", ts="2026-11-22T08:30:00+08:00"),
    level("a", ts="2026-11-22T08:30:00"), level("a", ts=True),
    level("a", where=(180.0, 90.0)), level("a", where=(-180.0001, 36.0)), level("a", where=(117, 36)),
    traffic("b"), traffic("b", speed_kmh=300.0), traffic("b", speed_kmh=300.5),
    traffic("b", occupancy_pct=-0.0), traffic("b", flow_vph=20_001),
    {**level("a"), "speed_kmh": 3.0}, {**level("a"), "levle_m": 1.0},
    {k: v for k, v in level("a").items() if k != "level_m"},
    level("a") | {"kind": "river"}, level("a") | {"kind": ["water_level"]},
    level("a") | {"sensor_id": ["a"]}, level("bad id!"), [level("a")], "text", None, 7,
]


@pytest.fixture
def known_ids() -> Iterator[set[str]]:
    saved = set(ingest._known_ids)
    ingest._known_ids.clear()
    yield ingest._known_ids
    ingest._known_ids.clear()
    ingest._known_ids.update(saved)


def _outcome(checked: ingest.Checked) -> tuple[list, list]:
    b = checked.batch
    rows = [(str(b.sensor_id[i]), str(b.kind[i]), int(b.ts_ms[i]), float(b.lon[i]),
             float(b.lat[i]), {k: float(v[i]) for k, v in b.values.items() if not math.isnan(v[i])})
            for i in range(len(b))]
    return rows, [(r.index, r.field, r.reason) for r in checked.rejected]


def test_fast_and_slow_paths_agree_on_every_edge_case(known_ids: set[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    regions = default_regions()
    calls: list[Any] = []

    def counting_parse(raw: Any) -> Any:
        calls.append(raw)
        return parse_reading(raw)

    monkeypatch.setattr(ingest, "parse_reading", counting_parse)
    # The server's clock at the end of the accepted range: items dated up to 2100 are not
    # refused as ahead of it (test_readings_far_ahead_of_the_clock_are_refused does that).
    now = _MAX_TS_MS
    slow = _outcome(check_items(EDGE_ITEMS, regions, now_ms=now))  # unknown ids: parse_reading
    slow_calls = len(calls)
    assert known_ids == {"a", "b"}
    fast = _outcome(check_items(EDGE_ITEMS, regions, now_ms=now))  # known ids: columns first
    assert fast == slow
    assert len(calls) - slow_calls <= slow_calls - 12  # the valid ones skipped parse_reading
    # ... and both agree with parse_reading item by item (positions inside Shandong).
    accepted = {i for i in range(len(EDGE_ITEMS))} - {r[0] for r in slow[1]}
    expected = []
    for i in sorted(accepted):
        r = parse_reading(EDGE_ITEMS[i])
        expected.append((r.sensor_id, r.kind, r.ts_ms, r.lon, r.lat, dict(r.values)))
    assert slow[0] == expected
    assert len(expected) >= 12  # the table holds plenty of valid items too


def test_rejections_keep_the_request_order_and_say_where(known_ids: set[str]) -> None:
    items = [level("jn-1"), level("jn-2", "high"), level("jn-3", where=(116.40, 39.90)),
             level("jn-4") | {"values": {}}, level("jn-5", where=(JINAN[1], JINAN[0]))]
    checked = check_items(items, default_regions())
    assert len(checked.batch) == 1 and checked.batch.district.tolist() == [370102]
    assert [(r.index, r.field, r.sensor_id) for r in checked.rejected] == [
        (1, "level_m", "jn-2"), (2, "lon", "jn-3"), (3, "values", "jn-4"), (4, "lat", "jn-5")]
    assert "outside Shandong" in checked.rejected[1].reason
    assert "/v1/readings/thingsboard" in checked.rejected[2].reason


def test_scope_rejects_per_item(known_ids: set[str]) -> None:
    items = [level("jn-1"), level("qd-1", where=QINGDAO), level("x-1", where=QINGDAO)]
    by_prefix = check_items(items, default_regions(), Principal("integrator", "k", prefixes=("jn-",)))
    assert by_prefix.batch.sensor_id.tolist() == ["jn-1"]
    assert [r.index for r in by_prefix.rejected] == [1, 2] and by_prefix.all_out_of_scope
    by_city = check_items(items, default_regions(),
                          Principal("integrator", "k", cities=frozenset({"370200"})))
    assert by_city.batch.sensor_id.tolist() == ["qd-1", "x-1"]
    assert "outside this key's scope (370200)" in by_city.rejected[0].reason
    assert "370100 济南市" in by_city.rejected[0].reason


# -- body shapes ---------------------------------------------------------------------------------


def test_json_bodies() -> None:
    assert decode_body(b'{"a": 1}', "application/json") == ([{"a": 1}], {})
    assert decode_body(b"[1, 2]", None) == ([1, 2], {})
    with pytest.raises(BadBody) as bad:
        decode_body(b"{nope", "text/csv")
    assert bad.value.status == 400 and "Content-Type was text/csv" in bad.value.detail
    # NDJSON sent as JSON: the parser said only "unexpected content after document".
    ndjson = b'{"sensor_id": "a"}\n{"sensor_id": "b"}\n'
    for media in ("application/json", None):
        with pytest.raises(BadBody) as lines:
            decode_body(ndjson, media)
        assert lines.value.status == 400
        assert "one JSON document per line" in lines.value.detail
        assert "application/x-ndjson" in lines.value.detail
    with pytest.raises(BadBody) as broken:  # not NDJSON either: no such hint
        decode_body(b'{"sensor_id": "a"\n}}', "application/json")
    assert "per line" not in broken.value.detail
    with pytest.raises(BadBody) as empty:
        decode_body(b"[]", "application/json")
    assert empty.value.status == 422
    with pytest.raises(BadBody) as big:
        decode_body(orjson.dumps([{}] * (ingest.MAX_ITEMS + 1)), "application/json")
    assert big.value.status == 413 and "the limit is 50000" in big.value.detail


def test_ndjson_bodies_report_bad_lines_by_index() -> None:
    body = b'{"a": 1}\n\n  \n{"b": 2}\r\n{broken\n[3]'
    items, bad = decode_body(body, "application/x-ndjson; charset=utf-8")
    assert items[:2] == [{"a": 1}, {"b": 2}] and items[3] == [3]
    assert list(bad) == [2] and "line 3" in bad[2].reason
    assert decode_body(b'{"a": 1}\n{"b": 2}\n', "application/jsonl") == ([{"a": 1}, {"b": 2}], {})


def test_ndjson_lines_broken_in_two_are_two_bad_lines_not_one_reading() -> None:
    """Each line is one item: two halves of an object on two lines made one reading when the
    lines were joined into one array and parsed at once, and shifted later lines' indices."""
    body = b'{"sensor_id": "zz-split", "ts": 1\n"lon": 117.02, "level_m": 2.4}\n{"c": 3}\n'
    items, bad = decode_body(body, "application/x-ndjson")
    assert sorted(bad) == [0, 1] and "line 1" in bad[0].reason and "line 2" in bad[1].reason
    assert len(items) == 3 and items[2] == {"c": 3}


DUPLICATE = "is given more than once in"


@pytest.mark.parametrize("body, media, index, key", [
    # The last one won, silently: this reading was stored at 9.9.
    (orjson.dumps([level("jn-1"), level("jn-2")])[:-2] + b',"level_m":9.9}]', None, 1, "level_m"),
    (b'{"sensor_id": "jn-1", "ts": 1, "ts": 2}', "application/json", 0, "ts"),
    (b'{"sensor_id": "jn-1", "ts": 1, "ts" : 2}', "text/plain", 0, "ts"),  # counted apart
    (b'{"sensor_id": "jn-1", "kind": 1, "\\u006bind": 2}', None, 0, "kind"),  # an escaped key
    (b'{"a": 1}\n{"kind": 1, "kind": 2}\n', "application/x-ndjson", 1, "kind"),
    (b'[{"ts": 1, "values": {"level_m": 1, "level_m": 2}}]', None, 0, "level_m"),  # ThingsBoard
])
def test_a_key_given_twice_refuses_the_item_naming_the_key(body: bytes, media: str | None,
                                                           index: int, key: str) -> None:
    items, preset = decode_body(body, media)
    assert list(preset) == [index] and preset[index].field == key
    assert f"key '{key}' {DUPLICATE}" in preset[index].reason
    checked = check_items(items, default_regions(), preset=preset)
    assert [(r.index, r.field) for r in checked.rejected if DUPLICATE in r.reason] == [(index, key)]


@pytest.mark.parametrize("body", [
    orjson.dumps([level(f"jn-{i}", ts="2026-11-22T08:30:00+08:00") for i in range(50)]),
    orjson.dumps(level("jn-1"), option=orjson.OPT_INDENT_2),
    b'{"sensor_id": ":colon", "note": "a \\" quote", "x" : 1}',  # counted apart, found none
    b'[{"ts": 1, "values": {"level_m": 1, "ts": 2}}]',
])
def test_bodies_without_a_key_given_twice_refuse_nothing_for_it(body: bytes) -> None:
    assert decode_body(body, "application/json")[1] == {}


@pytest.mark.parametrize("media", ["application/xml", "text/xml", "text/csv",
                                   "application/x-www-form-urlencoded", "multipart/form-data",
                                   "application/octet-stream"])
def test_a_body_that_is_not_declared_json_is_415_naming_the_types_taken(media: str) -> None:
    """application/xml (any type) was read as JSON: a JSON body sent as XML was stored."""
    with pytest.raises(BadBody) as refused:
        ingest.check_media_type(f"{media}; charset=utf-8")
    assert refused.value.status == 415
    assert refused.value.detail.startswith(f"Content-Type '{media}' is not taken here")
    assert "application/json" in refused.value.detail
    assert "application/x-ndjson" in refused.value.detail
    for taken in (None, "", "application/json", "Application/JSON; charset=utf-8", "text/plain",
                  "application/geo+json", "application/x-ndjson", "application/jsonl"):
        ingest.check_media_type(taken)


def test_thingsboard_items_take_identity_from_query_or_values() -> None:
    identity = {"sensor_id": "jn-tb-1", "kind": "water_level", "lon": JINAN[0], "lat": JINAN[1]}
    items, bad = thingsboard_items([
        {"ts": 1_795_307_400_000, "values": {"level_m": 1.5}},
        {"level_m": 2.5},  # flat: event time is now
        {"ts": 1_795_307_400_000, "values": {"level_m": 1.0, "sensor_id": "jn-tb-2"}},
        {"ts": 1, "values": [1]}, {"ts": 1, "values": {}, "deviceName": "x"}, "x",
    ], identity, now_ms=1_800_000_000_000)
    assert items[0] == {**identity, "level_m": 1.5, "ts": 1_795_307_400_000}
    assert items[1]["ts"] == 1_800_000_000_000
    assert items[2]["sensor_id"] == "jn-tb-2"
    assert sorted(bad) == [3, 4, 5]
    assert bad[4].field == "deviceName" and "must be a JSON object" in bad[5].reason


def test_a_thingsboard_ts_inside_values_is_the_event_time() -> None:
    """A ts inside 'values' (a gateway sending what it buffered) was replaced by the item's
    ts or, without one, by the time the API received it: hours-old readings stamped now."""
    identity = {"sensor_id": "jn-tb-1", "kind": "water_level", "lon": JINAN[0], "lat": JINAN[1]}
    items, bad = thingsboard_items([
        {"values": {"level_m": 1.5, "ts": 1_795_307_400_000}},
        {"ts": 1_795_307_400_000, "values": {"level_m": 1.5, "ts": 1_795_307_400_000}},
        {"ts": 1_795_307_400_000, "values": {"level_m": 1.5, "ts": 1_795_300_000_000}},
    ], identity, now_ms=1_800_000_000_000)
    assert items[0]["ts"] == items[1]["ts"] == 1_795_307_400_000
    assert sorted(bad) == [2] and bad[2].field == "ts" and "given twice" in bad[2].reason


def test_a_503_says_why_kafka_did_not_acknowledge() -> None:
    """A timeout has no message: the detail ended in 'did not acknowledge the readings: '."""
    from api.publisher import ReadingPublisher

    publisher = ReadingPublisher("127.0.0.1:9", "t", ack_timeout_s=10.0)
    assert str(publisher._broker_error(TimeoutError())).endswith(
        "did not acknowledge the readings: no acknowledgement within 10 s")
    assert str(publisher._broker_error(OSError("connection refused"))).endswith(
        "the readings: connection refused")


def test_a_refusal_repeats_at_most_80_characters_of_what_it_refused(known_ids: set[str]) -> None:
    """A 100,000-character sensor id, field name or value was repeated whole in its reason:
    an answer as large as the request (16 MiB), too large to keep as an idempotency record."""
    huge = "x" * 100_000
    checked = check_items([
        level(huge), level("jn-e-1") | {huge: 1}, level("jn-e-2", huge), level("jn-e-3", ts=huge),
        level("jn-e-4") | {"kind": [huge]}, level("jn-e-5") | {"kind": huge},
    ], default_regions())
    assert [r.index for r in checked.rejected] == [0, 1, 2, 3, 4, 5]
    for rejection in checked.rejected:
        assert len(rejection.reason) < 400, rejection.reason[:200]
        assert "characters)" in rejection.reason
        assert rejection.field is None or len(rejection.field) <= 80
    items, bad = thingsboard_items([{"ts": 1, "values": {}, huge: 1},
                                    {"ts": huge, "values": {"ts": 1}}], {})
    assert all(len(r.reason) < 400 and len(r.field or "") <= 80 for r in bad.values())


# -- rate limit and idempotency ------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_counts_readings() -> None:
    clock = Clock()
    limiter = RateLimiter(100, 500, clock=clock)
    assert limiter.take("k", 500) == 0
    assert limiter.take("k", 250) == 3  # 250 tokens at 100/s: wait 2.5 s, rounded up
    assert limiter.take("other", 500) == 0  # per key
    clock.now += 2.5
    assert limiter.take("k", 250) == 0
    limiter.give_back("k", 250)
    assert limiter.take("k", 250) == 0
    with pytest.raises(TooLarge, match="at most 500 at once"):
        limiter.take("k", 501)


def test_idempotency_replays_rejects_other_bodies_and_expires() -> None:
    clock = Clock()
    cache = IdempotencyCache(ttl_s=600, max_entries=2, clock=clock)
    assert cache.begin("k1", "abc", b"body-1") is None
    with pytest.raises(IdempotencyConflict) as busy:
        cache.begin("k1", "abc", b"body-1")
    assert busy.value.status == 409
    cache.finish("k1", "abc", StoredResponse(202, b'{"accepted":1}'))
    assert cache.begin("k1", "abc", b"body-1") == StoredResponse(202, b'{"accepted":1}')
    with pytest.raises(IdempotencyConflict) as other:
        cache.begin("k1", "abc", b"body-2")
    assert other.value.status == 422 and "different request body" in other.value.detail
    assert cache.begin("k2", "abc", b"body-2") is None  # keys are per API key
    cache.abandon("k2", "abc")
    assert cache.begin("k2", "abc", b"body-3") is None  # an abandoned request runs again
    clock.now += 601
    assert cache.begin("k1", "abc", b"body-2") is None  # expired
    cache.begin("k1", "d", b"x")
    cache.begin("k1", "e", b"x")
    assert len(cache) == 2  # the oldest is dropped beyond max_entries


def test_records_of_other_processes_are_taken_in_while_recent_and_unknown_here() -> None:
    clock = Clock()
    cache = IdempotencyCache(ttl_s=600, clock=clock)
    answer = StoredResponse(202, b'{"accepted":3,"rejected":[]}')
    assert cache.remember("k1", "r1", b"fp", answer, age_s=30)
    assert cache.begin("k1", "r1", b"fp") == answer  # a retry: replayed
    with pytest.raises(IdempotencyConflict):
        cache.begin("k1", "r1", b"other")
    assert not cache.remember("k1", "r2", b"fp", answer, age_s=600)  # expired already
    assert cache.begin("k1", "r2", b"fp") is None  # running here: its own record wins
    assert not cache.remember("k1", "r2", b"fp", answer, age_s=1)
    with pytest.raises(IdempotencyConflict) as busy:
        cache.begin("k1", "r2", b"fp")
    assert busy.value.status == 409
    clock.now += 571  # r1 was 30 s old when taken in: it expires at its own 600 s
    assert cache.begin("k1", "r1", b"other") is None


def test_malformed_idempotency_records_are_counted_and_skipped() -> None:
    from api.idempotency_log import IdempotencyLog

    cache = IdempotencyCache()
    records = IdempotencyLog("127.0.0.1:9", "t.idempotency", cache)
    good = {"owner": "k1", "key": "r1", "fingerprint": "ab01", "status": 202,
            "body": '{"accepted":1}', "at_ms": int(time.time() * 1000) - 1000}
    # As the follower hands them over: JSON-decoded (text that is not JSON it skips itself).
    plain = {k: v for k, v in good.items() if k != "body"}
    for doc in (["not", "an", "object"], {**good, "fingerprint": "xyz"},
                {k: v for k, v in good.items() if k != "owner"}, {**good, "at_ms": "soon"},
                None, {**plain, "body_z": "not base64!"}, {**plain, "body_z": "bm90IHpsaWI="}):
        records._take("k1 r1", doc)
    assert (records.read, records.malformed, records.taken, len(cache)) == (7, 7, 0, 0)
    records._take("k1 r1", good)
    assert (records.taken, cache.begin("k1", "r1", bytes.fromhex("ab01"))) == (
        1, StoredResponse(202, b'{"accepted":1}'))


# -- the route, on the real broker ---------------------------------------------------------------

KEYS = "admin:adm-key,operator:op-key:370100,integrator:jn-key:jn-,integrator:qd-key:370200"


def auth(key: str = "adm-key", **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **headers}


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str) -> Iterator[tuple[TestClient, Settings]]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"ingest{tag}", app_id=f"ingest-{tag}",
                        partitions=4,
                        api_keys=KEYS, api_rate=1000.0, api_burst=60_000)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    with TestClient(create_app(settings)) as client:
        wait_for_idempotency_records(client)
        yield client, settings


def wait_for_idempotency_records(client: TestClient, timeout_s: float = 30.0) -> None:
    """Until the API has read the idempotency topic (keyed POSTs are 503 before)."""
    deadline = time.monotonic() + timeout_s
    while not client.get("/readyz").json()["idempotency_caught_up"]:
        assert time.monotonic() < deadline, "the idempotency records were never read"
        time.sleep(0.05)


def stored(settings: Settings, sensor_prefix: str, expect: int) -> list[str]:
    """Sensor ids of stored readings that start with ``sensor_prefix`` (read from the topic)."""
    def ids(records: list) -> list[str]:
        out = []
        for record in records:
            out += [s for s in decode_batch(record.value).sensor_id.tolist()
                    if s.startswith(sensor_prefix)]
        return out

    records = consume_records(settings.bootstrap, settings.readings_topic,
                              lambda rs: len(ids(rs)) >= expect, timeout_s=5 if expect else 2)
    return ids(records)


@pytest.mark.integration
def test_valid_items_are_stored_and_invalid_ones_listed(api) -> None:
    client, settings = api
    now = time.time()
    body = [level("jn-p-0", ts=now), level("jn-p-1", "high", ts=now),
            level("jn-p-2", ts=now, where=(116.40, 39.90)), level("jn-p-3", 6.0, ts=now)]
    answer = client.post("/v1/readings", json=body, headers=auth())
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"accepted": 2, "rejected": [
        {"index": 1, "field": "level_m", "sensor_id": "jn-p-1",
         "reason": "'level_m' must be a number; got str 'high'"},
        {"index": 2, "field": "lon", "sensor_id": "jn-p-2",
         "reason": answer.json()["rejected"][1]["reason"]}]}
    assert sorted(stored(settings, "jn-p-", 2)) == ["jn-p-0", "jn-p-3"]


@pytest.mark.integration
def test_all_invalid_is_422_and_nothing_is_stored(api) -> None:
    client, settings = api
    answer = client.post("/v1/readings", json=[level("jn-x-0", None), level("jn-x-1", ts="soon")],
                         headers=auth())
    assert answer.status_code == 422
    assert answer.json()["detail"] == "all 2 readings are invalid; none was accepted (see 'rejected')"
    assert [r["field"] for r in answer.json()["rejected"]] == ["level_m", "ts"]
    one = client.post("/v1/readings", content=b'"text"', headers=auth())
    assert one.status_code == 422 and "must be a JSON object" in one.json()["detail"]
    assert stored(settings, "jn-x-", 0) == []


@pytest.mark.integration
def test_a_reading_giving_a_key_twice_is_refused_and_the_others_stored(api) -> None:
    client, settings = api
    now = time.time()
    body = orjson.dumps([level("jn-dk-0", ts=now), level("jn-dk-1", 2.4, ts=now)])
    body = body[:-2] + b',"level_m":9.9}]'  # jn-dk-1 says level_m twice
    answer = client.post("/v1/readings", content=body, headers=auth())
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 1
    [refused] = answer.json()["rejected"]
    assert (refused["index"], refused["field"], refused["sensor_id"]) == (1, "level_m", "jn-dk-1")
    assert "key 'level_m' is given more than once in this reading" in refused["reason"]
    assert stored(settings, "jn-dk-", 1) == ["jn-dk-0"]


@pytest.mark.integration
def test_the_routes_answer_415_to_a_body_not_declared_json(api) -> None:
    client, settings = api
    answer = client.post("/v1/readings", content=orjson.dumps(level("jn-xml-1", ts=time.time())),
                         headers=auth(**{"content-type": "application/xml"}))
    assert answer.status_code == 415, answer.text
    assert "'application/xml' is not taken here" in answer.json()["detail"]
    form = client.post("/v1/readings/thingsboard", content=b"level_m=2.4",
                       headers=auth(**{"content-type": "application/x-www-form-urlencoded"}))
    assert form.status_code == 415 and "curl -d sends that" in form.json()["detail"]
    assert stored(settings, "jn-xml-", 0) == []


@pytest.mark.integration
def test_ndjson_and_thingsboard(api) -> None:
    client, settings = api
    now = time.time()
    lines = b"\n".join(orjson.dumps(level(f"jn-nd-{i}", ts=now)) for i in range(3)) + b"\n"
    answer = client.post("/v1/readings", content=lines,
                         headers=auth(**{"content-type": "application/x-ndjson"}))
    assert answer.status_code == 202 and answer.json() == {"accepted": 3, "rejected": []}
    tb = client.post("/v1/readings/thingsboard",
                     params={"sensor_id": "jn-tb-9", "kind": "water_level", "lon": JINAN[0],
                             "lat": JINAN[1]},
                     json=[{"ts": int(now * 1000), "values": {"level_m": 1.5}},
                           {"ts": int(now * 1000) + 1000, "values": {"level_m": 1.6}}],
                     headers=auth())
    assert tb.status_code == 202 and tb.json()["accepted"] == 2, tb.text
    lost = client.post("/v1/readings/thingsboard", json={"values": {"level_m": 1.5}},
                       headers=auth())
    assert lost.status_code == 422
    assert "?sensor_id=" in lost.json()["rejected"][0]["reason"]
    assert sorted(stored(settings, "jn-nd-", 3)) == ["jn-nd-0", "jn-nd-1", "jn-nd-2"]
    assert stored(settings, "jn-tb-9", 2) == ["jn-tb-9", "jn-tb-9"]


@pytest.mark.integration
def test_an_idempotent_retry_is_replayed_not_stored_twice(api) -> None:
    client, settings = api
    body = [level("jn-idem-1", ts=time.time())]
    key = str(uuid.uuid4())
    first = client.post("/v1/readings", json=body, headers=auth(**{"idempotency-key": key}))
    again = client.post("/v1/readings", json=body, headers=auth(**{"idempotency-key": key}))
    assert first.status_code == again.status_code == 202
    assert again.content == first.content and again.headers["idempotency-replayed"] == "true"
    other = client.post("/v1/readings", json=body + body, headers=auth(**{"idempotency-key": key}))
    assert other.status_code == 422 and "different request body" in other.json()["detail"]
    bad = client.post("/v1/readings", json=body, headers=auth(**{"idempotency-key": "a b"}))
    assert bad.status_code == 400
    assert stored(settings, "jn-idem-1", 2) == ["jn-idem-1"]  # waited for a second: none came


@pytest.mark.integration
@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_idempotency_key_is_400_not_taken_as_no_key(api, key: str) -> None:
    """A header sent empty (``curl -H 'Idempotency-Key;'``, a client that sends a failed
    ``$(uuidgen)`` as is) asks for idempotency and gives no key: 400, and nothing stored; an
    unkeyed request would be stored again on every retry. (curl drops ``-H "Idempotency-Key:
    "``: that request has no header at all, which the API cannot tell; docs/api.md says so.)"""
    client, settings = api
    sensor = f"jn-nokey-{len(key)}"
    answer = client.post("/v1/readings", json=[level(sensor, ts=time.time())],
                         headers=auth(**{"idempotency-key": key}))
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == ("Idempotency-Key must be 1-255 visible ASCII characters "
                                       "(a UUID is best)")
    assert not any(sensor in decode_batch(r.value).sensor_id.tolist()
                   for r in consume_to_end(settings.bootstrap, settings.readings_topic))


@pytest.mark.integration
def test_keys_roles_and_scopes(api) -> None:
    client, _ = api
    body = [level("jn-s-1", ts=time.time()), level("qd-s-1", ts=time.time(), where=QINGDAO)]
    assert client.post("/v1/readings", json=body).status_code == 401
    assert client.post("/v1/readings", json=body, headers=auth("nope")).status_code == 401
    operator = client.post("/v1/readings", json=body, headers=auth("op-key"))
    assert operator.status_code == 403 and "needs an integrator or admin key" in operator.text
    jinan = client.post("/v1/readings", json=body, headers=auth("jn-key"))
    assert jinan.status_code == 202 and jinan.json()["accepted"] == 1
    assert jinan.json()["rejected"][0]["sensor_id"] == "qd-s-1"
    qingdao = client.post("/v1/readings", json=body[:1], headers=auth("qd-key"))
    assert qingdao.status_code == 403 and "outside the scope" in qingdao.json()["detail"]
    assert client.get("/v1/alerts").status_code == 401
    assert client.get("/v1/alerts", headers=auth("jn-key")).status_code == 403
    assert client.get("/v1/alerts", headers=auth("op-key")).status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.mark.integration
def test_limits_413_and_429(api) -> None:
    client, _ = api
    huge = client.post("/v1/readings", content=b" " * (MAX_BODY_BYTES + 1), headers=auth())
    assert huge.status_code == 413 and "the limit is" in huge.json()["detail"]
    over_burst = client.post("/v1/readings", json=[level("jn-b")] * 50_001, headers=auth("jn-key"))
    assert over_burst.status_code == 413  # MAX_ITEMS
    # jn-key: 1000 readings/s, burst 60,000. Drain the bucket, then one more is refused.
    drain = [level(f"jn-r-{i % 50}", ts=NOW + i) for i in range(50_000)]
    assert client.post("/v1/readings", json=drain, headers=auth("jn-key")).status_code == 202
    # 50,000 more, so that the refusal holds unless the first took over 40 s (the bucket
    # refills 1,000/s; with 20,000 a loaded machine's 10 s let it through).
    second = client.post("/v1/readings", json=drain, headers=auth("jn-key"))
    assert second.status_code == 429, second.text
    assert int(second.headers["retry-after"]) >= 9
    assert "CITYAGENT_API_RATE" in second.json()["detail"]
    assert client.post("/v1/readings", json=drain[:10], headers=auth("jn-key")).status_code == 202


@pytest.mark.integration
def test_openapi_documents_the_ingest_routes(api) -> None:
    client, _ = api
    doc = client.get("/openapi.json").json()
    post = doc["paths"]["/v1/readings"]["post"]
    assert {"202", "401", "403", "413", "422", "429", "503"} <= set(post["responses"])
    assert "application/x-ndjson" in post["requestBody"]["content"]
    assert "/v1/readings/thingsboard" in doc["paths"]
    assert post["security"] == [{"APIKey": []}]


def test_a_reading_of_another_kind_than_its_sensor_is_refused(known_ids: set[str]) -> None:
    """The situation model knows each sensor's kind; a reading that says otherwise (two
    devices given one id) would be dropped downstream, so it is refused with the reason."""
    import numpy as np

    now = 1_790_000_000_000
    items = [{"sensor_id": "a", "kind": "water_level", "ts": now / 1000, "lon": 117.02,
              "lat": 36.66, "level_m": 2.0},
             {"sensor_id": "a", "kind": "traffic", "ts": now / 1000, "lon": 117.02, "lat": 36.66,
              "speed_kmh": 60.0, "flow_vph": 900.0, "occupancy_pct": 10.0},
             {"sensor_id": "new-2", "kind": "traffic", "ts": now / 1000, "lon": 117.02,
              "lat": 36.66, "speed_kmh": 60.0, "flow_vph": 900.0, "occupancy_pct": 10.0}]
    known = {"a": 1}  # water_level

    def known_kinds(ids: list[str]) -> np.ndarray:
        return np.array([known.get(s, -1) for s in ids], dtype=np.int64)

    checked = check_items(items, default_regions(), now_ms=now, known_kinds=known_kinds)
    assert checked.batch.sensor_id.tolist() == ["a", "new-2"]
    assert [(r.index, r.field, r.sensor_id) for r in checked.rejected] == [(1, "kind", "a")]
    assert "'a' is a water_level sensor; this reading says traffic" in checked.rejected[0].reason


def test_a_new_sensor_with_two_kinds_in_one_request_keeps_the_first(known_ids: set[str]) -> None:
    """A sensor the API does not know yet takes the kind of its first reading in the request,
    as the worker does; its readings of another kind there were accepted, then dropped."""
    import numpy as np

    now = 1_790_000_000_000
    water = {"sensor_id": "new-mix", "kind": "water_level", "ts": now / 1000, "lon": 117.02,
             "lat": 36.66, "level_m": 2.0}
    pressure = {"sensor_id": "new-mix", "kind": "pipe_pressure", "ts": now / 1000 + 10,
                "lon": 117.02, "lat": 36.66, "pressure_mpa": 0.3}
    other = {**pressure, "sensor_id": "new-other"}
    checked = check_items([pressure | {"ts": "bad"}, water, other, pressure, water],
                          default_regions(), now_ms=now,
                          known_kinds=lambda ids: np.full(len(ids), -1, dtype=np.int64))
    assert checked.batch.sensor_id.tolist() == ["new-mix", "new-other", "new-mix"]
    assert checked.batch.kind.tolist() == ["water_level", "pipe_pressure", "water_level"]
    kind = [r for r in checked.rejected if r.field == "kind"]
    assert [(r.index, r.sensor_id) for r in kind] == [(3, "new-mix")]
    assert "is a water_level sensor (its first reading, item 1 of this request)" in kind[0].reason


def test_readings_far_ahead_of_the_clock_are_refused_with_the_likely_cause(
        known_ids: set[str]) -> None:
    """A reading dated more than 5 min past the server's clock would be dropped downstream
    (it would make its bucket-mates late and every other sensor look silent): refused now."""
    now = 1_790_000_000_000
    items = [{"sensor_id": sid, "kind": "water_level", "ts": ts / 1000, "lon": 117.02,
              "lat": 36.66, "level_m": 2.0}
             for sid, ts in (("a", now), ("b", now + 299_000), ("a", now + 8 * 3_600_000),
                             ("new-1", now + 301_000))]
    for _ in range(2):  # slow path (the first time "new-1" is unknown), then the fast path
        checked = check_items(items, default_regions(), now_ms=now)
        assert [checked.batch.sensor_id.tolist(), checked.batch.ts_ms.tolist()] == [
            ["a", "b"], [now, now + 299_000]]
        assert [(r.index, r.field, r.sensor_id) for r in checked.rejected] == [
            (2, "ts", "a"), (3, "ts", "new-1")]
        assert "8.00 h past the server's clock" in checked.rejected[0].reason
        assert "China time as UTC" in checked.rejected[0].reason
    # The tolerance is a setting (CITYAGENT_FUTURE_TOLERANCE_S): at 1 min, "b" is refused too.
    strict = check_items(items, default_regions(), now_ms=now, future_tolerance_ms=60_000)
    assert strict.batch.sensor_id.tolist() == ["a"]
    assert "at most 1 min ahead (CITYAGENT_FUTURE_TOLERANCE_S)" in strict.rejected[0].reason


@pytest.mark.integration
def test_gzip_bodies_are_read_and_other_encodings_refused(api) -> None:
    """Content-Encoding: gzip was read as the raw bytes ("str is not valid UTF-8")."""
    import gzip

    client, settings = api
    now = time.time()
    body = orjson.dumps([level(f"jn-gz-{i}", ts=now) for i in range(5)])
    packed = gzip.compress(body)
    answer = client.post("/v1/readings", content=packed,
                         headers=auth(**{"content-encoding": "gzip"}))
    assert answer.status_code == 202 and answer.json() == {"accepted": 5, "rejected": []}
    assert sorted(stored(settings, "jn-gz-", 5)) == [f"jn-gz-{i}" for i in range(5)]
    bomb = gzip.compress(b" " * (MAX_BODY_BYTES + 1))  # ~16 KB that inflates past 16 MiB
    big = client.post("/v1/readings", content=bomb, headers=auth(**{"content-encoding": "gzip"}))
    assert big.status_code == 413 and "once gunzipped" in big.json()["detail"]
    broken = client.post("/v1/readings", content=packed[:-9],
                         headers=auth(**{"content-encoding": "gzip"}))
    assert broken.status_code == 400 and "gzip" in broken.json()["detail"]
    other = client.post("/v1/readings", content=body, headers=auth(**{"content-encoding": "br"}))
    assert other.status_code == 415 and "'br' is not supported" in other.json()["detail"]


@pytest.mark.integration
def test_every_gzip_member_is_read_and_trailing_bytes_refused(api) -> None:
    """A body of two gzip members (``cat a.gz b.gz``, one valid gzip stream) was read up to the
    end of the first: 202 with its readings alone, the second member's left out unsaid."""
    import gzip

    client, settings = api
    now = time.time()
    lines = [orjson.dumps(level(f"jn-gm-{i}", ts=now)) + b"\n" for i in range(6)]
    packed = gzip.compress(b"".join(lines[:3])) + gzip.compress(b"".join(lines[3:]))
    answer = client.post("/v1/readings", content=packed, headers=auth(
        **{"content-encoding": "gzip", "content-type": "application/x-ndjson"}))
    assert answer.status_code == 202 and answer.json() == {"accepted": 6, "rejected": []}
    assert sorted(stored(settings, "jn-gm-", 6)) == [f"jn-gm-{i}" for i in range(6)]
    for tail in (b"garbage", gzip.compress(b"".join(lines))[:-9]):
        broken = client.post("/v1/readings", content=gzip.compress(lines[0]) + tail, headers=auth(
            **{"content-encoding": "gzip", "content-type": "application/x-ndjson"}))
        assert broken.status_code == 400, broken.text
        assert "gzip" in broken.json()["detail"]


@pytest.mark.integration
def test_a_retry_that_only_adds_a_charset_is_the_same_request(api) -> None:
    client, _ = api
    body = orjson.dumps([level("jn-cs-1", ts=time.time())])
    first = client.post("/v1/readings", content=body,
                        headers=auth(**{"idempotency-key": "cs-1",
                                        "content-type": "application/json"}))
    again = client.post("/v1/readings", content=body,
                        headers=auth(**{"idempotency-key": "cs-1",
                                        "content-type": "application/json; charset=utf-8"}))
    assert first.status_code == again.status_code == 202
    assert again.headers.get("idempotency-replayed") == "true"
