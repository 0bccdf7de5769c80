"""The zone, routing and maintenance routes wait until the API has read their topic up to
its end (api.deps.read_up_to_start), then answer 503 with Retry-After.

Reads: before that the API holds the packaged zones and rules, or part of the topic, and a
200 with them (an API that had just started, behind a load balancer that had not asked its
/readyz yet) could not be told from the truth. Admin writes derive from what the API has
read: a zone's or the routing rules' next version is one above the newest read, and one
computed by an API that had just started would be ignored by every reader. The app is used
without its lifespan, so its followers never read anything."""

from __future__ import annotations

import warnings

import pytest
from starlette.exceptions import StarletteDeprecationWarning

import api.deps
from api.main import create_app
from cityagent.settings import Settings
from tests.integration.test_zones_live import SCHOOL

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ADMIN = {"authorization": "Bearer adm-key"}
VIEWER = {"authorization": "Bearer view-key"}
READS = (("/v1/zones", "zones"), ("/v1/zones/jn-flood-old-city", "zones"),
         ("/v1/routing", "routing"), ("/v1/maintenance", "maintenance"))


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setattr(api.deps, "FEED_WAIT_S", 0.05)
    return create_app(Settings(api_keys="admin:adm-key,viewer:view-key", kafka="127.0.0.1:9"))  # never connected


def test_writes_are_503_until_the_api_has_read_the_topic(app) -> None:
    import tomllib
    from importlib import resources

    rules = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                          .read_text("utf-8"))
    client = TestClient(app)
    for method, path, body, topic in (
            ("PUT", "/v1/zones/qd-test-school", SCHOOL, "zones"),
            ("PUT", "/v1/routing", rules, "routing"),
            ("DELETE", "/v1/maintenance/w1", None, "maintenance")):
        answer = client.request(method, path, json=body, headers=ADMIN)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["retry-after"] == "5"
        assert f"has not yet read the {topic} topic" in answer.json()["detail"]


def test_a_window_put_waits_for_the_topic_only_to_check_a_precondition(app) -> None:
    """Without one it writes the whole window whatever was read, as before: it reaches the
    writer (here never connected); with one, what was read decides, so it waits for it."""
    import time

    now_ms = time.time_ns() // 1_000_000
    window = {"sensor": "jn-wl-*", "start_ms": now_ms, "end_ms": now_ms + 3_600_000}
    client = TestClient(app)
    plain = client.put("/v1/maintenance/w1", json=window, headers=ADMIN)
    assert plain.status_code == 503 and "not connected to Kafka" in plain.json()["detail"]
    for headers, body in (({"If-Match": '"3"'}, window), ({"If-None-Match": "*"}, window),
                          ({}, {**window, "version": 3})):
        answer = client.put("/v1/maintenance/w1", json=body, headers={**ADMIN, **headers})
        assert answer.status_code == 503, answer.text
        assert "has not yet read the maintenance topic" in answer.json()["detail"]


def test_reads_are_503_until_the_api_has_read_the_topic(app) -> None:
    """Before 2026-11-24 these were 200 with the packaged demo zones and rules, no windows."""
    client = TestClient(app)
    for path, topic in READS:
        answer = client.get(path, headers=VIEWER)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.headers["retry-after"] == "5"
        assert answer.json() == {"detail": f"this API has not yet read the {topic} topic up "
                                           "to its end (the broker has not answered it yet); "
                                           "retry shortly"}, path


def test_the_503_says_how_far_the_topic_is_read(app) -> None:
    follower = app.state.zone_feed.follower
    follower.ends, follower.positions = {0: 7, 1: 2}, {0: 3, 1: 2}
    answer = TestClient(app).get("/v1/zones", headers=VIEWER)
    assert answer.status_code == 503
    assert "(read to offsets {0: 3, 1: 2} of {0: 7, 1: 2})" in answer.json()["detail"]


