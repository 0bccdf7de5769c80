"""Every route and the roles it admits, checked route by route; and ``GET /v1/me``.

``ROUTES`` lists every route of the API with the requirement it must have and a sample request.
Three checks use it:

* the app has exactly these routes (a route added later fails here until it is listed, with
  the roles it must admit: a write that forgot its requirement cannot slip through);
* each route's dependencies admit exactly the roles of its requirement (read statically from
  the route's dependency tree, router-wide requirements included);
* role × route: no key is 401, a role outside the requirement is 403 with a ``detail`` that
  names the key's role and what the route needs, and an admitted role gets the route's own
  answer. The app runs without its lifespan (nothing connects to Kafka), so a write an
  admitted key may make ends in 503 ("not connected to Kafka") or the route's 404 / 422, and
  the zone, routing and maintenance routes in 503 (their topics are never read).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import fastapi.routing
import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Mount

import api.deps
from api.auth import KeyRing, load_keys_file, parse_api_keys
from api.main import create_app
from api.publisher import ReadingPublisher
from api.schemas import MePublic
from cityagent.regions import default_regions
from cityagent.settings import Settings
from tests.api.test_alert_book import QINGDAO, alert_event

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

KEYS = {"integrator": "int-key", "viewer": "view-key", "operator": "op-key", "admin": "adm-key"}
SCOPED_VIEWER = "wall-jinan-key"
SETTINGS_KEYS = ",".join(f"{role}:{key}" for role, key in KEYS.items()) + \
    f",viewer:{SCOPED_VIEWER}:370100|jn-"
ALERT = "inc-roles-1"
QINGDAO_ALERT = "inc-roles-qd"

#: Who each requirement admits (written out here, not imported: the test is the contract).
ADMITS: dict[str, frozenset[str]] = {
    "public": frozenset({None, *KEYS}),  # no key needed
    "key": frozenset(KEYS),  # any key
    "integrator": frozenset({"integrator", "admin"}),
    "viewer": frozenset({"viewer", "operator", "admin"}),
    "operator": frozenset({"operator", "admin"}),
    "admin": frozenset({"admin"}),
}


class Call(NamedTuple):
    """A route's requirement and a sample request: path, JSON body, an admitted key's status."""

    needs: str
    path: str
    status: int
    body: Any = None


_READING = {"sensor_id": "jn-wl-1", "kind": "water_level", "ts": 1795307400, "lon": 117.02,
            "lat": 36.66, "level_m": 2.4}
_ZONE = {"type": "Feature",
         "properties": {"name": "测试", "name_en": "test", "zone_kind": "underpass",
                        "department": "transport"},
         "geometry": {"type": "Polygon", "coordinates": [[[117.030, 36.660], [117.034, 36.660],
                                                          [117.034, 36.663], [117.030, 36.663],
                                                          [117.030, 36.660]]]}}
_WINDOW = {"sensor": "jn-wl-*", "start_ms": 1795400000000, "end_ms": 4_000_000_000_000}

#: Every route of the API: (method, path template) -> Call.
ROUTES: dict[tuple[str, str], Call] = {
    # Anyone: the health routes, the dashboard's page and files, the OpenAPI document and pages.
    ("GET", "/healthz"): Call("public", "/healthz", 200),
    ("HEAD", "/healthz"): Call("public", "/healthz", 200),
    ("GET", "/readyz"): Call("public", "/readyz", 503),  # not connected to Kafka
    ("HEAD", "/readyz"): Call("public", "/readyz", 503),
    ("GET", "/metrics"): Call("public", "/metrics", 200),
    ("GET", "/v1"): Call("public", "/v1", 200),
    ("GET", "/"): Call("public", "/", 200),
    ("HEAD", "/"): Call("public", "/", 200),
    ("GET", "/geo/cities.json"): Call("public", "/geo/cities.json", 200),
    ("GET", "/geo/{city_code}.json"): Call("public", "/geo/370100.json", 200),
    ("GET", "/openapi.json"): Call("public", "/openapi.json", 200),
    ("HEAD", "/openapi.json"): Call("public", "/openapi.json", 200),
    ("GET", "/docs"): Call("public", "/docs", 200),
    ("GET", "/docs/oauth2-redirect"): Call("public", "/docs/oauth2-redirect", 200),
    ("GET", "/redoc"): Call("public", "/redoc", 200),
    # Any key.
    ("GET", "/v1/me"): Call("key", "/v1/me", 200),
    # Integrators post readings.
    ("POST", "/v1/readings"): Call("integrator", "/v1/readings", 503, [_READING]),
    ("POST", "/v1/readings/thingsboard"): Call(
        "integrator", "/v1/readings/thingsboard?sensor_id=jn-wl-1&kind=water_level&lon=117.02"
        "&lat=36.66", 503, {"ts": 1795307400000, "values": {"level_m": 2.4}}),
    # Viewers (and operators, admins) read.
    ("GET", "/v1/alerts"): Call("viewer", "/v1/alerts", 200),
    ("GET", "/v1/alerts/stream"): Call("viewer", "/v1/alerts/stream?last_event_id=x", 422),
    ("GET", "/v1/alerts/{alert_id}"): Call("viewer", f"/v1/alerts/{ALERT}", 200),
    ("GET", "/v1/situation"): Call("viewer", "/v1/situation", 200),
    ("GET", "/v1/situation/{city}"): Call("viewer", "/v1/situation/370100", 200),
    ("GET", "/v1/sensors"): Call("viewer", "/v1/sensors", 200),
    ("GET", "/v1/sensors/{sensor_id}"): Call("viewer", "/v1/sensors/jn-wl-1", 404),
    ("GET", "/v1/sensors/{sensor_id}/readings"): Call("viewer", "/v1/sensors/jn-wl-1/readings",
                                                      404),
    # Unconnected, the API has not read the settings topics: it answers no partial truth.
    ("GET", "/v1/zones"): Call("viewer", "/v1/zones", 503),
    ("GET", "/v1/zones/{zone_id}"): Call("viewer", "/v1/zones/jn-flood-old-city", 503),
    ("GET", "/v1/routing"): Call("viewer", "/v1/routing", 503),
    ("GET", "/v1/maintenance"): Call("viewer", "/v1/maintenance", 503),
    # Operators (and admins) act on alerts.
    ("POST", "/v1/alerts/{alert_id}/ack"): Call("operator", f"/v1/alerts/{ALERT}/ack", 503, {}),
    ("POST", "/v1/alerts/{alert_id}/resolve"): Call("operator", f"/v1/alerts/{ALERT}/resolve",
                                                    503, {}),
    ("POST", "/v1/alerts/{alert_id}/assign"): Call("operator", f"/v1/alerts/{ALERT}/assign", 503,
                                                   {"assignee": "crew 1"}),
    ("POST", "/v1/alerts/{alert_id}/comment"): Call("operator", f"/v1/alerts/{ALERT}/comment",
                                                    503, {"text": "ok"}),
    # Admins configure.
    ("PUT", "/v1/zones/{zone_id}"): Call("admin", "/v1/zones/t-zone", 503, _ZONE),
    ("DELETE", "/v1/zones/{zone_id}"): Call("admin", "/v1/zones/jn-flood-old-city", 503),
    ("PUT", "/v1/routing"): Call("admin", "/v1/routing", 422, {"departments": {}}),
    ("PUT", "/v1/maintenance/{window_id}"): Call("admin", "/v1/maintenance/w1", 503, _WINDOW),
    # Unconnected, the API has not read the maintenance topic: it cannot know the window yet.
    ("DELETE", "/v1/maintenance/{window_id}"): Call("admin", "/v1/maintenance/w1", 503),
}
#: Mounted static files, public: the dashboard's and the API docs' scripts.
MOUNTS = {"/static", "/api-docs-static"}


@pytest.fixture(scope="module")
def app() -> Iterator[fastapi.FastAPI]:
    settings = Settings(api_keys=SETTINGS_KEYS, kafka="127.0.0.1:9")  # never connected
    app = create_app(settings)
    # The lifespan would start it; unstarted, a publish is a 503, as when Kafka is down.
    app.state.publisher = ReadingPublisher(settings.bootstrap, settings.readings_topic)
    app.state.alert_book.apply(alert_event(ALERT))
    app.state.alert_book.apply(alert_event(QINGDAO_ALERT, where=QINGDAO))
    # Settings routes wait for topics this app never reads (api.deps.read_up_to_start): briefly.
    wait, api.deps.FEED_WAIT_S = api.deps.FEED_WAIT_S, 0.05
    try:
        yield app
    finally:
        api.deps.FEED_WAIT_S = wait


@pytest.fixture(scope="module")
def client(app: fastapi.FastAPI) -> TestClient:
    return TestClient(app)


def _route_contexts(app: fastapi.FastAPI) -> list[Any]:
    """The app's routes with their router's requirements, each as served (FastAPI 0.16x keeps
    included routers as one entry of ``app.routes``; older versions copied their routes)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(contexts(app.routes)) if contexts else list(app.routes)


