"""A starting API re-reads only the last CITYAGENT_SITUATION_LOOKBACK_H of the readings topic.

Reading batches go onto the topic as the producers send them (``encode_batch`` per sensor
bucket, keyed by the bucket), with explicit Kafka timestamps: some sensors' readings two days
old, others' an hour old, on a topic where two partitions hold old records only. A feed (or an
API) started with a one-day lookback must know the recent sensors only, fold only their recent
readings, and catch up: the partitions of old records must not hold readiness back.

On the embedded broker (Tansu 0.6) the time lookup answers by the broker's own append time, so
these records, all appended now, are all read and the old ones skipped by their timestamps; on
Apache Kafka the lookup skips them. Either way the same sensors must come out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from kafka import KafkaProducer

from api.readings_feed import ReadingsFeed
from api.routes.health import readyz
from cityagent.batch import ReadingBatch, bucket_key, bucket_of, encode_batch
from cityagent.readings import Reading
from cityagent.regions import default_regions
from cityagent.settings import Settings
from cityagent.situation import SituationModel
from control.topics import TopicSpec, ensure_topics, pipeline_topics
from tests.helpers import free_port, start_api

pytestmark = [pytest.mark.integration]

HOUR_MS = 3_600_000
NOW_MS = int(time.time() * 1000) // 1000 * 1000
OLD_MS, RECENT_MS = NOW_MS - 48 * HOUR_MS, NOW_MS - HOUR_MS
PARTITIONS = 4
LIXIA = 370102
KEYS = "operator:lb-op"


def partition_of(sensor_id: str) -> int:
    """The partition a sensor's batches land on: murmur2 of its bucket key, as every client."""
    key = bucket_key(bucket_of(sensor_id)).encode()
    return DefaultPartitioner()(key, list(range(PARTITIONS)), list(range(PARTITIONS)))


def pick(prefix: str, count: int, partitions: set[int]) -> list[str]:
    """The first ``count`` ids ``prefix-000``, ``prefix-001``… that land on ``partitions``."""
    ids = (f"{prefix}-{i:03d}" for i in range(10_000))
    return [s for s in ids if partition_of(s) in partitions][:count]


#: Recent sensors live on partitions 0 and 1 only; old ones on all four, so partitions 2 and 3
#: hold nothing but records older than the lookback. "both" has an old and a recent reading.
RECENT = pick("lb-recent-0", 3, {0}) + pick("lb-recent-1", 3, {1})
OLD = [s for p in range(PARTITIONS) for s in pick(f"lb-old-{p}", 2, {p})]
BOTH = pick("lb-both", 1, {0})


def gauge(sensor_id: str, ts_ms: int) -> Reading:
    return Reading(sensor_id, "water_level", ts_ms, 117.02, 36.66, {"level_m": 1.5})


def publish(bootstrap: str, topic: str, sensors: list[str], ts_ms: int,
            copies: int = 1) -> set[int]:
    """One reading of each sensor, stamped ``ts_ms`` (event time and Kafka timestamp), sent
    ``copies`` times, a message per bucket as the producers send; the partitions written."""
    batch = ReadingBatch.from_readings([gauge(s, ts_ms) for s in sensors], [LIXIA] * len(sensors))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        sent = [producer.send(topic, encode_batch(part), key=key.encode(), timestamp_ms=ts_ms)
                for _ in range(copies) for key, part in batch.split_by_bucket()]
        producer.flush(30)
        return {future.get(10).partition for future in sent}
    finally:
        producer.close(10)


def fill(settings: Settings, copies: int = 1) -> None:
    """Old records first, then recent ones, as a topic fills over days."""
    ensure_topics(settings.bootstrap, [TopicSpec(settings.readings_topic, PARTITIONS)])
    old = publish(settings.bootstrap, settings.readings_topic, OLD + BOTH, OLD_MS, copies)
    recent = publish(settings.bootstrap, settings.readings_topic, RECENT + BOTH, RECENT_MS,
                     copies)
    assert old == {0, 1, 2, 3} and recent == {0, 1}  # partitions 2 and 3: old records only


