"""Page cursors of GET /v1/alerts and GET /v1/sensors: what the API gave out pages on, and
anything else is a 422 saying so, never a 500 and never page 1 again.

No Kafka: the app is used without its lifespan, the alert book and the situation model are
filled directly.
"""

from __future__ import annotations

import warnings

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from api.alert_book import encode_cursor
from api.main import create_app
from cityagent.settings import Settings
from tests.api.test_alert_book import MIN, T0, alert_event
from tests.api.test_situation_model import LIXIA, batch

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

AUTH = {"authorization": "Bearer adm-key"}
NOT_OURS = "is not one this API gave out; pass the next_cursor of the previous page unchanged"
ALERT_CURSOR = encode_cursor(T0 + 2 * MIN, "jn-2")
#: Base64 text that decodes (AA: a NUL byte; YQ: "a"; W10: "[]"), a sensor cursor's text with
#: bytes appended, an alert cursor with bytes appended, and text that is no base64 at all.
FOREIGN = ["AA", "YQ", "W10", "WyJzZW5zb3IiLCJqbi0xIl0x", ALERT_CURSOR + "!!",
           ALERT_CURSOR + "AA", "bogus", "%%%", "=", " "]


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = create_app(Settings(api_keys="admin:adm-key", kafka="127.0.0.1:9"))  # never connected
    for k in range(3):
        app.state.alert_book.apply(alert_event(f"jn-{k}", last_seen_ms=T0 + k * MIN))
    app.state.situation.update(batch(*[(f"jn-wl-{k}", "water_level", T0, 1.0, LIXIA)
                                       for k in range(3)]), T0 + MIN)
    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("path, key", [("/v1/alerts", "alerts"), ("/v1/sensors", "sensors")])
def test_the_next_cursor_pages_on(client: TestClient, path: str, key: str) -> None:
    first = client.get(path, params={"limit": 2}, headers=AUTH).json()
    rest = client.get(path, params={"limit": 2, "cursor": first["next_cursor"]},
                      headers=AUTH).json()
    assert len(first[key]) == 2 and len(rest[key]) == 1 and rest["next_cursor"] is None


@pytest.mark.parametrize("path", ["/v1/alerts", "/v1/sensors"])
@pytest.mark.parametrize("cursor", FOREIGN)
def test_a_cursor_this_api_did_not_give_out_is_422(client: TestClient, path: str,
                                                   cursor: str) -> None:
    """/v1/sensors took any base64 text as a sensor id (AA: page 1 again, silently), and
    /v1/alerts a cursor with bytes appended."""
    answer = client.get(path, params={"cursor": cursor}, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert NOT_OURS in answer.json()["detail"]


def test_one_routes_cursor_is_refused_by_the_other(client: TestClient) -> None:
    sensors = client.get("/v1/sensors", params={"limit": 1}, headers=AUTH).json()
    alerts = client.get("/v1/alerts", params={"limit": 1}, headers=AUTH).json()
    for path, cursor in (("/v1/alerts", sensors["next_cursor"]),
                         ("/v1/sensors", alerts["next_cursor"])):
        answer = client.get(path, params={"cursor": cursor}, headers=AUTH)
        assert answer.status_code == 422 and NOT_OURS in answer.json()["detail"], path
