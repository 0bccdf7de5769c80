"""End to end over real Kafka: HTTP readings → worker → alerts → HTTP, and the API's errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control.topics import pipeline_topics
from tests.helpers import (
    AUTH,
    Pipeline,
    consume_all,
    running_pipeline,
)

pytestmark = [pytest.mark.integration]

JINAN = (117.0197, 36.6614)  # 泉城广场, 历下区
QINGDAO = (120.3844, 36.0610)  # 五四广场, 市南区


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(kafka_bootstrap, tmp_path_factory.mktemp("pipeline"), "e2e") as p:
        yield p


def reading(sensor: str, where: tuple[float, float], level: float, ts: float) -> dict:
    return {"sensor_id": sensor, "kind": "water_level", "ts": ts,
            "lon": where[0], "lat": where[1], "level_m": level}


def wait_for_alerts(pipeline: Pipeline, predicate, timeout_s: float = 60.0, **params) -> list[dict]:
    """The API's alerts once ``predicate`` holds; fails at once if the worker or API exits."""
    deadline = time.monotonic() + timeout_s
    alerts: list[dict] = []
    while time.monotonic() < deadline:
        pipeline.worker.assert_running()
        pipeline.api.assert_running()
        alerts = httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH, params=params,
                           timeout=5).json()["alerts"]
        if predicate(alerts):
            return alerts
        time.sleep(0.5)
    raise AssertionError(f"no matching alert within {timeout_s} s; last answer: {alerts}")


@pytest.mark.slow
def test_a_breach_posted_over_http_becomes_an_incident_operators_can_ack_and_resolve(
        pipeline: Pipeline) -> None:
    base = float(int(time.time()) // 2 * 2 - 20)  # a 2 s window boundary, in the recent past
    body = [reading("jn-wl-e2e-1", JINAN, 2.0, base), reading("qd-wl-e2e-1", QINGDAO, 1.5, base),
            reading("jn-wl-e2e-1", JINAN, 5.6, base + 4)]
    answer = httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=body, timeout=10)
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 3 and answer.json()["rejected"] == []

    alerts = wait_for_alerts(pipeline, lambda a: any("jn-wl-e2e-1" in x["sensors"] for x in a))
    alert = next(a for a in alerts if "jn-wl-e2e-1" in a["sensors"])
    assert alert["status"] == "open" and alert["family"] == "flood", str(alerts)
    assert alert["severity"] in ("orange", "red")  # over 保证 (5.0 m); a zone may add a step
    assert alert["reason"] == "water.guaranteed"
    assert (alert["city_code"], alert["district_code"]) == ("370100", "370102")
    assert (alert["city_name"], alert["district_name"]) == ("济南市", "历下区")
    assert "water" in alert["departments"] and "city_command" in alert["departments"]
    assert not any("qd-wl-e2e-1" in a["sensors"] for a in alerts)  # normal readings: no alert

    for city in ("济南", "370100", "Jinan"):
        found = httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH, params={"city": city}).json()["alerts"]
        assert [a["alert_id"] for a in found] == [alert["alert_id"]]
    assert httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH, params={"city": "青岛"}).json()["alerts"] == []

    # An operator acknowledges it: the command goes through Kafka to the agent that owns the
    # incident, and comes back as an event on the alert.
    url = f"{pipeline.url}/v1/alerts/{alert['alert_id']}"
    ack = httpx.post(f"{url}/ack", headers=AUTH | {"x-operator": "wang"}, json={"note": "crew sent"})
    assert ack.status_code == 202, ack.text
    acked = wait_for_alerts(pipeline, lambda a: a and a[0]["status"] == "acknowledged",
                            city="370100")
    assert acked[0]["alert_id"] == alert["alert_id"] and "wang" in acked[0]["acknowledged_by"]
    # The gauge recedes; the operator resolves it. Still one alert, with its audit trail.
    back = httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=[
        reading("jn-wl-e2e-1", JINAN, 1.0, base + 8), reading("jn-wl-e2e-1", JINAN, 1.0, base + 10)])
    assert back.status_code == 202
    assert httpx.post(f"{url}/resolve", headers=AUTH, json={}).status_code == 202
    resolved = wait_for_alerts(
        pipeline, lambda a: any(x["status"] == "resolved" for x in a), city="370100")
    assert [a["alert_id"] for a in resolved] == [alert["alert_id"]]
    detail = httpx.get(url, headers=AUTH).json()
    types = [h["type"] for h in detail["history"]]
    assert types[0] == "opened" and "acknowledged" in types and types[-1] == "resolved", types
    assert all(h["actor"] for h in detail["history"])