def _admitted_by_dependencies(dependant: Any) -> frozenset[str] | None:
    """The roles every requirement in the dependency tree admits (None: no requirement)."""
    found: list[frozenset[str]] = []

    def walk(node: Any) -> None:
        for sub in node.dependencies:
            admits = getattr(sub.call, "admits", None)
            if admits is not None:
                found.append(frozenset(admits))
            walk(sub)

    walk(dependant)
    return frozenset.intersection(*found) if found else None


def _served(app: fastapi.FastAPI) -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) of every route, and the paths of the mounts."""
    served, mounts = set(), set()
    for route in _route_contexts(app):
        if isinstance(getattr(route, "original_route", route), Mount):
            mounts.add(route.path)
            continue
        for method in route.methods:
            served.add((method, route.path))
    return served, mounts


def test_the_table_lists_every_route_of_the_app(app: fastapi.FastAPI) -> None:
    served, mounts = _served(app)
    missing = sorted(served - set(ROUTES))
    assert not missing, f"routes without a line in ROUTES (say who may call them): {missing}"
    assert sorted(set(ROUTES) - served) == [], "ROUTES lists routes the app does not have"
    assert mounts == MOUNTS


def test_a_route_added_to_a_router_is_seen() -> None:
    """The check above sees routes of included routers, hidden ones too (FastAPI keeps them
    inside the router's entry of app.routes): a new write without a line would be caught."""
    app = create_app(Settings(api_keys="admin:a", kafka="127.0.0.1:9"))
    router = fastapi.APIRouter()

    @router.post("/v1/alerts/{alert_id}/escalate", include_in_schema=False)
    async def escalate(alert_id: str) -> None: ...

    app.include_router(router)
    assert _served(app)[0] ^ set(ROUTES) == {("POST", "/v1/alerts/{alert_id}/escalate")}


def test_every_route_admits_exactly_the_roles_of_its_requirement(app: fastapi.FastAPI) -> None:
    for route in _route_contexts(app):
        dependant = getattr(route, "dependant", None)
        if dependant is None:  # a mount or a plain Starlette route: public
            assert all(ROUTES[(m, route.path)].needs == "public"
                       for m in getattr(route, "methods", None) or ()), route.path
            continue
        admitted = _admitted_by_dependencies(dependant)
        for method in route.methods:
            needs = ROUTES[(method, route.path)].needs
            if needs == "public":
                assert admitted is None, f"{method} {route.path} asks for a key"
            else:
                assert admitted == ADMITS[needs], (
                    f"{method} {route.path}: admits {sorted(admitted or ['anyone'])}, "
                    f"should admit {sorted(ADMITS[needs])}")


CASES = [(method, template, role) for (method, template) in ROUTES
         for role in (None, *KEYS)]


@pytest.mark.parametrize("method, template, role", CASES,
                         ids=[f"{m} {t} as {r or 'nobody'}" for m, t, r in CASES])
def test_role_by_route(client: TestClient, method: str, template: str, role: str | None) -> None:
    call = ROUTES[(method, template)]
    headers = {"authorization": f"Bearer {KEYS[role]}"} if role else {}
    answer = client.request(method, call.path, headers=headers,
                            json=call.body if call.body is not None else None)
    if role in ADMITS[call.needs]:
        assert answer.status_code == call.status, answer.text
    elif role is None:
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"detail": "missing API key: send Authorization: Bearer KEY"}
    else:
        assert answer.status_code == 403, answer.text
        detail = answer.json()["detail"]
        needs = sorted(ADMITS[call.needs], key=["integrator", "viewer", "operator",
                                                "admin"].index)
        assert detail.startswith(f"this {role} key k"), detail
        assert detail.endswith(f"{method} {call.path.split('?')[0]} needs "
                               f"{'an' if needs[0][0] in 'aeiou' else 'a'} "
                               f"{', '.join(needs[:-1]) + ' or ' if len(needs) > 1 else ''}"
                               f"{needs[-1]} key"), detail
        if role == "viewer":
            assert "change nothing (a read-only key)" in detail, detail


