"""Concurrent edits of zones and routing rules: ETag on the reads, If-Match on the writes.

Two admins who each read version N and each wrote their change both got 202, the later
silently replacing the earlier; a ``version`` in a zone's body was ignored without a word.
The app is used without its lifespan (no broker): a write whose preconditions hold reaches
the writer, which answers 503 "not connected to Kafka"; one whose preconditions fail is a 412
before anything is written. tests/integration/test_zones_concurrency.py writes for real."""

from __future__ import annotations

import copy
import re
import time
import tomllib
import warnings
from importlib import resources

import orjson
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from api.main import create_app
from cityagent.settings import Settings
from tests.integration.test_zones_live import SCHOOL

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ADMIN = {"authorization": "Bearer adm-key"}
VIEWER = {"authorization": "Bearer view-key"}
ZONE = "/v1/zones/qd-test-school"
WRITTEN = "not connected to Kafka"  # the preconditions held: the write reached the writer


def _rules() -> dict:
    return tomllib.loads(resources.files("cityagent.data").joinpath("routing.toml")
                         .read_text("utf-8"))


@pytest.fixture
def client() -> TestClient:
    """An API that has read its topics: the demo zones (version 1), the school written at
    version 5 over them, routing rules at version 3."""
    app = create_app(Settings(api_keys="admin:adm-key,viewer:view-key", kafka="127.0.0.1:9"))
    for feed in (app.state.zone_feed, app.state.maintenance_feed, app.state.routing_feed):
        feed.follower._mark_caught_up()
    feature = copy.deepcopy(SCHOOL)
    feature["properties"]["zone_id"] = "qd-test-school"
    assert app.state.zone_feed.apply("qd-test-school", {"version": 5, "feature": feature})
    assert app.state.routing_feed.apply("rules", {"version": 3, "routing": _rules()})
    return TestClient(app, raise_server_exceptions=False)


def _put_zone(client: TestClient, headers: dict | None = None, **body: object):
    return client.put(ZONE, json={**copy.deepcopy(SCHOOL), **body},
                      headers={**ADMIN, **(headers or {})})


def test_the_reads_carry_the_version_as_etag(client: TestClient) -> None:
    one = client.get(ZONE, headers=VIEWER)
    assert one.headers["etag"] == '"5"' and one.json()["version"] == 5
    every = client.get("/v1/zones", headers=VIEWER)
    assert every.headers["etag"] == '"5"' and every.json()["version"] == 5
    versions = {f["properties"]["zone_id"]: f["version"] for f in every.json()["features"]}
    assert versions["qd-test-school"] == 5 and versions["jn-flood-old-city"] == 1
    rules = client.get("/v1/routing", headers=VIEWER)
    assert rules.headers["etag"] == '"3"' and rules.json()["version"] == 3


READS = (("/v1/zones/qd-test-school", "5"), ("/v1/zones", "5"), ("/v1/routing", "3"))


@pytest.mark.parametrize(("path", "current"), READS)
@pytest.mark.parametrize("sent", ['"{v}"', 'W/"{v}"', '"1", "{v}"', 'W/"2" , W/"{v}"', "*"])
def test_a_read_whose_if_none_match_names_its_etag_is_304_without_a_body(
        client: TestClient, path: str, current: str, sent: str) -> None:
    """It was a 200 with the whole body every time (If-None-Match was ignored on reads)."""
    answer = client.get(path, headers={**VIEWER, "If-None-Match": sent.format(v=current)})
    assert answer.status_code == 304, answer.text
    assert answer.content == b"" and "content-type" not in answer.headers
    assert answer.headers["etag"] == f'"{current}"'
    assert answer.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(("path", "current"), READS)