def test_invalid_items_are_named_by_index_and_only_valid_ones_stored(pipeline: Pipeline) -> None:
    now = time.time()
    body = [
        reading("jn-wl-bad-0", JINAN, 6.0, now),
        {"sensor_id": "jn-wl-bad-1", "kind": "water_level", "ts": now, "lon": JINAN[0], "lat": JINAN[1]},
        reading("jn-wl-bad-2", (116.40, 39.90), 6.0, now),  # Beijing
        reading("jn-wl-bad-3", JINAN, float("inf"), now) | {"level_m": "high"},
        reading("jn-wl-bad-4", (JINAN[1], JINAN[0]), 6.0, now),  # lat/lon swapped
    ]
    answer = httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=body)
    assert answer.status_code == 202
    doc = answer.json()
    assert doc["accepted"] == 1
    assert [(e["index"], e["field"]) for e in doc["rejected"]] == [
        (1, "level_m"), (2, "lon"), (3, "level_m"), (4, "lat")]
    assert "outside Shandong" in doc["rejected"][1]["reason"]
    assert "must be a number" in doc["rejected"][2]["reason"]
    # The valid item reached Kafka; none of the rejected ones did.
    seen = consume_all(pipeline.settings.bootstrap, pipeline.settings.readings_topic,
                       until=lambda vs: any("jn-wl-bad-0" in v["sensor_id"] for v in vs),
                       timeout_s=10, watch=(pipeline.worker,))
    ids = [s for v in seen for s in v["sensor_id"]]
    assert "jn-wl-bad-0" in ids
    assert not any(f"jn-wl-bad-{i}" in ids for i in range(1, 5))


@pytest.mark.parametrize("content, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b"[]", 422, "no readings"),
    (b'"text"', 422, "JSON object"),
])
def test_malformed_requests_get_clear_client_errors(pipeline: Pipeline, content: bytes,
                                                     status: int, words: str) -> None:
    answer = httpx.post(f"{pipeline.url}/v1/readings", content=content,
                        headers=AUTH | {"content-type": "application/json"})
    assert answer.status_code == status
    assert words in answer.text


def test_unknown_city_filter_and_health(pipeline: Pipeline) -> None:
    answer = httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH, params={"city": "Atlantis"})
    assert answer.status_code == 422 and "unknown city" in answer.text
    assert httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH, params={"limit": 0}).status_code == 422
    assert httpx.get(f"{pipeline.url}/healthz").json() == {"status": "ok"}


def test_log_paths_exist(pipeline: Pipeline) -> None:
    assert Path(pipeline.worker.log_path).exists() and Path(pipeline.api.log_path).exists()


def test_the_worker_uses_only_topics_that_control_creates(pipeline: Pipeline,
                                                           kafka_bootstrap: str) -> None:
    """On Apache Kafka with auto-creation off (docker-compose.yml) a topic the worker uses that
    ``pipeline_topics`` does not create is missing; the embedded broker creates it silently
    (as it did Faust's leader topic, ``{app_id}-__assignor-__leader``), so look for one."""
    from kafka import KafkaAdminClient

    pipeline.worker.wait_for_log("Ready", timeout_s=60)  # joined its group: subscribed
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="cityagent-test")
    try:
        names = set(admin.list_topics())
    finally:
        admin.close()
    settings = pipeline.settings
    ours = {n for n in names
            if n.startswith((f"{settings.topic_prefix}.", f"{settings.app_id}-"))}
    assert ours == {spec.name for spec in pipeline_topics(settings)}


