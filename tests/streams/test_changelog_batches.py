"""The workers' producer: one record per batch on table changelogs, batches elsewhere
(streams.changelog_batches), on the session's broker over the Kafka protocol."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from cityagent.settings import Settings
from control.topics import TopicSpec, ensure_topics
from streams.app import create_app
from streams.changelog_batches import CHANGELOG_SUFFIX, ChangelogSafeProducer

pytestmark = pytest.mark.integration

RECORDS = 300


async def _produce(bootstrap: str, events: str, changelog: str) -> Counter:
    """Send RECORDS records to each topic at once, as the agents and a checkpoint do; return
    how many batches each topic's records went in."""
    producer = ChangelogSafeProducer(bootstrap_servers=bootstrap, acks="all")
    batches: Counter = Counter()
    accumulator = producer._message_accumulator
    append_batch = accumulator._append_batch

    def counting(builder, tp):
        batches[tp.topic] += 1
        return append_batch(builder, tp)

    accumulator._append_batch = counting
    await producer.start()
    try:
        async def send_all(topic: str) -> list:
            return [await producer.send(topic, f"{topic}:{i}".encode(), key=b"k", partition=0)
                    for i in range(RECORDS)]

        sent = await asyncio.gather(send_all(events), send_all(changelog))
        await asyncio.gather(*sent[0], *sent[1])
    finally:
        await producer.stop()
    return batches


async def _read(bootstrap: str, topic: str) -> tuple[list[bytes], int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        values: list[bytes] = []
        for _ in range(60):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(r.value for r in records)
            if len(values) >= RECORDS:
                break
        return values, end
    finally:
        await consumer.stop()


def test_changelog_records_go_one_per_batch_and_other_records_share_batches(
        kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    events, changelog = f"t{tag}.alerts", f"app-{tag}-incidents{CHANGELOG_SUFFIX}"
    ensure_topics(kafka_bootstrap, [TopicSpec(events, 1), TopicSpec(changelog, 1, compacted=True)])

    batches = asyncio.run(_produce(kafka_bootstrap, events, changelog))

    assert batches[changelog] == RECORDS  # never two changelog records in one batch
    assert batches[events] < RECORDS / 4, batches  # the rest is batched
    for topic in (events, changelog):
        values, end = asyncio.run(_read(kafka_bootstrap, topic))
        assert values == [f"{topic}:{i}".encode() for i in range(RECORDS)]  # all, in order
        if topic == changelog:
            # What Faust's recovery reads up to. The embedded broker reports the last
            # batch's base offset + 1, exact only because that batch holds one record.
            assert end == RECORDS


def test_the_worker_app_produces_with_the_changelog_safe_producer() -> None:
    app = create_app(Settings(kafka="127.0.0.1:9", app_id="t-producer"))
    assert app.producer._producer_type is ChangelogSafeProducer