def test_a_read_whose_if_none_match_names_another_etag_is_answered_whole(
        client: TestClient, path: str, current: str) -> None:
    """A version other than the current one (or a list of them), and If-Modified-Since,
    which nothing here supports (no answer has a Last-Modified), are a 200 with the body."""
    for headers in ({"If-None-Match": '"2", W/"4"'}, {"If-None-Match": '"52"'},
                    {"If-Modified-Since": "Sun, 01 Nov 2099 00:00:00 GMT"}, {}):
        answer = client.get(path, headers={**VIEWER, **headers})
        assert answer.status_code == 200 and answer.json()["version"] == int(current), headers
        assert answer.headers["etag"] == f'"{current}"'
        assert answer.headers["cache-control"] == "no-cache"


def test_a_changed_zone_is_answered_whole_to_the_etag_it_had(client: TestClient) -> None:
    before = client.get(ZONE, headers=VIEWER)
    feature = copy.deepcopy(SCHOOL)
    feature["properties"].update(zone_id="qd-test-school", name="青岛某中学（新）")
    assert client.app.state.zone_feed.apply("qd-test-school", {"version": 6, "feature": feature})
    for path in (ZONE, "/v1/zones"):
        after = client.get(path, headers={**VIEWER, "If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] == '"6"', path
    assert after.json()["version"] == 6
    assert client.get(ZONE, headers={**VIEWER, "If-None-Match": '"6"'}).status_code == 304


def test_if_none_match_on_a_zone_that_does_not_exist_is_404(client: TestClient) -> None:
    """RFC 9110 §13.2.1: a read that would be no 2xx ignores its preconditions."""
    answer = client.get("/v1/zones/no-such-zone", headers={**VIEWER, "If-None-Match": "*"})
    assert answer.status_code == 404


@pytest.mark.parametrize("value", ["5", '"5', "", 'W/5'])
def test_a_malformed_if_none_match_on_a_read_is_400(client: TestClient, value: str) -> None:
    answer = client.get(ZONE, headers={**VIEWER, "If-None-Match": value})
    assert answer.status_code == 400, answer.text
    assert "If-None-Match" in answer.json()["detail"] and '"7"' in answer.json()["detail"]


def test_the_304_is_in_the_openapi_of_each_read(client: TestClient) -> None:
    paths = client.app.openapi()["paths"]
    for path in ("/v1/zones/{zone_id}", "/v1/zones", "/v1/routing"):
        answers = paths[path]["get"]["responses"]
        assert {"200", "304", "400"} <= set(answers), path
        assert "If-None-Match" in answers["200"]["headers"]["ETag"]["description"]


@pytest.mark.parametrize(("method", "path", "current", "what"), [
    ("PUT", ZONE, 5, "zone 'qd-test-school'"),
    ("DELETE", ZONE, 5, "zone 'qd-test-school'"),
    ("PUT", "/v1/routing", 3, "the routing document"),
])
def test_if_match_of_an_older_version_is_412_naming_the_current_one(
        client: TestClient, method: str, path: str, current: int, what: str) -> None:
    body = _rules() if "routing" in path else (SCHOOL if method == "PUT" else None)
    stale = client.request(method, path, json=body, headers={**ADMIN, "If-Match": '"2"'})
    assert stale.status_code == 412, stale.text
    assert stale.headers["etag"] == f'"{current}"'
    assert stale.json()["detail"].startswith(
        f'{what} is at version {current}, not "2" (If-Match): it changed since you read it; '
        f"GET it again, apply your change to what it is now, and send "
        f'If-Match: "{current}"'), stale.json()["detail"]
    for tags in (f'"{current}"', f'"1", "{current}"', "*"):
        held = client.request(method, path, json=body, headers={**ADMIN, "If-Match": tags})
        assert held.status_code == 503 and WRITTEN in held.text, (tags, held.text)
    # Without If-Match the write goes on, as before.
    plain = client.request(method, path, json=body, headers=ADMIN)
    assert plain.status_code == 503 and WRITTEN in plain.text


def test_a_weak_tag_never_matches(client: TestClient) -> None:
    """If-Match compares strongly (RFC 9110 §13.1.1)."""
    answer = _put_zone(client, {"If-Match": 'W/"5"'})
    assert answer.status_code == 412
    assert answer.json()["detail"] == (
        "zone 'qd-test-school' is at version 5, but If-Match names it weak, W/\"5\", and a "
        'weak tag never matches (If-Match compares strongly); send If-Match: "5"')
    answer = _put_zone(client, {"If-Match": 'W/"4"'})
    assert answer.status_code == 412 and 'not W/"4"' in answer.json()["detail"]


def test_a_zone_412_says_the_collections_etag_is_not_the_zones(client: TestClient) -> None:
    client.app.state.zone_feed.apply("qd-other", {"version": 9, "feature": {
        **SCHOOL, "properties": {**SCHOOL["properties"], "zone_id": "qd-other"},
        "geometry": {"type": "Polygon", "coordinates": [[[120.390, 36.060], [120.394, 36.060],
                                                         [120.394, 36.063], [120.390, 36.063],
                                                         [120.390, 36.060]]]}}})
    assert client.get("/v1/zones", headers=VIEWER).headers["etag"] == '"9"'
    answer = _put_zone(client, {"If-Match": '"9"'})
    assert answer.status_code == 412
    assert "the zones' 9, the ETag of GET /v1/zones, is the whole set's" in answer.text


def test_the_bodys_version_is_honoured_as_if_match(client: TestClient) -> None:
    """It was ignored without a word: a stale GET-modify-PUT round trip replaced the zone."""
    stale = _put_zone(client, version=4)
    assert stale.status_code == 412, stale.text
    assert stale.json()["detail"].startswith(
        "zone 'qd-test-school' is at version 5, not 4 (the body's 'version'): it changed "
        "since you read it; GET it again, apply your change to what it is now, and send "
        "'version': 5"), stale.text
    assert _put_zone(client, version=5).status_code == 503
    assert _put_zone(client, {"If-Match": '"5"'}, version=5).status_code == 503
    # The routing document likewise (it was a 422 "unknown table 'version'").
    assert client.put("/v1/routing", json={**_rules(), "version": 2},
                      headers=ADMIN).status_code == 412
    assert client.put("/v1/routing", json={**_rules(), "version": 3},
                      headers=ADMIN).status_code == 503


@pytest.mark.parametrize("version", ["5", 5.0, -1, 2**53, True, None])
def test_a_body_version_that_is_no_version_is_422(client: TestClient, version: object) -> None:
    answer = _put_zone(client, version=version)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(
        "'version' of zone 'qd-test-school' must be the version you read (a whole number "
        "from 0 to 9007199254740991, as GET gives it), or left out"), answer.text


def test_a_body_version_and_an_if_match_that_differ_are_422(client: TestClient) -> None:
    answer = _put_zone(client, {"If-Match": '"4"'}, version=5)
    assert answer.status_code == 422
    assert answer.json()["detail"] == ("the body's 'version' 5 is not the version If-Match "
                                       'names ("4"); send the version you read in one of them')


def test_star_and_if_none_match_on_a_zone_that_does_not_exist(client: TestClient) -> None:
    new = "/v1/zones/qd-new-school"
    body = {**SCHOOL, "properties": {**SCHOOL["properties"]}}
    star = client.put(new, json=body, headers={**ADMIN, "If-Match": "*"})
    assert star.status_code == 412 and "etag" not in star.headers
    assert star.json()["detail"] == ("zone 'qd-new-school' does not exist now (If-Match: * "
                                     "asks that it does); leave If-Match out to create it")
    gone = client.put(new, json=body, headers={**ADMIN, "If-Match": '"5"'})
    assert gone.status_code == 412 and "it was deleted since you read it" in gone.text
    # If-None-Match: * creates, never replaces: two admins creating one zone.
    created = client.put(new, json=body, headers={**ADMIN, "If-None-Match": "*"})
    assert created.status_code == 503 and WRITTEN in created.text
    taken = _put_zone(client, {"If-None-Match": "*"})
    assert taken.status_code == 412 and taken.headers["etag"] == '"5"'
    assert taken.json()["detail"].startswith("zone 'qd-test-school' exists, at version 5 "
                                             "(If-None-Match: * asks that it does not exist")


def test_a_delete_of_no_zone_is_404_whatever_if_match_says(client: TestClient) -> None:
    """RFC 9110 §13.2.1: preconditions are ignored when the answer without them is no 2xx."""
    answer = client.delete("/v1/zones/no-such-zone", headers={**ADMIN, "If-Match": '"5"'})
    assert answer.status_code == 404


@pytest.mark.parametrize("value", ["5", '"5', "", '"5";', 'W/5'])
def test_a_malformed_if_match_is_400_saying_what_to_send(client: TestClient,
                                                        value: str) -> None:
    answer = _put_zone(client, {"If-Match": value})
    assert answer.status_code == 400, answer.text
    assert "If-Match" in answer.json()["detail"] and '"7"' in answer.json()["detail"]


def test_the_ledger_counts_own_writes_until_they_are_read_back() -> None:
    from types import SimpleNamespace

    from api.write_ledger import WriteLedger

    follower = SimpleNamespace(positions={0: 10})
    ledger = WriteLedger(follower)
    ledger.note("a", 0, 10, 7)
    ledger.note("b", 0, 11, 8, exists=False)
    assert (ledger.current("a", 5), ledger.current("b", 6), ledger.current("c", 4)) == (7, None, 4)
    assert ledger.top(6) == 8
    follower.positions = {0: 11}  # read "a" back: what the follower applied counts again
    assert (ledger.current("a", 7), ledger.current("b", 6), ledger.top(7)) == (7, None, 8)
    follower.positions = {0: 12}
    assert (ledger.current("b", None), ledger.top(8)) == (None, 8)


def test_what_get_routing_gives_can_be_sent_back(client: TestClient) -> None:
    """GET /v1/routing lists ``rules`` with a ``number`` and null reasons; sent back to PUT
    as it came (with its version) it was a 422 "unknown table 'rules'"."""
    got = client.get("/v1/routing", headers=VIEWER).json()
    assert got["rules"] and got["rules"][0]["number"] == 1
    answer = client.put("/v1/routing", json=got, headers=ADMIN)
    assert answer.status_code == 503 and WRITTEN in answer.json()["detail"], answer.text
    # The same rules as the file's shape gives them.
    from api.routes.zones import routing_document
    from cityagent.routing import Router
    doc = routing_document({key: value for key, value in got.items() if key != "version"})
    assert Router.from_dict(doc) == Router.from_dict(_rules())
    # Its version is honoured, and a changed rule is still checked.
    stale = client.put("/v1/routing", json={**got, "version": 2}, headers=ADMIN)
    assert stale.status_code == 412, stale.text
    got["rules"][0]["min_severity"] = "purple"
    bad = client.put("/v1/routing", json=got, headers=ADMIN)
    assert bad.status_code == 422 and "rule #1" in bad.json()["detail"], bad.text
    both = client.put("/v1/routing", json={**_rules(), "rules": got["rules"]}, headers=ADMIN)
    assert both.status_code == 422 and "send one of them" in both.json()["detail"], both.text
    odd = client.put("/v1/routing", json={**got, "rules": {"a": 1}}, headers=ADMIN)
    assert odd.status_code == 422 and "must be a list" in odd.json()["detail"], odd.text


# -- maintenance windows ---------------------------------------------------------------------

WINDOW = "/v1/maintenance/jn-gauges"


def _window(note: str = "检修 gauge cleaning") -> dict:
    now_ms = time.time_ns() // 1_000_000
    return {"sensor": "jn-wl-*", "start_ms": now_ms - 3_600_000, "end_ms": now_ms + 3_600_000,
            "note": note}


@pytest.fixture
def windows(client: TestClient) -> TestClient:
    """The API of ``client`` with the window jn-gauges read at offset 7 of the topic."""
    assert client.app.state.maintenance_feed.apply("jn-gauges", _window(), version=7)
    return client


def test_each_window_is_listed_with_its_version_and_the_list_with_an_etag(
        windows: TestClient) -> None:
    """Windows had no version: two admins extending one window both got 202, the later
    silently replacing the earlier, and nothing could have told them."""
    listed = windows.get("/v1/maintenance", headers=VIEWER)
    assert listed.json()["windows"]["jn-gauges"]["version"] == 7
    assert listed.json()["windows"]["jn-gauges"]["status"] == "in_force"
    tag = listed.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{20}"', tag) and listed.headers["cache-control"] == "no-cache"
    again = windows.get("/v1/maintenance", headers={**VIEWER, "If-None-Match": f"W/{tag}"})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    windows.app.state.maintenance_feed.apply("jn-gauges", _window("extended"), version=9)
    changed = windows.get("/v1/maintenance", headers={**VIEWER, "If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert changed.json()["windows"]["jn-gauges"]["version"] == 9


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_a_window_write_from_an_older_version_is_412_naming_the_current_one(
        windows: TestClient, method: str) -> None:
    body = _window() if method == "PUT" else None
    stale = windows.request(method, WINDOW, json=body, headers={**ADMIN, "If-Match": '"6"'})
    assert stale.status_code == 412, stale.text
    assert stale.headers["etag"] == '"7"'
    assert stale.json()["detail"].startswith(
        "maintenance window 'jn-gauges' is at version 7, not \"6\" (If-Match): it changed "
        "since you read it; GET it again, apply your change to what it is now, and send "
        'If-Match: "7"'), stale.text
    for tags in ('"7"', '"6", "7"', "*"):
        held = windows.request(method, WINDOW, json=body, headers={**ADMIN, "If-Match": tags})
        assert held.status_code == 503 and WRITTEN in held.text, (tags, held.text)
    plain = windows.request(method, WINDOW, json=body, headers=ADMIN)
    assert plain.status_code == 503 and WRITTEN in plain.text


def test_a_windows_body_version_is_honoured_as_if_match(windows: TestClient) -> None:
    """It was a 422 "unknown field(s) ['version']"."""
    stale = windows.put(WINDOW, json={**_window(), "version": 6}, headers=ADMIN)
    assert stale.status_code == 412, stale.text
    assert "is at version 7, not 6 (the body's 'version')" in stale.json()["detail"]
    assert windows.put(WINDOW, json={**_window(), "version": 7},
                       headers=ADMIN).status_code == 503
    bad = windows.put(WINDOW, json={**_window(), "version": "7"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["detail"].startswith(
        "'version' of maintenance window 'jn-gauges' must be the version you read")


def test_if_none_match_star_creates_a_window_never_replaces_one(windows: TestClient) -> None:
    taken = windows.put(WINDOW, json=_window(), headers={**ADMIN, "If-None-Match": "*"})
    assert taken.status_code == 412 and taken.headers["etag"] == '"7"'
    assert taken.json()["detail"].startswith("maintenance window 'jn-gauges' exists, at "
                                             "version 7 (If-None-Match: * asks that it does not")
    new = windows.put("/v1/maintenance/jn-new", json=_window(),
                      headers={**ADMIN, "If-None-Match": "*"})
    assert new.status_code == 503 and WRITTEN in new.text
    missing = windows.put("/v1/maintenance/jn-new", json=_window(),
                          headers={**ADMIN, "If-Match": '"7"'})
    assert missing.status_code == 412 and "does not exist now" in missing.text
    # A delete of a window that does not exist is a 404 whatever If-Match says.
    assert windows.delete("/v1/maintenance/jn-new",
                          headers={**ADMIN, "If-Match": '"7"'}).status_code == 404


def test_the_lists_etag_as_if_match_says_it_is_no_windows_version(windows: TestClient) -> None:
    tag = windows.get("/v1/maintenance", headers=VIEWER).headers["etag"]
    answer = windows.put(WINDOW, json=_window(), headers={**ADMIN, "If-Match": tag})
    assert answer.status_code == 412
    assert answer.json()["detail"].endswith(
        "(a window's version is its 'version' in GET /v1/maintenance; the ETag of that list "
        "names the whole list)")


class _Writer:
    """Kafka's acknowledgements, one offset after another, of a topic no one reads here."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    async def send_value(self, _key: str, _value: bytes, _what: str) -> tuple[int, int]:
        self.offset += 1
        return 0, self.offset

    async def send_tombstone(self, key: str) -> tuple[int, int]:
        return await self.send_value(key, b"", "")


def test_a_window_written_and_not_read_back_counts(windows: TestClient) -> None:
    """The follower reads a write back some 0.25 s after it; until then a DELETE of the
    window just created was a 404 (it looked at what was read only), and now the write
    counts: its version is Kafka's offset for it, given in the 202."""
    windows.app.state.maintenance_writer = _Writer(19)
    created = windows.put("/v1/maintenance/jn-new", json=_window(),
                          headers={**ADMIN, "If-None-Match": "*"})
    assert created.status_code == 202 and created.json() == {
        "window_id": "jn-new", "version": 20, "status": "queued"}
    again = windows.put("/v1/maintenance/jn-new", json=_window(),
                        headers={**ADMIN, "If-None-Match": "*"})
    assert again.status_code == 412 and again.headers["etag"] == '"20"'
    first = windows.put(WINDOW, json=_window("first"), headers={**ADMIN, "If-Match": '"7"'})
    assert first.status_code == 202 and first.json()["version"] == 21
    second = windows.put(WINDOW, json=_window("second"), headers={**ADMIN, "If-Match": '"7"'})
    assert second.status_code == 412 and 'is at version 21, not "7"' in second.json()["detail"]
    gone = windows.delete("/v1/maintenance/jn-new", headers={**ADMIN, "If-Match": '"20"'})
    assert gone.status_code == 202 and gone.json()["version"] == 22
    assert windows.delete("/v1/maintenance/jn-new", headers=ADMIN).status_code == 404


def test_a_windows_version_is_the_offset_of_its_record() -> None:
    from types import SimpleNamespace

    from streams.maintenance_feed import MaintenanceFeed

    feed = MaintenanceFeed("127.0.0.1:9", "t.maintenance")
    record = SimpleNamespace(partition=0, offset=12, key=b"jn-gauges",
                             value=orjson.dumps(_window()))
    feed.follower._apply({0: [record]})  # the follower gives each window its record's offset
    assert feed.versions == {"jn-gauges": 12} and feed.windows[0].sensor == "jn-wl-*"
    feed.follower._apply({0: [SimpleNamespace(partition=0, offset=13, key=b"jn-gauges",
                                              value=None)]})
    assert feed.versions == {} and feed.windows == ()


def test_a_boundary_file_is_304_to_its_etag_made_weak_by_a_proxy() -> None:
    """nginx with gzip on makes the ETag weak (W/"..."), and the browser sends that back: the
    exact comparison answered it the whole file (Jinan's districts: 72 KB) every time."""
    app = create_app(Settings(api_keys="viewer:view-key", kafka="127.0.0.1:9"))
    client = TestClient(app)
    first = client.get("/geo/370100.json")
    tag = first.headers["etag"]
    for sent in (tag, f"W/{tag}", f'"x", {tag}'):
        again = client.get("/geo/370100.json", headers={"If-None-Match": sent})
        assert again.status_code == 304 and again.content == b"", sent
    assert client.get("/geo/370100.json", headers={"If-None-Match": '"x"'}).status_code == 200