def test_a_fresh_feed_folds_only_the_lookback_and_shows_its_progress(
        settings_factory) -> None:
    settings = settings_factory(partitions=PARTITIONS)
    fill(settings, copies=60)  # 60 x (12 + 7 buckets' messages): several polls of 200

    async def scenario() -> tuple[SituationModel, ReadingsFeed, list[tuple[int, int]], list]:
        model = SituationModel(default_regions())
        feed = ReadingsFeed(settings.bootstrap, settings.readings_topic, model,
                            lookback_ms=24 * HOUR_MS)
        request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
            readings_feed=feed, alert_feed=None)))
        feed.start()
        seen: list[tuple[int, int]] = []
        bodies: list = []
        try:
            deadline = time.monotonic() + 30
            while not feed.caught_up and time.monotonic() < deadline:
                if not seen or seen[-1] != feed.progress:
                    seen.append(feed.progress)
                if 0 < seen[-1][0] < seen[-1][1] and len(bodies) < 3:
                    bodies.append(orjson.loads((await readyz(request)).body))
                await asyncio.sleep(0)
            assert feed.caught_up
            return model, feed, seen, bodies
        finally:
            await feed.stop()

    model, feed, seen, bodies = asyncio.run(scenario())
    assert set(model.sensor_ids.tolist()) == set(RECENT + BOTH)
    assert model.readings_total == 60 * len(RECENT + BOTH)
    assert {r["ts_ms"] for r in model.readings(BOTH[0]) or []} == {RECENT_MS}
    # The catch-up moved, and /readyz said so while it did.
    read, to_read = feed.progress
    assert read == to_read > 0 and feed.malformed == 0
    assert any(0 < r < t == to_read for r, t in seen), seen[:5]
    assert bodies, "no readiness answer seen mid catch-up"
    for body in bodies:
        assert not body["readings_caught_up"]
        assert 0 < body["readings_messages_read"] < body["readings_messages_to_read"] == to_read
        assert any(m.startswith("the situation is still reading the readings topic (")
                   and f"of {to_read:,} messages, " in m for m in body["missing"]), body


def test_a_restarted_api_knows_the_recent_sensors_only_and_becomes_ready(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    settings = Settings(kafka=kafka_bootstrap, topic_prefix=f"lb{tag}", app_id=f"lb-{tag}",
                        partitions=PARTITIONS, api_port=free_port(), api_keys=KEYS,
                        situation_lookback_h=24.0)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    fill(settings)
    api = start_api(settings, tmp_path / "api.log")
    try:
        url = f"http://127.0.0.1:{settings.api_port}"
        ready = wait_ready(url)
        headers = {"authorization": "Bearer lb-op"}
        listed = httpx.get(f"{url}/v1/sensors", params={"limit": 100}, headers=headers,
                           timeout=10).json()
        assert {s["sensor_id"] for s in listed["sensors"]} == set(RECENT + BOTH)
        assert httpx.get(f"{url}/v1/sensors/{OLD[0]}", headers=headers,
                         timeout=10).status_code == 404
        history = httpx.get(f"{url}/v1/sensors/{BOTH[0]}/readings", headers=headers,
                            timeout=10).json()
        assert [r["ts_ms"] for r in history["readings"]] == [RECENT_MS]
        assert 0 < ready["readings_messages_read"] == ready["readings_messages_to_read"]
    finally:
        api.stop()
    # With a lookback past the old records (as long as the retention) they are all back.
    longer = dataclasses.replace(settings, api_port=free_port(), situation_lookback_h=168.0)
    api = start_api(longer, tmp_path / "api-168h.log")
    try:
        url = f"http://127.0.0.1:{longer.api_port}"
        wait_ready(url)
        listed = httpx.get(f"{url}/v1/sensors", params={"limit": 100},
                           headers={"authorization": "Bearer lb-op"}, timeout=10).json()
        assert {s["sensor_id"] for s in listed["sensors"]} == set(RECENT + BOTH + OLD)
    finally:
        api.stop()


def wait_ready(url: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        answer = httpx.get(f"{url}/readyz", timeout=5)
        body = answer.json()
        if answer.status_code == 200:
            return body
        time.sleep(0.2)
    raise AssertionError(f"the API did not become ready: {body}")