#: Messages anything may write to the readings topic that are no reading batch. Each must be
#: skipped and counted, by the worker and by the API's situation feed, never stop them: the
#: next message of the same partition is a breach that must still become an alert.
POISON = [
    b"not json",
    b'{"v": 2, "sensor_id": ["jn-wl-poison"]}',
    # An integer beyond 64 bits in each integer column (numpy raised OverflowError).
    b'{"v":2,"sensor_id":["jn-wl-poison"],"kind":[1],"ts_ms":[18446744073709551616],'
    b'"lon":[117.0],"lat":[36.6],"district":[370102],"level_m":[9.0]}',
    b'{"v":2,"sensor_id":["jn-wl-poison"],"kind":[1180591620717411303424],"ts_ms":[1],'
    b'"lon":[117.0],"lat":[36.6],"district":[370102],"level_m":[9.0]}',
    b'{"v":2,"sensor_id":["jn-wl-poison"],"kind":[1],"ts_ms":[1],'
    b'"lon":[117.0],"lat":[36.6],"district":[99999999999999999999],"level_m":[9.0]}',
]
#: ... and on the anomalies topic, where another detection system may write: no anomaly.
POISON_ANOMALIES = [b"not json", b"[1, 2]", b'{"anomaly_id": "x"}']


@pytest.mark.slow
def test_messages_that_are_no_reading_batch_or_anomaly_are_skipped_and_alerting_goes_on(
        pipeline: Pipeline) -> None:
    import orjson
    from kafka import KafkaProducer

    from cityagent.batch import ReadingBatch, bucket_key, bucket_of, encode_batch
    from cityagent.readings import parse_reading

    sensor = "jn-wl-after-poison"
    key = bucket_key(bucket_of(sensor)).encode()
    now = time.time()
    fast = ReadingBatch.from_readings([parse_reading(reading("jn-wl-fast-clock", JINAN, 2.0,
                                                             now + 8 * 3600))])
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.bootstrap, acks="all")
    try:
        for value in POISON:  # in the partition the breach below goes to, before it
            producer.send(pipeline.settings.readings_topic, value, key=key)
        producer.send(pipeline.settings.readings_topic, encode_batch(fast), key=b"not-a-bucket")
        # Straight to Kafka, past the API's check: a sensor sending China time as UTC.
        producer.send(pipeline.settings.readings_topic, encode_batch(fast),
                      key=bucket_key(bucket_of("jn-wl-fast-clock")).encode())
        bad = orjson.loads(b'{"severity": "purple"}')
        for value in [*POISON_ANOMALIES, orjson.dumps(bad)]:
            producer.send(pipeline.settings.anomalies_topic, value, key=b"370102")
        producer.flush(10)
    finally:
        producer.close()
    base = float(int(now) // 2 * 2 - 20)
    answer = httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=[
        reading(sensor, JINAN, 2.0, base), reading(sensor, JINAN, 5.6, base + 4),
        reading(sensor, JINAN, 5.6, base + 6)], timeout=10)
    assert answer.status_code == 202, answer.text
    wait_for_alerts(pipeline, lambda a: any(sensor in x["sensors"] for x in a))
    # The API's situation feed skipped the same messages, counted each, and went on.
    deadline = time.monotonic() + 20
    samples: dict[str, float] = {}
    while time.monotonic() < deadline:
        text = httpx.get(f"{pipeline.url}/metrics", timeout=5).text
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                   for line in text.splitlines() if line and not line.startswith("#")}
        seen = httpx.get(f"{pipeline.url}/v1/sensors/{sensor}", headers=AUTH, timeout=5)
        if seen.status_code == 200:
            break
        time.sleep(0.5)
    assert seen.status_code == 200, seen.text
    assert samples["cityagent_api_reading_batches_malformed_total"] >= len(POISON)
    # A road detector given the gauge's id: the API, which knows the sensor now, refuses its
    # reading; written straight to Kafka, the worker drops it and names the sensor.
    road = {"sensor_id": sensor, "kind": "traffic", "ts": base + 8, "lon": JINAN[0],
            "lat": JINAN[1], "speed_kmh": 60.0, "flow_vph": 900.0, "occupancy_pct": 10.0}
    refused = httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=[road], timeout=10)
    assert refused.status_code == 422 and "is a water_level sensor" in refused.text, refused.text
    producer = KafkaProducer(bootstrap_servers=pipeline.settings.bootstrap, acks="all")
    try:
        producer.send(pipeline.settings.readings_topic, key=key, value=encode_batch(
            ReadingBatch.from_readings([parse_reading(road)], [370102])))
        producer.flush(10)
    finally:
        producer.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "is a water_level sensor" not in (
            pipeline.worker.log_path.read_text()):
        time.sleep(0.3)
    log = pipeline.worker.log_path.read_text()
    assert (f"sensor {sensor} is a water_level sensor (its first reading), but readings of "
            "kind traffic arrive under its id") in log
    assert log.count("skipped a bad batch") >= len(POISON) + 1, log[-3000:]
    assert "must be its sensors' bucket" in log
    assert "sensor jn-wl-fast-clock sends readings dated 8.0 h past this worker's clock" in log
    assert log.count("skipped a malformed anomaly") >= 2, log[-3000:]
    assert "Crashed" not in log and "Traceback" not in log, log[-3000:]
    pipeline.worker.assert_running()


