"""A starting API reads only the last 7 days of the alerts topic, by Kafka record time.

The alerts topic keeps months (the audit trail, ``CITYAGENT_ALERTS_RETENTION_DAYS``), and the
alert book needs only 7 days of it: resolved alerts are forgotten after that and open ones are
restated every day. Events go onto the topic with explicit Kafka timestamps, some ten days old;
a fresh feed must know only the alerts with an event in the last 7 days, and catch up although
one partition holds old events only.

On the embedded broker (Tansu 0.6) the time lookup answers by the broker's own append time, so
these events, all appended now, are all read and the old ones skipped by their timestamps; on
Apache Kafka the lookup skips them. Either way the same alerts must come out.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from api.alert_book import AlertBook
from api.read_model import LOOKBACK_MS, AlertFeed
from control.topics import TopicSpec, ensure_topics
from tests.api.test_alert_book import alert_event

pytestmark = [pytest.mark.integration]

DAY_MS = 86_400_000
NOW_MS = int(time.time() * 1000)
OLD_MS, RECENT_MS = NOW_MS - 10 * DAY_MS, NOW_MS - DAY_MS


def event(alert_id: str, at_ms: int, seq: int = 1, type: str = "opened") -> dict:
    return alert_event(alert_id, seq=seq, type=type, first_seen_ms=OLD_MS, last_seen_ms=at_ms,
                       opened_ms=OLD_MS)


#: (partition, Kafka timestamp, event). Partition 1 holds events older than 7 days only.
EVENTS = [
    (0, OLD_MS, event("old-open", OLD_MS)),  # open, but no event in 7 days (no restatement)
    (0, OLD_MS, event("restated", OLD_MS)),
    (0, OLD_MS + 1, event("old-acked", OLD_MS + 1, seq=2, type="acknowledged")),
    (0, RECENT_MS, event("restated", RECENT_MS, seq=2, type="restated")),
    (0, NOW_MS - 60_000, event("new", NOW_MS - 60_000)),
    (1, OLD_MS, event("old-elsewhere", OLD_MS)),
]


async def _publish(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, ts_ms, doc in EVENTS:
            await producer.send_and_wait(topic, orjson.dumps(doc), partition=partition,
                                         timestamp_ms=ts_ms)
    finally:
        await producer.stop()


def _read(bootstrap: str, topic: str, **kwargs) -> tuple[AlertBook, AlertFeed]:
    async def scenario() -> tuple[AlertBook, AlertFeed]:
        book = AlertBook()
        feed = AlertFeed(bootstrap, topic, book, **kwargs)
        feed.start()
        try:
            deadline = time.monotonic() + 30
            while not feed.caught_up and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert feed.caught_up, "the feed did not catch up"
            return book, feed
        finally:
            await feed.stop()

    return asyncio.run(scenario())


def test_a_fresh_alert_feed_reads_the_last_7_days_only(settings_factory) -> None:
    settings = settings_factory(partitions=2)
    topic = settings.alerts_topic
    ensure_topics(settings.bootstrap, [TopicSpec(topic, 2)])
    asyncio.run(_publish(settings.bootstrap, topic))

    book, feed = _read(settings.bootstrap, topic)
    assert LOOKBACK_MS == 7 * DAY_MS == book.resolved_for_ms
    assert set(book._alerts) == {"restated", "new"}
    # The restated alert is its newest snapshot; its history holds what the 7 days held.
    restated = book.get("restated")
    assert restated is not None and restated["seq"] == 2
    history, whole = book.history("restated")
    assert [h["type"] for h in history] == ["restated"] and whole
    assert feed.malformed == 0

    # Without a lookback (the old behaviour) the same topic gives every alert.
    everything, _ = _read(settings.bootstrap, topic, lookback_ms=None)
    assert set(everything._alerts) == {"old-open", "restated", "old-acked", "new",
                                       "old-elsewhere"}