def test_once_read_the_reads_answer(app) -> None:
    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    client = TestClient(app)
    answers = {path: client.get(path, headers=VIEWER) for path, _ in READS}
    assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(answers, 200)
    assert "jn-flood-old-city" in {f["properties"]["zone_id"]
                                   for f in answers["/v1/zones"].json()["features"]}
    assert answers["/v1/routing"].json()["version"] == 0
    assert answers["/v1/maintenance"].json() == {"windows": {}}
    assert client.get("/v1/zones/no-such-zone", headers=VIEWER).status_code == 404


def test_once_read_the_writes_go_on(app) -> None:
    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    client = TestClient(app)
    assert client.delete("/v1/zones/no-such-zone", headers=ADMIN).status_code == 404
    assert client.delete("/v1/maintenance/no-such-window", headers=ADMIN).status_code == 404


def test_an_invalid_zone_is_422_at_once(app) -> None:
    bad = {**SCHOOL, "geometry": {"type": "Point", "coordinates": [120.38, 36.06]}}
    assert TestClient(app).put("/v1/zones/qd-bad", json=bad, headers=ADMIN).status_code == 422


def test_routing_rules_of_the_wrong_type_are_422_not_500(app) -> None:
    """A rule's kind or min_severity as an array was a TypeError inside the validation: 500."""
    import tomllib
    from importlib import resources

    rules = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                          .read_text("utf-8"))
    client = TestClient(app, raise_server_exceptions=False)
    for key, value in (("min_severity", ["red"]), ("kind", ["traffic"])):
        doc = {**rules, "rule": [{**rules["rule"][0], key: value}, *rules["rule"][1:]]}
        answer = client.put("/v1/routing", json=doc, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(f"the routing document: rule #1: {key} must be")


def _rules_with_fire() -> dict:
    import tomllib
    from importlib import resources

    rules = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                          .read_text("utf-8"))
    rules["departments"]["fire"] = {"zh": "消防救援支队", "en": "Fire and Rescue"}
    return rules


def test_a_zone_may_belong_to_a_department_added_with_put_routing(app) -> None:
    """Zones were checked against the packaged routing.toml's departments, by the API (PUT: a
    422 listing them) and by every reader of the zones topic (the record skipped): a
    department added with PUT /v1/routing could own no zone."""
    fire = {**SCHOOL, "properties": {**SCHOOL["properties"], "department": "fire"}}
    client = TestClient(app)
    # Before the routing topic is read, an unknown department waits for it: a 503, not a 422.
    for feed in (app.state.zone_feed, app.state.maintenance_feed):
        feed.follower._mark_caught_up()
    answer = client.put("/v1/zones/qd-fire", json=fire, headers=ADMIN)
    assert answer.status_code == 503 and "routing topic" in answer.json()["detail"], answer.text
    # Read: the rules in force (version 1, with 'fire') decide.
    app.state.routing_feed.apply("rules", {"version": 1, "routing": _rules_with_fire()})
    app.state.routing_feed.follower._mark_caught_up()
    answer = client.put("/v1/zones/qd-fire", json=fire, headers=ADMIN)
    assert answer.status_code == 503 and "not connected to Kafka" in answer.json()["detail"]
    nobody = {**SCHOOL, "properties": {**SCHOOL["properties"], "department": "nobody"}}
    answer = client.put("/v1/zones/qd-nobody", json=nobody, headers=ADMIN)
    assert answer.status_code == 422 and "'fire'" in answer.json()["detail"], answer.text
    # A reader of the zones topic applies the zone whatever routing it has read.
    record = {"version": 2, "feature": {**fire, "properties": {**fire["properties"],
                                                               "zone_id": "qd-fire"}}}
    assert app.state.zone_feed.apply("qd-fire", record)
    shown = client.get("/v1/zones/qd-fire", headers=VIEWER)
    assert shown.status_code == 200 and shown.json()["properties"]["department"] == "fire"
    assert not app.state.zone_feed.apply("qd-bad", {"version": 3, "feature": {
        **fire, "properties": {**fire["properties"], "zone_id": "qd-bad", "department": "Fire"}}})