@pytest.mark.slow
def test_a_flood_over_two_districts_is_one_alert_found_by_either(pipeline: Pipeline) -> None:
    """Floods are one incident per city, and its alert carried only the district of the gauge
    that opened it: ``district=`` for the other district did not find it. Through the worker,
    the alerts topic and the API's book, it now lists both (``district_codes``)."""
    huaiyin = (116.930, 36.680)  # 槐荫区
    base = float(int(time.time()) // 2 * 2 - 20)
    body = [reading("jn-wl-e2e-d1", JINAN, 2.0, base), reading("jn-wl-e2e-d2", huaiyin, 2.0, base),
            reading("jn-wl-e2e-d1", JINAN, 5.6, base + 4),
            reading("jn-wl-e2e-d2", huaiyin, 5.6, base + 4)]
    assert httpx.post(f"{pipeline.url}/v1/readings", headers=AUTH, json=body).status_code == 202

    def both(alerts: list[dict]) -> bool:
        return any({"jn-wl-e2e-d1", "jn-wl-e2e-d2"} <= set(a["sensors"]) for a in alerts)

    alert = next(a for a in wait_for_alerts(pipeline, both) if "jn-wl-e2e-d1" in a["sensors"])
    assert sorted(alert["district_codes"]) == ["370102", "370104"], alert
    assert alert["district_code"] == alert["district_codes"][0]
    assert "历下区" in alert["title_zh"] and "槐荫区" in alert["title_zh"], alert["title_zh"]
    for district in ("370102", "370104"):
        found = httpx.get(f"{pipeline.url}/v1/alerts", headers=AUTH,
                          params={"district": district, "status": "open"}).json()["alerts"]
        assert [a["alert_id"] for a in found] == [alert["alert_id"]], district
    # Resolved, so that a later flood in Jinan is an incident of its own.
    url = f"{pipeline.url}/v1/alerts/{alert['alert_id']}"
    assert httpx.post(f"{url}/resolve", headers=AUTH, json={}).status_code == 202
    wait_for_alerts(pipeline, lambda a: any(x["alert_id"] == alert["alert_id"] for x in a),
                    status="resolved", city="370100")