def _with_stray(path: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}zz=1"


@pytest.mark.parametrize("method, template, role", CASES,
                         ids=[f"{m} {t} as {r or 'nobody'}" for m, t, r in CASES])
def test_the_key_is_checked_before_the_request_itself(client: TestClient, method: str,
                                                      template: str, role: str | None) -> None:
    """401, then 403, then what is wrong with the request (api.request_checks): an XML body
    and a query parameter no route takes. Before, a client without a key was told 415 and
    422 (the type this route takes, which parameters it has) ahead of its 401."""
    call = ROUTES[(method, template)]
    headers = {"authorization": f"Bearer {KEYS[role]}"} if role else {}
    writes = method in ("POST", "PUT", "DELETE")
    answer = client.request(method, _with_stray(call.path), content=b"<a/>" if writes else None,
                            headers={**headers, "content-type": "application/xml"})
    if role not in ADMITS[call.needs]:
        assert answer.status_code == (401 if role is None else 403), answer.text
    elif template == "/openapi.json":  # FastAPI's own Starlette route: no dependencies run
        assert answer.status_code == call.status, answer.text
    elif writes and not template.startswith("/v1/readings"):
        assert answer.status_code == 415, answer.text  # the body before the query
    else:  # ingest judges its body in the route, after the query check
        assert answer.status_code == 422, answer.text
        assert method == "HEAD" or "unknown query parameter 'zz'" in answer.text


