"""The API's OpenAPI document is complete, and fuzzing every operation finds no server error.

A real API process (uvicorn, as `cityagent up` runs it) on this module's own topics of the
session's broker, seeded with an alert and a sensor's readings so that the documented
examples reach real objects. Its ``/openapi.json`` is what is checked and fuzzed:

* every operation has a request body example where it takes a body, and an example for each
  2xx answer (on the media type, or on the schema it refers to);
* schemathesis sends each operation (with the admin key) its examples, schema-derived
  boundary cases and random valid and invalid inputs, and no answer may be a 5xx. The alert
  stream never ends, so it is documented (checked here) but not fuzzed;
* inputs that were 500s once (found by hand, beyond what the fuzzer generates: lone
  surrogates, NaN, huge integers, "²" as a digit, bytes that are not UTF-8) are refused with
  a 4xx and a ``detail`` saying why.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from kafka import KafkaProducer
from schemathesis.checks import not_a_server_error

from api.main import create_app
from cityagent.settings import Settings
from control.topics import ensure_topics, pipeline_topics
from tests.api.test_alert_book import alert_event
from tests.helpers import AUTH, TEST_API_KEYS, ChildProcess, free_port, start_api

pytestmark = [pytest.mark.integration]

STREAM = "/v1/alerts/stream"
#: The objects the OpenAPI examples name, so that the examples hit something real.
ALERT_ID = "inc-5c1e0b9a2f"
SENSOR_ID = "jn-wl-000042"
#: Generated cases per operation in the fuzzing phase (the examples and coverage phases add
#: their own, a few dozen); CITYAGENT_FUZZ_EXAMPLES=2000 for a deeper run.
MAX_EXAMPLES = int(os.environ.get("CITYAGENT_FUZZ_EXAMPLES", "100"))
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class Api:
    def __init__(self, settings: Settings, process: ChildProcess) -> None:
        self.settings = settings
        self.process = process
        self.url = f"http://127.0.0.1:{settings.api_port}"


def _wait(what: str, probe: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s} s")


@pytest.fixture(scope="module")
def api(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"fz{tag}", app_id=f"fz-{tag}",
                        partitions=2, api_port=free_port())
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(settings.alerts_topic, orjson.dumps(alert_event(ALERT_ID)),
                      key=b"district:370102")
        producer.flush(10)
    finally:
        producer.close()
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    process = start_api(settings, log)
    api = Api(settings, process)
    try:
        now_ms = int(time.time() * 1000)
        readings = [{"sensor_id": SENSOR_ID, "kind": "water_level", "ts": now_ms - i * 60_000,
                     "lon": 117.0197, "lat": 36.6614, "level_m": 4.2 + i / 10} for i in range(3)]
        posted = httpx.post(f"{api.url}/v1/readings", json=readings, headers=AUTH, timeout=10)
        assert posted.status_code == 202, posted.text

        def seeded() -> bool:
            alert = httpx.get(f"{api.url}/v1/alerts/{ALERT_ID}", headers=AUTH, timeout=5)
            sensor = httpx.get(f"{api.url}/v1/sensors/{SENSOR_ID}", headers=AUTH, timeout=5)
            return alert.status_code == 200 and sensor.status_code == 200

        _wait("the seeded alert and sensor did not appear", seeded)
        yield api
    finally:
        process.stop()
        # A server error is logged with its traceback: fail on one even if no check caught it.
        log_text = log.read_text("utf-8", "replace")
        assert "Traceback" not in log_text, log_text[-6000:]


@pytest.fixture(scope="module")
def openapi(api: Api) -> dict[str, Any]:
    answer = httpx.get(f"{api.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    return answer.json()


def _document() -> dict[str, Any]:
    """The OpenAPI document the API serves (built without starting it, to parametrize by)."""
    return create_app(Settings(api_keys=TEST_API_KEYS)).openapi()


#: Every operation but the stream; test_the_fuzzed_document_is_the_served_one checks that this
#: is what the running API serves.
schema = schemathesis.openapi.from_dict(_document()).exclude(method="GET", path=STREAM)
schema.config.update(headers=dict(AUTH), request_timeout=10)
#: NDJSON ingest bodies are documented as text (one reading per line): sent as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


#: The operations the fuzzing test sent cases to, for the test after it.
FUZZED: set[str] = set()


@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@schema.parametrize()
def test_no_operation_answers_a_server_error(case: schemathesis.Case, api: Api) -> None:
    FUZZED.add(case.operation.label)
    case.call_and_validate(base_url=api.url, checks=[not_a_server_error])


def test_every_operation_was_fuzzed() -> None:
    """Under pytest-xdist schemathesis fuzzed one operation of the 25 and still passed, so
    `make test` runs this module in a process of its own; this catches a run that did not."""
    if not FUZZED:
        pytest.skip("the fuzzing test did not run in this process (deselected)")
    expected = {op.ok().label for op in schema.get_all_operations()}
    assert FUZZED == expected, sorted(expected - FUZZED)


def test_the_fuzzed_document_is_the_served_one(openapi: dict[str, Any]) -> None:
    assert openapi == orjson.loads(orjson.dumps(_document()))


# -- the document ---------------------------------------------------------------------------


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _has_example(doc: dict[str, Any], media: dict[str, Any]) -> bool:
    """An example on the media type, or on its schema (through $ref, anyOf, oneOf, allOf)."""
    if "example" in media or media.get("examples"):
        return True

    def schema_has(schema: dict[str, Any]) -> bool:
        schema = _resolve(doc, schema)
        if "example" in schema or schema.get("examples"):
            return True
        return any(schema_has(s) for key in ("anyOf", "oneOf", "allOf")
                   for s in schema.get(key, []) if _resolve(doc, s).get("type") != "null")

    return "schema" in media and schema_has(media["schema"])


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield f"{method.upper()} {path}", operation


def test_every_operation_has_examples(openapi: dict[str, Any]) -> None:
    missing = []
    for name, operation in _operations(openapi):
        body = operation.get("requestBody")
        if body is not None:
            for media_type, media in _resolve(openapi, body)["content"].items():
                if not _has_example(openapi, media):
                    missing.append(f"{name}: request body {media_type}")
        answers = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert answers, f"{name} documents no 2xx answer"
        for code, answer in answers.items():
            content = _resolve(openapi, answer).get("content")
            if not content:
                missing.append(f"{name}: {code} answer has no content")
            for media_type, media in (content or {}).items():
                if not _has_example(openapi, media):
                    missing.append(f"{name}: {code} {media_type} answer")
    assert not missing, "operations without examples:\n" + "\n".join(missing)


def test_every_operation_is_described_and_tagged(openapi: dict[str, Any]) -> None:
    for name, operation in _operations(openapi):
        assert operation.get("summary") and operation.get("tags"), name
        assert operation.get("description") or name in {"GET /healthz"}, name


def test_the_alert_stream_is_documented_but_not_fuzzed(openapi: dict[str, Any],
                                                       api: Api) -> None:
    operation = openapi["paths"][STREAM]["get"]
    events = operation["responses"]["200"]["content"]["text/event-stream"]
    assert "event: alert" in events["example"]
    assert {p["name"] for p in operation["parameters"]} >= {"Last-Event-ID", "status", "city"}
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert f"GET {STREAM}" not in labels
    assert len(labels) == sum(1 for _ in _operations(openapi)) - 1
    # It answers: a bad resume point is a 422, not a stream.
    answer = httpx.get(f"{api.url}{STREAM}", params={"last_event_id": "x"}, headers=AUTH,
                       timeout=5)
    assert answer.status_code == 422, answer.text


# -- inputs that were server errors ---------------------------------------------------------

_WINDOW = b'{"sensor": "jn-wl-*", "start_ms": 1795400000000, "end_ms": %s, "note": "%s"}'
_ZONE = (b'{"type": "Feature", "properties": {"name": "t", "name_en": "%s", "zone_kind": '
         b'"underpass", "department": "transport"}, "geometry": {"type": "Polygon", '
         b'"coordinates": [[[117.03, 36.66], [117.034, 36.66], [117.034, 36.663], '
         b'[117.03, 36.66]]]}}')
#: (method, path, query, headers, body, status): each was answered 500 before its fix.
ONCE_SERVER_ERRORS = {
    # str.isdigit() admits "²", which int() refuses; int() refuses over 4300 digits; an int
    # beyond a float overflowed math.isfinite in parse_ts.
    "since-superscript-digit": ("GET", "/v1/alerts", {"since": "²"}, {}, None, 422),
    "until-400-digits": ("GET", "/v1/alerts", {"until": "9" * 400}, {}, None, 422),
    "since-5000-digits": ("GET", f"/v1/sensors/{SENSOR_ID}/readings", {"since": "9" * 5000},
                          {}, None, 422),
    "last-event-id-superscript": ("GET", STREAM, {"last_event_id": "1-²"}, {}, None, 422),
    "last-event-id-header-latin1": ("GET", STREAM, {}, {"last-event-id": b"\xb2"}, None, 422),
    # Python's JSON parser takes NaN, 1e999, lone surrogates and huge integers; the 422 echoing
    # them, or orjson writing them to Kafka, failed.
    "note-nan": ("POST", f"/v1/alerts/{ALERT_ID}/ack", {}, {}, b'{"note": NaN}', 400),
    "note-infinite": ("POST", f"/v1/alerts/{ALERT_ID}/ack", {}, {}, b'{"note": 1e999}', 400),
    "comment-lone-surrogate": ("POST", f"/v1/alerts/{ALERT_ID}/comment", {}, {},
                               b'{"text": "\\ud800"}', 400),
    "window-note-lone-surrogate": ("PUT", "/v1/maintenance/fz-w1", {}, {},
                                   _WINDOW % (b"1795407200000", b"\\udc00"), 400),
    "window-end-beyond-64-bits": ("PUT", "/v1/maintenance/fz-w1", {}, {},
                                  _WINDOW % (b"9" * 25, b"x"), 400),
    "zone-name-lone-surrogate": ("PUT", "/v1/zones/fz-z1", {}, {}, _ZONE % b"\\udc00", 400),
    # A body that is not JSON, sent as text, was echoed in the 422: bytes that are not UTF-8.
    # text/plain is read as JSON now (as ingest reads it), so it is the 400 "not JSON".
    "comment-body-not-utf8": ("POST", f"/v1/alerts/{ALERT_ID}/comment", {},
                              {"content-type": "text/plain"}, b"\xff\xfe", 400),
}


@pytest.mark.parametrize("case", ONCE_SERVER_ERRORS.values(), ids=ONCE_SERVER_ERRORS.keys())
def test_inputs_that_were_server_errors_are_refused_with_a_reason(case: tuple, api: Api) -> None:
    method, path, query, headers, body, status = case
    if body is not None:
        headers = {"content-type": "application/json", **headers}
    answer = httpx.request(method, f"{api.url}{path}", params=query, content=body,
                           headers={**AUTH, **headers}, timeout=10)
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"], answer.text
