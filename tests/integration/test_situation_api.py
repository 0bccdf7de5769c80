"""The situation and sensor routes over real Kafka: reading batches on the topic → answers.

Reading batches are published straight onto this module's own readings topic (as the API's
ingest and the simulator do: ``encode_batch`` per sensor bucket), an alert event onto its
alerts topic, and the API runs as `cityagent up` runs it (uvicorn). The figures must come out
right (how long they took is printed); a second API process, started afterwards, rebuilds the same answers
from the topics (a restart, or a replica).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from api.schemas import (
    CitySituationPublic,
    Readiness,
    SensorPublic,
    SensorReadings,
    SensorsPublic,
    SituationPublic,
)
from cityagent.batch import ReadingBatch, encode_batch
from cityagent.readings import Reading
from cityagent.settings import Settings
from control.topics import ensure_topics, pipeline_topics
from tests.api.test_alert_book import alert_event
from tests.helpers import ChildProcess, free_port, start_api

pytestmark = [pytest.mark.integration]

KEYS = "admin:sit-adm,operator:sit-op,operator:sit-qd:370200,integrator:sit-int"
LIXIA, SHINAN = 370102, 370202
NOW_MS = int(time.time() * 1000) // 1000 * 1000
T = NOW_MS - 60_000  # the readings' event time: a minute ago


def auth(key: str = "sit-op") -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def reading(sensor: str, kind: str, ts_ms: int, **values: float) -> Reading:
    lon, lat = (120.38, 36.07) if sensor.startswith("qd-") else (117.02, 36.66)
    if kind == "traffic":
        values = {"flow_vph": 900.0, "occupancy_pct": 12.0, **values}
    return Reading(sensor, kind, ts_ms, lon, lat, values)


#: 10 congested roads, 2 gauges (over 警戒, over 保证), 2 pressure sensors (one under the floor)
#: and one gauge silent for 10 minutes in 济南 历下区; one free-flowing road in 青岛 市南区.
JINAN = ([reading(f"jn-tr-{i:03d}", "traffic", T, speed_kmh=30.0) for i in range(10)]
         + [reading("jn-wl-001", "water_level", T, level_m=4.5),
            reading("jn-wl-002", "water_level", T, level_m=5.5),
            reading("jn-pp-001", "pipe_pressure", T, pressure_mpa=0.2),
            reading("jn-pp-002", "pipe_pressure", T, pressure_mpa=0.1),
            reading("jn-wl-old", "water_level", T - 600_000, level_m=1.0)])
QINGDAO = [reading("qd-tr-001", "traffic", T, speed_kmh=60.0)]


class World:
    """This module's topics, a producer onto them, and the running API."""

    def __init__(self, settings: Settings, api: ChildProcess) -> None:
        self.settings = settings
        self.api = api
        self.url = f"http://127.0.0.1:{settings.api_port}"
        self.producer = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        self.published_at = 0.0

    def publish(self, readings: list[Reading], district: int) -> None:
        batch = ReadingBatch.from_readings(readings, [district] * len(readings))
        for key, part in batch.split_by_bucket():
            self.producer.send(self.settings.readings_topic, encode_batch(part), key=key.encode())
        self.producer.flush(10)

    def get(self, path: str, key: str = "sit-op", url: str | None = None, **params: Any) -> Any:
        answer = httpx.get(f"{url or self.url}{path}", params=params, headers=auth(key), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait_for(self, path: str, predicate: Callable[[Any], bool], url: str | None = None,
                 timeout_s: float = 30.0) -> tuple[Any, float]:
        started = time.monotonic()
        answer = None
        while time.monotonic() - started < timeout_s:
            got = httpx.get(f"{url or self.url}{path}", headers=auth("sit-op"), timeout=10)
            answer = got.json() if got.status_code == 200 else got.text  # 404: not read yet
            if got.status_code == 200 and predicate(answer):
                return answer, time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"{path} did not become right within {timeout_s} s: {answer}")