def test_put_routing_that_drops_a_department_zones_name_is_409_naming_them(app) -> None:
    """PUT /v1/routing took rules without a department that zones still named: their alerts
    then went to a department no rule knew. Now a 409 names the department and its zones."""
    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    fire = _rules_with_fire()
    app.state.routing_feed.apply("rules", {"version": 1, "routing": fire})
    for zone_id in ("qd-fire-a", "qd-fire-b"):
        app.state.zone_feed.apply(zone_id, {"version": 2, "feature": {**SCHOOL, "properties": {
            **SCHOOL["properties"], "zone_id": zone_id, "department": "fire"}}})
    client = TestClient(app)
    without_fire = {**fire, "departments": {k: v for k, v in fire["departments"].items()
                                            if k != "fire"}}
    answer = client.put("/v1/routing", json=without_fire, headers=ADMIN)
    assert answer.status_code == 409, answer.text
    detail = answer.json()["detail"]
    assert "'fire' (named by zones 'qd-fire-a', 'qd-fire-b')" in detail, detail
    # Dropping the packaged 'education' too: both departments are named, each with its zones.
    schools = [z for z, zone in app.state.zone_feed.zones.zones.items()
               if zone.department == "education"]
    del without_fire["departments"]["education"]
    without_fire["rule"] = [r for r in without_fire["rule"]
                            if "education" not in r["departments"]]
    detail = client.put("/v1/routing", json=without_fire, headers=ADMIN).json()["detail"]
    assert "'education' (named by zone" in detail and "'fire' (named by" in detail, detail
    assert all(repr(z) in detail for z in schools)
    # Keeping every department that zones name passes the check (then: no Kafka here, 503).
    answer = client.put("/v1/routing", json=fire, headers=ADMIN)
    assert answer.status_code == 503 and "not connected to Kafka" in answer.json()["detail"]


def test_a_version_at_the_bound_is_409_naming_it_not_500(app) -> None:
    """The next zones or routing version is one above the newest read: past 2**64 - 1 orjson
    could not write it and PUT/DELETE were 500s (a zones file or record of such a version was
    taken then; they are refused now, so the feed stops at the bound, 2**53 - 1). A 409, not
    the 422 it was until 2026-11-25: the topic's state stops the write, not the request."""
    import dataclasses
    import tomllib
    from importlib import resources

    from cityagent.zones import MAX_VERSION

    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    rules = tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                          .read_text("utf-8"))
    client = TestClient(app, raise_server_exceptions=False)
    zones = app.state.zone_feed.zones
    for version in (MAX_VERSION, 2**64 - 1):
        app.state.zone_feed.zones = dataclasses.replace(zones, version=version)
        app.state.routing_feed.version = version
        for method, path, body, topic in (
                ("PUT", "/v1/zones/qd-test-school", SCHOOL, "zones"),
                ("DELETE", "/v1/zones/jn-flood-old-city", None, "zones"),
                ("PUT", "/v1/routing", rules, "routing")):
            answer = client.request(method, path, json=body, headers=ADMIN)
            assert answer.status_code == 409, (path, answer.text)
            assert answer.json()["detail"] == (
                f"the {topic} are at version {version}, the largest a version may be "
                "(9007199254740991, 2**53 - 1: the largest whole number every JSON reader "
                f"keeps exact), so no further change can be versioned; start the {topic} "
                "topic afresh, with versions below that bound"), path


def test_a_zone_422_is_one_sentence_naming_the_field_and_the_zone(app) -> None:
    """They began "zone ('qd-test-school'): property 'name' must ...", or "zone: ..." when
    the zone had no id yet."""
    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    client = TestClient(app)
    nameless = {**SCHOOL, "properties": {**SCHOOL["properties"], "name": ""}}
    point = {**SCHOOL, "geometry": {"type": "Point", "coordinates": [120.38, 36.06]}}
    for body, detail in (
            (nameless, "property 'name' of zone 'qd-test-school' must be non-empty text (the "
                       "display name); got ''"),
            (point, "the geometry of zone 'qd-test-school' must be a Polygon or MultiPolygon; "
                    "got 'Point'"),
            ({"type": "FeatureCollection", "features": []},
             "the zone must be a GeoJSON Feature; got 'FeatureCollection'")):
        answer = client.put("/v1/zones/qd-test-school", json=body, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"] == detail
