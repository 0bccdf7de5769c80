"""What a request may be, whatever the route: a body of a route other than ingest is limited
(and one over the limit is not read), and must be JSON when it says so, both answered after the
path and the key are checked; keys that end in a line break are refused; HEAD is answered where
probes use it."""

from __future__ import annotations

import warnings

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from api.main import create_app
from api.strict_json import MAX_BODY_BYTES
from cityagent.settings import Settings

with warnings.catch_warnings():  # starlette asks for httpx2, which is not in our dependencies
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(Settings(api_keys="admin:adm-key", kafka="127.0.0.1:9")))


ADMIN = {"authorization": "Bearer adm-key"}


@pytest.mark.parametrize("path", ["/v1/alerts/x/ack", "/v1/zones/big"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_a_body_over_the_limit_is_413_after_the_key(client: TestClient, path: str,
                                                    content_type: str) -> None:
    body = b"[" + b"1," * (MAX_BODY_BYTES // 2) + b"1]"
    method = "PUT" if "zones" in path else "POST"
    answer = client.request(method, path, content=body,
                            headers={"content-type": content_type, **ADMIN})
    assert answer.status_code == 413, answer.text
    assert f"{len(body):,} bytes" in answer.json()["detail"]
    assert "1 MiB" in answer.json()["detail"]
    # Without a key: the 401, as on every route (it was the 413, before the key).
    answer = client.request(method, path, content=body, headers={"content-type": content_type})
    assert answer.status_code == 401, answer.text
    # No such path: 404 (it was the 413).
    answer = client.request(method, "/no/such/path", content=body, headers=ADMIN)
    assert answer.status_code == 404, answer.text


@pytest.mark.parametrize("key", [None, "adm-key"])
def test_a_body_declared_over_the_limit_is_not_read(client: TestClient, key: str | None) -> None:
    """Content-Length over 1 MiB: answered without reading the body, with a key or without."""
    import asyncio

    answers: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        answers.append(message)

    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "method": "PUT", "path": "/v1/zones/big", "raw_path": b"/v1/zones/big",
             "root_path": "", "scheme": "http", "query_string": b"", "headers": headers,
             "server": ("testserver", 80), "client": ("testclient", 5000),
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    asyncio.run(client.app(scope, receive, send))
    assert answers[0]["status"] == (413 if key else 401)


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    answer = client.post("/v1/alerts/x/ack", content=chunks(),
                         headers={"content-type": "application/json", **ADMIN})
    assert answer.status_code == 413, answer.text
    assert "over 1,048,576 bytes" in answer.json()["detail"]


def test_a_body_at_the_limit_reaches_the_route(client: TestClient) -> None:
    body = b'{"note": "' + b"x" * (MAX_BODY_BYTES - 12) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    answer = client.post("/v1/alerts/x/ack", content=body,
                         headers={"content-type": "application/json"})
    assert answer.status_code == 401  # the key check, not the size



def test_an_idempotency_key_with_a_final_newline_is_refused() -> None:
    from api.idempotency import valid_key

    assert valid_key("k1") and not valid_key("k1\n")


@pytest.mark.parametrize(("body", "words"), [
    (b'{"note":', "not JSON"),
    (b'{"note": "\xff\xfe"}', "not JSON"),
    (b'{"note": NaN}', "not strict JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
])
def test_a_body_declared_json_that_is_not_is_400_saying_why(client: TestClient, body: bytes,
                                                           words: str) -> None:
    answer = client.post("/v1/alerts/x/ack", content=body,
                         headers={"content-type": "application/json",
                                  "authorization": "Bearer adm-key"})
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["detail"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/"])
def test_head_answers_as_get_without_a_body(client: TestClient, path: str) -> None:
    """Load balancers probe with HEAD; it was 405."""
    head, get = client.head(path), client.get(path)
    assert head.status_code == get.status_code != 405
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


@pytest.mark.parametrize(("path", "asset"), [("/docs", "swagger-ui-bundle.js"),
                                             ("/redoc", "redoc.standalone.js")])
def test_the_api_docs_load_nothing_from_other_hosts(client: TestClient, path: str,
                                                    asset: str) -> None:
    """FastAPI's pages load Swagger UI/ReDoc from cdn.jsdelivr.net and fonts from Google:
    blank pages offline and, often, in mainland China."""
    import re

    page = client.get(path)
    assert page.status_code == 200
    assert re.findall(r"https?://", page.text) == []
    src = re.search(rf'"([^"]*/{re.escape(asset)})"', page.text).group(1)
    script = client.get(src)
    assert script.status_code == 200 and len(script.content) > 100_000


@pytest.mark.parametrize(("path", "query", "hint"), [
    ("/v1/alerts", "stauts=open", "did you mean 'status'?"),
    ("/v1/alerts/stream", "citty=370100", "did you mean 'city'?"),
    ("/v1/situation", "city=370100", "it takes format"),
])
def test_a_query_parameter_the_route_does_not_take_is_422_naming_it(
        client: TestClient, path: str, query: str, hint: str) -> None:
    # FastAPI ignores them: ?stauts=open listed every alert, resolved ones too, and the
    # stream with ?citty= sent the whole province.
    answer = client.get(f"{path}?{query}", headers={"Authorization": "Bearer adm-key"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    unknown = query.split("=")[0]
    assert detail.startswith(f"unknown query parameter {unknown!r}"), detail
    assert hint in detail and path in detail


def test_a_route_without_query_parameters_says_it_takes_none(client: TestClient) -> None:
    answer = client.get("/healthz?verbose=1")
    assert answer.status_code == 422
    assert "/healthz does not take it; it takes no query parameters" in answer.json()["detail"]


def test_several_unknown_query_parameters_are_named_together(client: TestClient) -> None:
    answer = client.get("/v1/situation?status=open&city=370100&format=json",
                        headers={"Authorization": "Bearer adm-key"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == ("unknown query parameters 'status', 'city': GET "
                                       "/v1/situation takes none of them; it takes format")


def test_query_parameters_a_route_takes_pass_the_check(client: TestClient) -> None:
    # No key: the route's own 401 answers, not the query check's 422.
    answer = client.get("/v1/alerts?status=open&status=acknowledged&limit=5&city=370100")
    assert answer.status_code == 401, answer.text
    # A dependency's parameters (the alert filters) count as the stream's own.
    answer = client.get("/v1/alerts/stream?severity=red&heartbeat_s=5")
    assert answer.status_code == 401, answer.text


def test_parameters_taken_only_to_be_refused_are_not_offered(client: TestClient) -> None:
    # The stream takes limit and cursor only to refuse them with their own reason.
    answer = client.get("/v1/alerts/stream?citty=370100", headers={"Authorization": "Bearer adm-key"})
    assert "cursor" not in answer.json()["detail"] and "limit" not in answer.json()["detail"]
    answer = client.get("/v1/alerts/stream?limit=10", headers={"Authorization": "Bearer adm-key"})
    assert answer.status_code == 422 and "Last-Event-ID" in answer.json()["detail"]


# -- Content-Type of the routes other than ingest ------------------------------------------

_JSON_WRITES = [("PUT", "/v1/zones/qd-test-school"), ("PUT", "/v1/routing"),
                ("PUT", "/v1/maintenance/w1"), ("POST", "/v1/alerts/x/ack"),
                ("POST", "/v1/alerts/x/resolve"), ("POST", "/v1/alerts/x/assign"),
                ("POST", "/v1/alerts/x/comment")]


@pytest.mark.parametrize(("method", "path"), _JSON_WRITES)
@pytest.mark.parametrize("content_type", ["application/xml", "application/x-www-form-urlencoded",
                                          "text/csv; charset=utf-8", "application/x-ndjson"])
def test_a_body_declared_not_json_is_415_naming_the_types_taken(
        client: TestClient, method: str, path: str, content_type: str) -> None:
    """As ingest answers. Before, FastAPI handed the route the bytes and its validation
    answered 422 "Input should be a valid dictionary", echoing the body. After the key:
    without one it is the 401 (it was this 415, checked before the key)."""
    without = client.request(method, path, content=b'{"note": "x"}',
                             headers={"content-type": content_type})
    assert without.status_code == 401, without.text
    answer = client.request(method, path, content=b'{"note": "x"}',
                            headers={"content-type": content_type, **ADMIN})
    assert answer.status_code == 415, answer.text
    detail = answer.json()["detail"]
    media = content_type.split(";")[0]
    assert detail.startswith(f"Content-Type {media!r} is not taken here"), detail
    assert ("application/json, another application/*+json, text/plain, or no "
            "Content-Type") in detail
    if content_type.startswith("application/x-www"):
        assert "curl -d sends that" in detail


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json",
                                          "application/geo+json; charset=utf-8"])
def test_a_json_body_without_a_type_or_as_text_reaches_the_route_parsed(
        client: TestClient, content_type: str | None) -> None:
    """Without Content-Type (or as text/plain, which ingest takes too) FastAPI did not parse
    the body: every such request was a 422 "Input should be a valid dictionary". The window
    ends in 1970: the route's own 422 says so, so it read the JSON."""
    headers = {"authorization": "Bearer adm-key"}
    if content_type is not None:
        headers["content-type"] = content_type
    answer = client.put("/v1/maintenance/w1", headers=headers,
                        content=b'{"sensor": "jn-wl-*", "start_ms": 1, "end_ms": 2}')
    assert answer.status_code == 422, answer.text
    assert "end_ms 2 (1970-01-01T00:00:00.002Z) must lie between now and 2100" in \
        answer.json()["detail"]


def test_an_empty_body_of_any_type_is_no_body(client: TestClient) -> None:
    """``curl -X POST -d ''`` sends an empty form: an ack's body is optional, so it is taken."""
    answer = client.post("/v1/alerts/x/ack", content=b"",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 401, answer.text  # the key check, not a 415


def test_a_body_not_json_sent_as_text_is_400_saying_so(client: TestClient) -> None:
    answer = client.post("/v1/alerts/x/comment", content=b"\xff\xfe",
                         headers={"content-type": "text/plain", **ADMIN})
    assert answer.status_code == 400, answer.text
    assert "not JSON" in answer.json()["detail"]