def wait_ready(url: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/readyz", timeout=5)
        body = answer.json()
        if answer.status_code == 200:
            return body
        assert answer.status_code == 503 and body["missing"], body
        time.sleep(0.2)
    raise AssertionError(f"the API did not become ready: {body}")


@pytest.fixture(scope="module")
def world(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"sit{tag}", app_id=f"sit-{tag}",
                        partitions=4, api_port=free_port(), api_keys=KEYS)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    api = start_api(settings, tmp_path_factory.mktemp("situation") / "api.log")
    world = World(settings, api)
    try:
        Readiness.model_validate(wait_ready(world.url))
        world.producer.send(settings.readings_topic, b"not a batch", key=b"b000")  # skipped
        world.producer.send(settings.alerts_topic, orjson.dumps(alert_event("jn-1", severity="red")),
                            key=b"district:370102")
        world.publish(JINAN, LIXIA)
        world.publish(QINGDAO, SHINAN)
        world.published_at = time.monotonic()
        yield world
    finally:
        world.producer.close()
        api.stop()


def test_the_situation_shows_what_was_published(world: World) -> None:
    answer, _ = world.wait_for("/v1/situation",
                               lambda a: a["province"]["sensors"]["total"] == len(JINAN) + 1)
    # A figure to read, not a pass mark (a busy machine is slow): ~0.3-1 s here.
    print(f"the situation showed the readings {time.monotonic() - world.published_at:.2f} s "
          "after they were published")
    SituationPublic.model_validate(answer)
    assert answer["as_of_ms"] == T  # stream time: the newest reading
    assert answer["province"]["sensors"] == {"total": 16, "reporting": 15, "silent": 1}
    assert [c["code"] for c in answer["cities"]][:2] == ["370100", "370200"]
    assert len(answer["cities"]) == 16
    jinan = answer["cities"][0]
    assert jinan["sensors"] == {"total": 15, "reporting": 14, "silent": 1}
    assert jinan["indicators"] == {"traffic_index": round((1 - 30 / 60) / 0.7 * 10, 2),
                                   "gauges_over_warning": 2, "gauges_over_guaranteed": 1,
                                   "pressure_compliance": 0.5}
    assert answer["cities"][1]["indicators"]["traffic_index"] == 0.0
    # All 16 readings entered Kafka within the last few seconds.
    assert answer["province"]["readings_per_s"] > 0
    assert jinan["trend"][-1]["t_ms"] == T // 60_000 * 60_000
    assert jinan["trend"][-1]["traffic_index"] == round((1 - 30 / 60) / 0.7 * 10, 2)
    alerts, _ = world.wait_for("/v1/situation", lambda a: a["province"]["alerts"]["open"] == 1)
    assert alerts["cities"][0]["alerts"]["by_severity"]["red"] == 1
    assert alerts["cities"][0]["alerts"]["worst"] == "red"


def test_city_drill_down_and_geojson(world: World) -> None:
    world.wait_for("/v1/situation", lambda a: a["province"]["alerts"]["open"] == 1)
    for name in ("370100", "济南", "Jinan"):
        answer = world.get(f"/v1/situation/{name}")
        CitySituationPublic.model_validate(answer)
        assert answer["city"]["code"] == "370100"
    assert answer["sensors"][0]["sensor_id"] == "jn-wl-002"  # over 保证: the worst
    assert answer["sensors"][-1]["sensor_id"] == "jn-pp-001"  # the one sensor that is fine
    lixia = next(d for d in answer["districts"] if d["code"] == "370102")
    assert lixia["sensors"]["total"] == 15 and lixia["alerts"]["open"] == 1
    geo = world.get("/v1/situation", format="geojson")
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 16
    feature = next(f for f in geo["features"] if f["id"] == "370100")
    assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert feature["properties"]["sensors_silent"] == 1
    assert feature["properties"]["indicators_gauges_over_guaranteed"] == 1
    districts = world.get("/v1/situation/370100", format="geojson")
    assert {f["id"] for f in districts["features"]} >= {"370102", "370103"}


def test_sensors_and_their_readings(world: World) -> None:
    world.wait_for("/v1/sensors", lambda a: a["total"] == 16)
    page = world.get("/v1/sensors", limit=10)
    SensorsPublic.model_validate(page)
    assert page["count"] == 10 and page["next_cursor"]
    rest = world.get("/v1/sensors", limit=10, cursor=page["next_cursor"])
    ids = [s["sensor_id"] for s in page["sensors"] + rest["sensors"]]
    assert ids == sorted(r.sensor_id for r in JINAN + QINGDAO) and rest["next_cursor"] is None
    silent = world.get("/v1/sensors", status="silent")["sensors"]
    assert [s["sensor_id"] for s in silent] == ["jn-wl-old"]
    gauges = world.get("/v1/sensors", kind="water_level", city="济南")
    assert gauges["total"] == 3
    one = world.get("/v1/sensors/jn-wl-002")
    SensorPublic.model_validate(one)
    assert one["latest"] == {"level_m": 5.5} and one["status"] == "reporting"
    assert one["district_code"] == "370102" and one["ts_ms"] == T
    world.publish([reading("jn-wl-002", "water_level", T + 30_000, level_m=5.7)], LIXIA)
    series, _ = world.wait_for("/v1/sensors/jn-wl-002/readings",
                               lambda a: len(a["readings"]) == 2)
    SensorReadings.model_validate(series)
    assert series["kind"] == "water_level"
    assert [(r["ts_ms"], r["level_m"]) for r in series["readings"]] == [(T, 5.5), (T + 30_000, 5.7)]
    later = world.get("/v1/sensors/jn-wl-002/readings", since=str(T + 1))["readings"]
    assert [r["level_m"] for r in later] == [5.7]


def test_scope_and_errors(world: World) -> None:
    world.wait_for("/v1/sensors", lambda a: a["total"] == 16)
    url = world.url
    qingdao = world.get("/v1/situation", key="sit-qd")
    assert [c["code"] for c in qingdao["cities"]] == ["370200"]
    assert qingdao["province"]["sensors"]["total"] == 1
    assert world.get("/v1/sensors", key="sit-qd")["total"] == 1
    assert httpx.get(f"{url}/v1/situation/370100", headers=auth("sit-qd")).status_code == 404
    assert httpx.get(f"{url}/v1/sensors/jn-wl-002", headers=auth("sit-qd")).status_code == 404
    assert httpx.get(f"{url}/v1/situation").status_code == 401
    assert httpx.get(f"{url}/v1/situation", headers=auth("sit-int")).status_code == 403
    assert httpx.get(f"{url}/v1/situation/atlantis", headers=auth()).status_code == 404
    assert httpx.get(f"{url}/v1/sensors/nope", headers=auth()).status_code == 404
    # A 5,000-character id was repeated whole in the 404's detail (ingest cuts them to 80).
    long_id = httpx.get(f"{url}/v1/sensors/{'x' * 5000}", headers=auth())
    assert long_id.status_code == 404 and len(long_id.text) < 300, long_id.text[:300]
    for params in ({"kind": "air"}, {"city": "atlantis"}, {"district": "999999"},
                   {"cursor": "***"}, {"status": "asleep"}, {"limit": 0}):
        answer = httpx.get(f"{url}/v1/sensors", params=params, headers=auth())
        assert answer.status_code == 422, (params, answer.text)
    bad = httpx.get(f"{url}/v1/sensors/jn-wl-002/readings", params={"since": "yesterday"},
                    headers=auth())
    assert bad.status_code == 422 and "since" in bad.json()["detail"]


def test_readyz_and_metrics(world: World) -> None:
    world.wait_for("/v1/sensors", lambda a: a["total"] == 16)
    ready = wait_ready(world.url)
    read = ready.pop("readings_messages_read")
    assert ready.pop("readings_messages_to_read") == read >= 0
    assert ready == {"status": "ready", "broker": True, "readings_caught_up": True,
                     "alerts_caught_up": True, "idempotency_caught_up": True,
                     "settings_caught_up": True, "missing": []}
    text = httpx.get(f"{world.url}/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert samples["cityagent_api_readings_consumed_total"] >= 16
    assert samples["cityagent_api_reading_batches_malformed_total"] == 1
    assert samples['cityagent_api_read_model_sensors{status="silent"}'] == 1
    assert samples['cityagent_api_alerts_open{severity="red"}'] == 1
    assert samples['cityagent_api_feed_caught_up{feed="readings"}'] == 1
    for feed in ("idempotency", "zones", "maintenance", "routing"):
        assert samples[f'cityagent_api_feed_caught_up{{feed="{feed}"}}'] == 1, feed
    assert samples['cityagent_api_feed_lag_messages{feed="readings"}'] >= 0
    assert any(k.startswith('cityagent_api_requests_total{method="GET",route="/v1/situation",'
                            'status="200"}') for k in samples)
    assert "# TYPE cityagent_api_requests_total counter" in text


def test_a_new_api_process_rebuilds_the_same_answers_from_the_topics(
        world: World, tmp_path: Path) -> None:
    # What the module published (with or without the later reading another test adds, which
    # that test waits for): this test passes alone too.
    world.wait_for("/v1/sensors", lambda a: a["total"] == 16)
    world.wait_for("/v1/situation", lambda a: a["province"]["alerts"]["open"] == 1)
    settings = dataclasses.replace(world.settings, api_port=free_port())
    replica = start_api(settings, tmp_path / "replica.log")
    try:
        url = f"http://127.0.0.1:{settings.api_port}"
        wait_ready(url)
        for path in ("/v1/situation", "/v1/situation/370100", "/v1/sensors",
                     "/v1/sensors/jn-wl-002/readings"):
            first, second = world.get(path), world.get(path, url=url)
            assert without_arrival_rates(first) == without_arrival_rates(second), path
    finally:
        replica.stop()


def without_arrival_rates(doc: Any) -> Any:
    """The answer without ``readings_per_s`` of summaries (wall-clock rates move on)."""
    if isinstance(doc, dict):
        return {k: without_arrival_rates(v) for k, v in doc.items()
                if not (k == "readings_per_s" and "sensors" in doc)}
    if isinstance(doc, list):
        return [without_arrival_rates(v) for v in doc]
    return doc
