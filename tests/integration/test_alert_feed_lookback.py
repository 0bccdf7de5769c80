"""A starting API reads only 7 days of the alerts topic, by Kafka record time: the 7 days
before its newest record, or before now if that is sooner.

The alerts topic keeps months (the audit trail, ``CITYAGENT_ALERTS_RETENTION_DAYS``), and the
alert book needs only 7 days of it: resolved alerts are forgotten after that and open ones are
restated every day. Events go onto the topic with explicit Kafka timestamps, some ten days old;
a fresh feed must know only the alerts with an event in the last 7 days, and catch up although
one partition holds old events only. When every worker has been stopped for longer than that
(the newest event is 10 days old), a fresh feed must show what a running one does.

On the embedded broker (Tansu 0.6) the time lookup answers by the broker's own append time, so
these events, all appended now, are all read and the old ones skipped by their timestamps; on
Apache Kafka the lookup skips them. Either way the same alerts must come out, and the read
must begin at the same offsets: a stream client whose Last-Event-ID is older than them missed
changes this API never read, and is told to re-list (``event: reset``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from api.alert_book import AlertBook
from api.read_model import LOOKBACK_MS, AlertFeed
from api.topic_feed import newest_record_ms
from control.topics import TopicSpec, ensure_topics, pipeline_topics
from tests.api.test_alert_book import alert_event
from tests.helpers import AUTH, free_port, start_api
from tests.integration.test_alerts_api import read_frames

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


async def _publish(bootstrap: str, topic: str, events: list | None = None,
                   batch: list | None = None) -> None:
    """Send ``events`` one record a batch, then ``batch`` as one batch (partition, time, doc)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    await producer.start()
    try:
        for partition, ts_ms, doc in EVENTS if events is None else events:
            await producer.send_and_wait(topic, orjson.dumps(doc), partition=partition,
                                         timestamp_ms=ts_ms)
        sent = [await producer.send(topic, orjson.dumps(doc), partition=partition,
                                    timestamp_ms=ts_ms) for partition, ts_ms, doc in batch or ()]
        await asyncio.gather(*sent)
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


def _published(settings_factory, events: list | None = None, batch: list | None = None):
    """Settings of their own, and their alerts topic of two partitions holding EVENTS."""
    settings = settings_factory(partitions=2)
    topic = settings.alerts_topic
    ensure_topics(settings.bootstrap, [TopicSpec(topic, 2)])
    asyncio.run(_publish(settings.bootstrap, topic, events, batch))
    return settings, topic


def test_a_fresh_alert_feed_reads_the_last_7_days_of_a_topic_written_today(
        settings_factory) -> None:
    settings, topic = _published(settings_factory)

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


#: Every worker stopped 10 days ago (STOPPED_MS, the newest event). "long-open" was opened 12
#: days ago and restated 11 days ago; "resolved-late" resolved 10 days ago, "resolved-early" 18
#: days ago (more than 7 days before the newest event: a running API forgot it). Partition 1
#: ends with one batch of three records, the newest stamped last.
STOPPED_MS = NOW_MS - 10 * DAY_MS
STOPPED_EVENTS = [
    (0, NOW_MS - 20 * DAY_MS, event("resolved-early", NOW_MS - 20 * DAY_MS)),
    (0, NOW_MS - 18 * DAY_MS, event("resolved-early", NOW_MS - 18 * DAY_MS, seq=2,
                                    type="resolved")),
    (0, NOW_MS - 12 * DAY_MS, event("long-open", NOW_MS - 12 * DAY_MS)),
    (0, NOW_MS - 11 * DAY_MS, event("long-open", NOW_MS - 11 * DAY_MS, seq=2,
                                    type="restated")),
]
STOPPED_BATCH = [
    (1, STOPPED_MS - 3_600_000, event("resolved-late", STOPPED_MS - 3_600_000)),
    (1, STOPPED_MS - 1_800_000, event("quiet", STOPPED_MS - 1_800_000)),
    (1, STOPPED_MS, event("resolved-late", STOPPED_MS, seq=2, type="resolved")),
]


