"""A running API whose topics are recreated under it follows the new topics.

The embedded broker keeps nothing: after it restarts, the alerts topic starts again at offset 0.
An API that kept running used to keep the old topic's alerts and wait, silently, until the new
topic's offsets passed the old ones, and its stream clients dropped every new change for the
same reason. This test restarts its own broker (not the session's) under a running feed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from api.alert_book import AlertBook, AlertQuery
from api.read_model import AlertFeed, AlertHub
from api.readings_feed import ReadingsFeed
from api.routes.alert_stream import alert_events
from cityagent.batch import bucket_key, bucket_of, encode_batch
from cityagent.regions import default_regions
from cityagent.situation import SituationModel
from control.broker import EmbeddedBroker, free_port
from tests.api.test_alert_book import alert_event
from tests.api.test_situation_model import batch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "cityagent.alerts"
READINGS = "cityagent.readings"


async def _create_topic(bootstrap: str, topic: str = TOPIC) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    except TopicAlreadyExistsError:  # a metadata request of the feed's may have made it first
        pass
    finally:
        await admin.close()


async def _send(bootstrap: str, events: list[tuple[int, dict]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, event in events:
            await producer.send_and_wait(TOPIC, orjson.dumps(event), partition=partition)
    finally:
        await producer.stop()


async def _until(condition, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _frame(chunk: bytes) -> dict[str, str]:
    fields = {}
    for line in chunk.decode().splitlines():
        if line and not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return fields


def test_a_running_feed_follows_a_recreated_alerts_topic(tmp_path: Path) -> None:
    port = free_port()

    async def scenario() -> tuple[set[str], list[dict[str, str]], bool]:
        first = EmbeddedBroker(port, log_path=tmp_path / "first.log")
        bootstrap = first.start()
        second = EmbeddedBroker(port, log_path=tmp_path / "second.log")
        book, hub = AlertBook(), AlertHub()
        feed = AlertFeed(bootstrap, TOPIC, book, hub)
        stream = None
        try:
            await _create_topic(bootstrap)
            await _send(bootstrap, [(n % 2, alert_event(f"old-{n}", seq=3)) for n in range(12)])
            feed.start()
            await _until(lambda: feed.caught_up and len(book) == 12, "the old topic read")
            stream = alert_events(book, hub, AlertQuery(), None, heartbeat_s=60)
            opened = _frame(await asyncio.wait_for(anext(stream), 5))
            assert opened["id"] == "6-6"  # read up to offset 6 on both partitions

            first.stop()
            second.start()
            await _create_topic(bootstrap)
            # Fewer events than before, at offsets below the old ones; one reuses an old id
            # with a lower seq (the alerting worker's state went with the broker too).
            await _send(bootstrap, [(0, alert_event("new-0")), (1, alert_event("old-1", seq=1)),
                                    (0, alert_event("new-2"))])
            await _until(lambda: set(book._alerts) == {"new-0", "old-1", "new-2"},
                         "the book to hold the new topic's alerts only")
            frames = []
            while len([f for f in frames if f.get("event") == "alert"]) < 3:
                frames.append(_frame(await asyncio.wait_for(anext(stream), 30)))
            await _until(lambda: feed.caught_up, "the feed to catch up again")
            return set(book._alerts), frames, feed.caught_up
        finally:
            if stream is not None:
                await stream.aclose()
            await feed.stop()
            first.stop()
            second.stop()

    alerts, frames, caught_up = asyncio.run(scenario())
    assert alerts == {"new-0", "old-1", "new-2"}
    assert caught_up
    # The client is told first, with an id that means something for the new topic ...
    assert frames[0]["event"] == "reset" and frames[0]["id"] == "0"
    assert "recreated" in orjson.loads(frames[0]["data"])["detail"]
    # ... then gets every change of the new topic, none skipped as "already had".
    sent = [orjson.loads(f["data"])["alert_id"] for f in frames[1:] if f.get("event") == "alert"]
    assert sorted(sent) == ["new-0", "new-2", "old-1"]
    assert all(f.get("event") in ("alert", None) for f in frames[1:])


def test_a_running_readings_feed_follows_a_recreated_readings_topic(tmp_path: Path) -> None:
    """The situation keeps what it had read and folds the new topic's readings, from offset 0."""
    port = free_port()
    now = int(time.time() * 1000)

    async def send(bootstrap: str, sensor: str, count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for n in range(count):
                rows = batch((sensor, "water_level", now - 60_000 + n * 1000, 1.0 + n / 100, 370102))
                await producer.send_and_wait(READINGS, encode_batch(rows),
                                             key=bucket_key(bucket_of(sensor)).encode())
        finally:
            await producer.stop()

    async def scenario() -> tuple[list[str], int]:
        first = EmbeddedBroker(port, log_path=tmp_path / "first.log")
        bootstrap = first.start()
        second = EmbeddedBroker(port, log_path=tmp_path / "second.log")
        situation = SituationModel(default_regions())
        feed = ReadingsFeed(bootstrap, READINGS, situation)
        try:
            await _create_topic(bootstrap, READINGS)
            await send(bootstrap, "jn-wl-old", 20)
            feed.start()
            await _until(lambda: feed.caught_up and situation.readings_total == 20,
                         "the old topic read")
            first.stop()
            second.start()
            await _create_topic(bootstrap, READINGS)
            await send(bootstrap, "jn-wl-new", 3)  # offsets 0-2, below the 20 read before
            await _until(lambda: "jn-wl-new" in situation.sensor_ids.tolist(),
                         "the new topic's sensor in the situation")
            return sorted(situation.sensor_ids.tolist()), situation.readings_total
        finally:
            await feed.stop()
            first.stop()
            second.stop()

    sensors, total = asyncio.run(scenario())
    assert sensors == ["jn-wl-new", "jn-wl-old"]
    assert total == 23