@pytest.mark.parametrize("role", [None, "admin"])
def test_no_such_path_is_404_and_a_method_it_does_not_take_405_whatever_the_request(
        client: TestClient, role: str | None) -> None:
    """Routing first: an XML body to an unknown path was a 415."""
    headers = {"content-type": "application/xml",
               **({"authorization": f"Bearer {KEYS[role]}"} if role else {})}
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        for path in ("/v1/nonexistent?zz=1", "/v1/zones/a/b", "/no/such/path"):
            answer = client.request(method, path, content=b"<a/>", headers=headers)
            assert answer.status_code == 404, (method, path, answer.text)
    for method, path in (("POST", "/v1/zones"), ("PATCH", "/v1/zones/x?zz=1"),
                         ("PUT", "/v1/readings"), ("POST", "/healthz"),
                         ("DELETE", "/v1/alerts"), ("POST", "/static/app.js")):
        answer = client.request(method, path, content=b"<a/>", headers=headers)
        assert answer.status_code == 405, (method, path, answer.text)


# -- GET /v1/me ------------------------------------------------------------------------------


@pytest.mark.parametrize("role, may", [
    ("integrator", ["ingest"]), ("viewer", ["read"]), ("operator", ["read", "act"]),
    ("admin", ["ingest", "read", "act", "configure"]),
])
def test_me_says_who_the_key_is_and_what_it_may_do(client: TestClient, role: str,
                                                   may: list[str]) -> None:
    answer = client.get("/v1/me", headers={"authorization": f"Bearer {KEYS[role]}"})
    assert answer.status_code == 200, answer.text
    digest = hashlib.sha256(KEYS[role].encode()).hexdigest()
    assert answer.json() == {"role": role, "key_id": f"k{digest[:8]}", "scope": None, "may": may}
    MePublic.model_validate(answer.json())
    assert KEYS[role] not in answer.text


def test_me_gives_a_scoped_keys_cities_and_prefixes(client: TestClient) -> None:
    answer = client.get("/v1/me", headers={"authorization": f"Bearer {SCOPED_VIEWER}"})
    assert answer.json()["scope"] == {"cities": ["370100"], "sensor_prefixes": ["jn-"]}
    assert answer.json()["may"] == ["read"]
    # The scope limits what the viewer reads, as it does an operator's.
    headers = {"authorization": f"Bearer {SCOPED_VIEWER}"}
    assert client.get(f"/v1/alerts/{ALERT}", headers=headers).status_code == 200
    hidden = client.get(f"/v1/alerts/{QINGDAO_ALERT}", headers=headers)
    assert hidden.status_code == 404 and "in the cities of this key" in hidden.text
    listed = client.get("/v1/alerts", headers=headers).json()["alerts"]
    assert [a["alert_id"] for a in listed] == [ALERT]


def test_me_is_401_without_a_key_or_with_an_unknown_one(client: TestClient) -> None:
    assert client.get("/v1/me").status_code == 401
    wrong = client.get("/v1/me", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"].startswith("invalid API key")


def test_me_is_documented_with_its_key_and_an_example(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    operation = doc["paths"]["/v1/me"]["get"]
    assert operation["security"] == [{"APIKey": []}]
    assert operation["summary"] and operation["description"] and operation["tags"] == ["keys"]
    assert set(operation["responses"]) >= {"200", "401"}
    schema = doc["components"]["schemas"]["MePublic"]
    assert schema["examples"][0]["may"] == ["read"]
    assert set(schema["properties"]["may"]["items"]["enum"]) == {"ingest", "read", "act",
                                                                 "configure"}


# -- viewer keys are configured like operator keys -------------------------------------------

CITIES = {c.code for c in default_regions().cities}


def test_viewer_keys_in_the_environment_plain_hashed_and_scoped() -> None:
    digest = hashlib.sha256(b"wall-screen").hexdigest()
    ring = KeyRing(parse_api_keys(f"viewer:tablet-key,viewer:sha256:{digest}:370100|jn-",
                                  CITIES))
    tablet, wall = ring.authenticate("tablet-key"), ring.authenticate("wall-screen")
    assert tablet is not None and tablet.role == "viewer" and not tablet.scoped
    assert wall is not None and wall.role == "viewer" and wall.scopes == ("370100", "jn-")


def test_viewer_keys_in_the_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nrole = "viewer"\nkey = "leader-tablet"\nscope = ["370200"]\n'
                    'name = "leader-tablet-qd"\n')
    (key,) = load_keys_file(path, CITIES)
    assert (key.role, key.key_id, key.cities) == ("viewer", "leader-tablet-qd",
                                                  frozenset({"370200"}))
