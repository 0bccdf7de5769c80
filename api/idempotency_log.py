"""Idempotency records of readings that outlive the API process and reach every replica.

A client retries a POST it got no answer to, and that is most often because the API
restarted under it, or because a load balancer sent the retry to another replica. A record
kept in one process's memory (``api/idempotency.py``) answers neither, and the retry stored
the readings a second time. So every accepted POST of readings with an ``Idempotency-Key``
also writes its record (key, body fingerprint, answer) to ``<prefix>.idempotency`` before its
202 goes out, and every API process follows that topic into its cache: from its beginning
on start (the topic keeps an hour, ``control.topics.IDEMPOTENCY_RETENTION_MS``; records
older than the cache's 10 minutes are read and dropped), then as records come.

Until a starting API has read the topic up to where it ended then, it cannot tell a retry
from a new request, so it answers keyed POSTs of readings 503 with ``Retry-After`` meanwhile
(requests without a key are unaffected). The gap left: a record is written after the
readings are acknowledged, so a process that dies between the two (milliseconds), or a
record Kafka refuses (logged, counted, the 202 still sent: the readings are stored; an
answer listing ~10,000 rejections is over Kafka's 1 MB), leaves
a retry to store the readings again; and a retry reaching another replica while the first
request still runs there is not yet known to it. Operators' alert commands need none of
this: their command id derives from the key, and the alerting agent applies an id once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.commands import CommandPublisher
from api.idempotency import IdempotencyCache, StoredResponse
from api.topic_feed import RecreatedTopicWatch, TopicFeed, topic_partitions
from cityagent.errors import BrokerError, RecordTooLarge

__all__ = ("IdempotencyLog",)

log = logging.getLogger("cityagent.api")


class IdempotencyLog(TopicFeed):
    """Writes this process's records to the topic; reads everyone's into ``cache``.

    ``caught_up``: the topic has been read up to where it ended when this process started (or
    a whole poll read nothing: the embedded broker's end offsets can be a batch short).
    """

    name = "idempotency feed"

    def __init__(self, bootstrap: str, topic: str, cache: IdempotencyCache) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._topic = topic
        self._cache = cache
        self._writer = CommandPublisher(bootstrap, topic)
        self._next: dict[TopicPartition, int] = {}
        self._watch = RecreatedTopicWatch()
        self.caught_up = False
        self.read = 0  # records read from the topic
        self.taken = 0  # of them, taken into the cache (not expired, not known here)
        self.malformed = 0
        self.written = 0
        self.failed = 0  # records Kafka did not acknowledge (their requests were answered 202)

    async def open(self) -> None:
        """Connect the writer (BrokerError if Kafka cannot be reached) and start following."""
        await self._writer.start()
        self.start()

    async def close(self) -> None:
        await self.stop()
        await self._writer.stop()

    async def record(self, owner: str, key: str, fingerprint: bytes,
                     response: StoredResponse) -> None:
        """Write the record of an accepted request; a failure is logged and counted, not
        raised: the readings are stored, and the answer must say so."""
        value = orjson.dumps({"owner": owner, "key": key, "fingerprint": fingerprint.hex(),
                              "status": response.status, "body": response.body.decode(),
                              "at_ms": int(time.time() * 1000)})
        try:
            await self._writer.send_value(f"{owner} {key}", value, "idempotency record")
        except (BrokerError, RecordTooLarge) as exc:  # too large: an answer of ~10,000 rejections
            self.failed += 1
            log.warning("the idempotency record of key %r (API key %s) was not stored (%s): a "
                        "retry reaching another API process, or this one restarted, will "
                        "store its readings again", key, owner, exc)
        else:
            self.written += 1

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self._topic)
            consumer.assign(partitions)
            for tp in partitions:
                if tp in self._next:
                    consumer.seek(tp, self._next[tp])
            await consumer.seek_to_beginning(*[tp for tp in partitions if tp not in self._next])
            ends = await consumer.end_offsets(partitions)
            firsts = await consumer.beginning_offsets(partitions)
            if not self.caught_up and all(ends[tp] <= firsts[tp] for tp in partitions):
                self.caught_up = True  # nothing written yet (or all of it expired)
            while True:
                polled = await consumer.getmany(timeout_ms=500, max_records=1000)
                if self._watch.recreated(consumer, {tp.partition: n
                                                    for tp, n in self._next.items()}):
                    log.warning("the idempotency topic %s was recreated: reading it again",
                                self._topic)
                    self._next.clear()
                    self._watch.reset()
                    return
                now_ms = int(time.time() * 1000)
                for tp, records in polled.items():
                    for record in records:
                        self._take(record.value, now_ms, f"{tp.partition}@{record.offset}")
                    self._next[tp] = records[-1].offset + 1
                if not self.caught_up and (not polled or all(
                        self._next.get(tp, 0) >= end for tp, end in ends.items())):
                    self.caught_up = True
                    log.info("idempotency feed caught up: %d records read, %d of them recent",
                             self.read, self.taken)
                await asyncio.sleep(0)
        finally:
            await consumer.stop()

    def _take(self, value: bytes | None, now_ms: int, where: str) -> None:
        self.read += 1
        try:
            doc: Any = orjson.loads(value or b"")
            owner, key, at_ms = doc["owner"], doc["key"], doc["at_ms"]
            response = StoredResponse(int(doc["status"]), str(doc["body"]).encode())
            fingerprint = bytes.fromhex(doc["fingerprint"])
            if not (isinstance(owner, str) and isinstance(key, str) and isinstance(at_ms, int)):
                raise TypeError("owner, key and at_ms must be text, text and an integer")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.malformed += 1
            log.warning("skipped a malformed idempotency record at %s[%s]: %s", self._topic,
                        where, exc)
            return
        if self._cache.remember(owner, key, fingerprint, response, (now_ms - at_ms) / 1000):
            self.taken += 1
