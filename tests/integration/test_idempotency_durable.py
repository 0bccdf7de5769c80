"""A retry of an accepted keyed POST of readings is answered, not stored again, also when it
reaches the API after a crash and restart, or another replica (``api/idempotency_log.py``).

Real API processes (uvicorn) on the session's embedded broker; the readings topic is read
back to count what was stored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from cityagent.batch import decode_batch
from cityagent.settings import Settings
from control.topics import ensure_topics, pipeline_topics
from tests.helpers import (
    INTEGRATOR_KEY,
    TEST_API_KEYS,
    ChildProcess,
    consume_to_end,
    free_port,
    start_api,
)

pytestmark = pytest.mark.integration

JINAN = (117.02, 36.66)


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"idem{tag}", app_id=f"idem-{tag}",
                        partitions=4, api_port=free_port(), api_keys=TEST_API_KEYS)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    return settings


@pytest.fixture
def apis(settings: Settings, tmp_path: Path) -> Iterator[list[ChildProcess]]:
    started: list[ChildProcess] = []
    yield started
    for api in started:
        api.stop()


def start(settings: Settings, apis: list[ChildProcess], tmp_path: Path) -> str:
    """A new API process on its own port; its base URL."""
    own = dataclasses.replace(settings, api_port=free_port())
    apis.append(start_api(own, tmp_path / f"api-{len(apis)}.log"))
    return f"http://127.0.0.1:{own.api_port}"


def readings(sensor: str, n: int = 3) -> bytes:
    now = time.time()
    return orjson.dumps([{"sensor_id": sensor, "kind": "water_level", "ts": now - 60 * (n - i),
                          "lon": JINAN[0], "lat": JINAN[1], "level_m": 1.5 + i / 10}
                         for i in range(n)])


def post(url: str, body: bytes, key: str) -> httpx.Response:
    """POST as a client following the API's advice: a 503 with Retry-After is retried."""
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(f"{url}/v1/readings", content=body, timeout=15, headers={
            "authorization": f"Bearer {INTEGRATOR_KEY}", "idempotency-key": key,
            "content-type": "application/json"})
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        assert answer.headers["retry-after"] == "1", answer.text
        time.sleep(0.1)


def stored(settings: Settings, sensor: str) -> int:
    """Readings of ``sensor`` in the readings topic, read to its end. Call it once the
    requests are answered: the API answers 202 only after Kafka acknowledged the readings, so
    a retry stored again is there by then. (It waited for the first copy, slept 1 s "for any
    duplicate to arrive", then waited 2 s more for one.)"""
    return sum(decode_batch(r.value).sensor_id.tolist().count(sensor)
               for r in consume_to_end(settings.bootstrap, settings.readings_topic))


def taken(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    line = next(line for line in text.splitlines()
                if line.startswith('cityagent_api_idempotency_records_total{outcome="taken"}'))
    return float(line.rsplit(" ", 1)[1])


def test_a_retry_after_the_api_crashed_and_restarted_is_answered_not_stored_again(
        settings: Settings, apis: list[ChildProcess], tmp_path: Path) -> None:
    body, key = readings("jn-wl-idem-restart"), f"restart-{uuid.uuid4()}"
    url = start(settings, apis, tmp_path)
    first = post(url, body, key)
    assert first.status_code == 202, first.text
    apis[0].kill()  # the client never saw the answer: it retries, and the API restarts
    url = start(settings, apis, tmp_path)
    again = post(url, body, key)
    assert again.status_code == 202, again.text
    assert again.headers.get("idempotency-replayed") == "true"
    assert again.content == first.content
    assert stored(settings, "jn-wl-idem-restart") == 3
    other = post(url, readings("jn-wl-idem-restart", 2), key)  # the key, with another body
    assert other.status_code == 422 and "different request body" in other.json()["detail"]


def test_a_retry_reaching_another_replica_is_answered_not_stored_again(
        settings: Settings, apis: list[ChildProcess], tmp_path: Path) -> None:
    body, key = readings("jn-wl-idem-replica"), f"replica-{uuid.uuid4()}"
    first_url, second_url = start(settings, apis, tmp_path), start(settings, apis, tmp_path)
    before = taken(second_url)
    first = post(first_url, body, key)
    assert first.status_code == 202, first.text
    deadline = time.monotonic() + 10  # the other replica reads the record (~0.5 s here)
    while taken(second_url) <= before:
        assert time.monotonic() < deadline, "the other replica never read the record"
        time.sleep(0.1)
    again = post(second_url, body, key)
    assert again.status_code == 202 and again.headers.get("idempotency-replayed") == "true"
    assert stored(settings, "jn-wl-idem-replica") == 3


def test_a_retry_of_a_request_whose_answer_is_over_a_kafka_record_is_answered_after_a_restart(
        settings: Settings, apis: list[ChildProcess], tmp_path: Path) -> None:
    # 20,000 readings, all but the first out of range: the answer lists 19,999 rejections,
    # ~2.8 MB of JSON, which Kafka refused as a record (1 MB): the retry stored the reading again.
    sensor, key = "jn-wl-idem-big", f"big-{uuid.uuid4()}"
    items = orjson.loads(readings(sensor, 1)) + [
        {"sensor_id": f"jn-wl-idem-bad-{i:05d}", "kind": "water_level", "ts": time.time() - 60,
         "lon": JINAN[0], "lat": JINAN[1], "level_m": 20_000.5 + i} for i in range(19_999)]
    body = orjson.dumps(items)
    url = start(settings, apis, tmp_path)
    first = post(url, body, key)
    assert first.status_code == 202, first.text
    assert first.json()["accepted"] == 1 and len(first.json()["rejected"]) == 19_999
    assert len(first.content) > 1 << 20
    apis[0].kill()
    url = start(settings, apis, tmp_path)
    again = post(url, body, key)
    assert again.status_code == 202, again.text
    assert again.headers.get("idempotency-replayed") == "true"
    assert again.content == first.content
    assert stored(settings, sensor) == 1