def _resolved(doc: dict) -> dict:
    if doc["type"] == "resolved":
        doc["alert"].update(status="resolved", resolved_by="system",
                            resolved_at_ms=doc["at_ms"])
    return doc


def test_a_fresh_alert_feed_shows_what_a_running_one_does_after_every_worker_stopped(
        settings_factory) -> None:
    """Before 2026-11-25 a feed started 10 days after every worker stopped read the 7 days
    before now, none of the topic: it showed no alert, while an API running since showed
    "long-open" (open) and "quiet"."""
    settings, topic = _published(
        settings_factory, [(p, t, _resolved(d)) for p, t, d in STOPPED_EVENTS],
        [(p, t, _resolved(d)) for p, t, d in STOPPED_BATCH])

    book, feed = _read(settings.bootstrap, topic)
    running, _ = _read(settings.bootstrap, topic, lookback_ms=None)  # read all, as it applied
    assert set(running._alerts) == {"long-open", "resolved-late", "quiet"}
    assert set(book._alerts) == set(running._alerts)
    for alert_id in running._alerts:
        assert book.get(alert_id) == running.get(alert_id), alert_id
    assert book.get("long-open")["status"] == "open"
    assert book.get("resolved-late")["status"] == "resolved"
    assert feed._lookback.cutoff_ms == STOPPED_MS - LOOKBACK_MS
    # The read begins at long-open's first event (offset 2) and at partition 1's beginning.
    assert book.resumable and book.next_offsets == {0: 4, 1: 3}
    assert not book.replay({0: 2, 1: 0})[1]
    assert book.replay({0: 1, 1: 3})[1]


def test_the_newest_record_time_is_read_from_the_whole_last_batch(settings_factory) -> None:
    """Partition 1 ends with a batch of three records: its newest time is the third's, also
    on the embedded broker, whose end offset is the last batch's base offset + 1 (here 1)."""
    settings, topic = _published(settings_factory, [], STOPPED_BATCH)

    async def newest() -> int | None:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap, group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            consumer.assign(partitions)
            return await newest_record_ms(consumer, partitions)
        finally:
            await consumer.stop()

    assert asyncio.run(newest()) == STOPPED_MS


#: Where a fresh feed's read of EVENTS begins: partition 0 at its first recent event (offset
#: 3), partition 1 (old events only) at its end. And where it ends.
READ_FROM, READ_TO = {0: 3, 1: 1}, {0: 5, 1: 1}


def test_the_feed_tells_the_book_where_its_read_began(settings_factory) -> None:
    settings, topic = _published(settings_factory)

    book, _ = _read(settings.bootstrap, topic)
    assert book.resumable
    assert book.next_offsets == READ_TO
    entries, gap = book.replay(READ_FROM)
    assert not gap and [e.event_id for e in entries] == ["restated-2", "new-1"]
    for seen in ({0: 1, 1: 1}, {0: 3, 1: 0}, {0: 0}):
        assert book.replay(seen)[1], seen


def _frames(url: str, last_event_id: str | None, count: int) -> list[dict[str, str]]:
    headers = {**AUTH, **({"last-event-id": last_event_id} if last_event_id else {})}
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200, response.read()
        frames: Iterator[dict[str, str]] = read_frames(response)
        return [next(frames) for _ in range(count)]


def _alert_ids(frames: list[dict[str, str]]) -> list[str]:
    return [orjson.loads(f["data"])["alert"]["alert_id"] for f in frames
            if f.get("event") == "alert"]


def test_a_started_api_resumes_an_id_within_its_read_and_resets_an_older_one(
        settings_factory, tmp_path) -> None:
    """Before 2026-11-24 the ids from before the read (1-1, 3-0) resumed without a reset:
    the client silently missed the changes between its id and where the read began."""
    settings = settings_factory(partitions=2, api_port=free_port())
    ensure_topics(settings.bootstrap, pipeline_topics(settings))
    asyncio.run(_publish(settings.bootstrap, settings.alerts_topic))
    api = start_api(settings, tmp_path / "api.log")
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{base}/readyz", timeout=5).text
            time.sleep(0.2)
        url = f"{base}/v1/alerts/stream?heartbeat_s=1"  # no wait for a frame that is not sent
        # A new client's id counts partition 1 as read up to where the read began.
        assert _frames(url, None, 1)[0] == {"retry": "3000", "id": "5-1"}
        # Within the read: the changes after the id, no reset.
        within = _frames(url, "3-1", 3)
        assert [f.get("event") for f in within] == [None, "alert", "alert"], within
        assert _alert_ids(within) == ["restated", "new"]
        assert within[0]["id"] == "3-1" and within[-1]["id"] == "5-1"
        # Before it, on either partition: reset, then what this API has.
        for seen in ("1-1", "3-0"):
            before = _frames(url, seen, 4)
            assert [f.get("event") for f in before] == [None, "reset", "alert", "alert"], seen
            assert "re-read GET /v1/alerts" in before[1]["data"]
            assert _alert_ids(before) == ["restated", "new"]
    finally:
        api.stop()


def test_a_restarted_api_shows_a_prefix_scoped_key_the_flood_of_its_unlisted_gauge(
        settings_factory, tmp_path) -> None:
    """A 50-gauge flood, opened nine days ago and busy since (another gauge every 6 hours),
    whose 30th gauge (not among the 20 listed) is the water company's and had its only event
    on day 0. The incident engine's events go onto the alerts topic stamped with their
    times, then an API starts: it reads their last 7 days. The company's key (``lx-pump-``)
    must see the flood; before 2026-11-25 that API's answer to it was an empty list and a
    404, as no event it read named that gauge."""
    from cityagent.incidents import AlertingConfig, IncidentEngine, ScopeState
    from cityagent.routing import default_router
    from tests.api.test_alert_book import _flood_of_50, _gauge_again

    t0 = NOW_MS - 9 * DAY_MS
    engine, state = IncidentEngine(AlertingConfig.load(), default_router()), ScopeState()
    events = _flood_of_50(engine, state, t0)
    for hour in range(6, 9 * 24, 6):
        events += _gauge_again(engine, state, t0 + hour * 3_600_000)
        events += engine.tick(state, t0 + hour * 3_600_000)
    alert_id = events[0].alert_id
    settings = settings_factory(partitions=1, api_port=free_port(),
                                api_keys="admin:adm,operator:water-co:lx-pump-,"
                                         "operator:other-co:wf-")
    ensure_topics(settings.bootstrap, pipeline_topics(settings))

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap)
        await producer.start()
        try:
            for e in events:
                await producer.send(settings.alerts_topic, orjson.dumps(e.to_dict()),
                                    key=e.scope.encode(), timestamp_ms=e.at_ms)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(publish())
    api = start_api(settings, tmp_path / "api.log")
    base = f"http://127.0.0.1:{settings.api_port}"
    try:
        def get(path: str, key: str) -> httpx.Response:
            return httpx.get(f"{base}{path}", headers={"authorization": f"Bearer {key}"},
                             timeout=15)

        everything = get("/v1/alerts", "adm").json()["alerts"]
        assert [a["alert_id"] for a in everything] == [alert_id]
        assert "lx-pump-000030" not in everything[0]["sensors"]
        listed = get("/v1/alerts", "water-co")
        assert [a["alert_id"] for a in listed.json()["alerts"]] == [alert_id], listed.text
        assert get(f"/v1/alerts/{alert_id}", "water-co").status_code == 200
        assert get(f"/v1/alerts/{alert_id}", "other-co").status_code == 404
    finally:
        api.stop()
