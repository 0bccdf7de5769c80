"""Keeping the API's situation model up to date from the readings topic.

The stream is the truth: on start the API reads the readings topic into a
:class:`~cityagent.situation.SituationModel`, as :class:`~api.read_model.AlertFeed` does for
alerts, so a restarted API or a second replica answers as the first. Each poll's messages are
decoded and folded in one numpy pass; a message that is no reading batch is skipped, counted
and logged.

Why a lookback: the topic keeps 7 days, and a province-wide fleet (100k-1M sensors) writes
billions of readings in that time; re-reading them all would keep a restarted API unready for
hours. So a fresh start reads only the last ``lookback_ms`` of the topic, by Kafka record time
(the producers' create time: the API's publisher and the simulator leave the timestamp to the
client, which stamps the send time). The price: a sensor silent for longer than the lookback
is unknown to a restarted API unless the sensor registry names it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import UnsupportedVersionError
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp

from api.publisher import concat_batches
from api.topic_feed import RecreatedTopicWatch, TopicFeed, topic_partitions
from cityagent.batch import ReadingBatch, decode_batch
from cityagent.errors import InvalidBatch
from cityagent.situation import SituationModel

__all__ = ("ReadingsFeed",)

log = logging.getLogger("cityagent.api")

#: Messages folded at once: ~500 readings each, so at most a ~100k-reading fold (~60 ms) holds
#: the event loop.
MAX_RECORDS = 200


class ReadingsFeed(TopicFeed):
    """Folds the readings topic, from ``lookback_ms`` ago (None: its beginning), into a model.

    ``caught_up`` turns True once the feed has read up to the end offsets the topic had when
    it started, or read nothing in a whole poll (as the alert feed, for the embedded broker's
    short high watermarks). ``lag`` is the messages between the feed's position and the last
    high watermarks the broker reported; :attr:`progress` is how far the start-up catch-up is.
    """

    name = "readings feed"

    def __init__(self, bootstrap: str, topic: str, model: SituationModel, *,
                 lookback_ms: int | None = None) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._topic = topic
        self._model = model
        self._lookback_ms = lookback_ms
        self._cutoff_ms: int | None = None  # now - lookback, fixed at the first start
        self._next: dict[TopicPartition, int] = {}  # where to resume after a lost broker
        self._start: dict[TopicPartition, int] = {}  # where each partition's catch-up began
        self._ends: dict[TopicPartition, int] = {}  # where it ends: the end offsets at start
        self._before_cutoff: set[TopicPartition] = set()  # no record at or after the cutoff yet
        self.caught_up = False
        self.malformed = 0  # messages that were no reading batch
        self.messages = 0
        self.skipped_old = 0  # messages read but older than the lookback (not folded)
        self.lag = 0
        self._watch = RecreatedTopicWatch()

    @property
    def progress(self) -> tuple[int, int]:
        """(messages read, messages to read) of the start-up catch-up: from where each partition
        began to the end offsets it had then. Both are the total once caught up (the embedded
        broker's short end offsets can leave the count below it)."""
        total = sum(max(end - self._start.get(tp, 0), 0) for tp, end in self._ends.items())
        if self.caught_up:
            return total, total
        done = sum(max(min(self._position(tp), end) - self._start.get(tp, 0), 0)
                   for tp, end in self._ends.items())
        return done, total

    def _position(self, tp: TopicPartition) -> int:
        return self._next.get(tp, self._start.get(tp, 0))

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 << 20,
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self._topic)
            consumer.assign(partitions)
            fresh = [tp for tp in partitions if tp not in self._next]
            for tp in partitions:
                if tp in self._next:
                    consumer.seek(tp, self._next[tp])
            if fresh:
                await self._seek_fresh(consumer, fresh)
            ends = await consumer.end_offsets(partitions)
            if not self.caught_up:
                self._ends = ends
            while True:
                polled = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
                recreated = self._watch.recreated(
                    consumer, {tp.partition: n for tp, n in self._next.items()})
                if recreated:
                    # The sensors' states stay: they are what was read, and newer readings
                    # replace them. Only the positions are of a topic that is gone.
                    log.warning("the readings topic %s was recreated (partitions %s end below "
                                "what this API had read): reading it again from the beginning",
                                self._topic, recreated)
                    self._next.clear()
                    self._watch.reset()
                    return
                try:
                    self._fold(self._recent(polled))
                finally:  # a poll that failed (a bug, logged by the feed) is not read again
                    for tp, records in polled.items():
                        self._next[tp] = records[-1].offset + 1
                self.lag = sum(max((consumer.highwater(tp) or 0) - self._position(tp), 0)
                               for tp in partitions)
                if not self.caught_up and (not polled or all(
                        self._position(tp) >= end for tp, end in ends.items())):
                    self.caught_up = True
                    log.info("readings feed caught up: %d sensors, %d readings; %d messages "
                             "older than the lookback skipped", len(self._model),
                             self._model.readings_total, self.skipped_old)
                await asyncio.sleep(0)  # let requests in between folds
        finally:
            await consumer.stop()

    async def _seek_fresh(self, consumer: AIOKafkaConsumer, fresh: list[TopicPartition]) -> None:
        """Seek partitions the feed has not read from: to their first record at or after the
        cutoff (now - lookback), to their end when none is that recent, to their beginning
        when the broker cannot say (or there is no lookback).

        The embedded broker (Tansu 0.6) answers a time lookup by the time *it* appended each
        batch, not by the records' own timestamps, and answers "no record that recent" with
        offset 0 and timestamp 0 rather than Kafka's -1 (tried: records stamped two days ago
        but appended now are all found after a cutoff of one day ago; a cutoff after the last
        append gives (0, 0) on every partition). So an answer dated before the cutoff is taken
        as no answer (the beginning), and :meth:`_recent` skips, on each such partition, the
        records before the first one stamped at or after the cutoff: the broker's answer only
        saves reading, the record timestamps decide. On Apache Kafka both agree and nothing is
        skipped. (aiokafka also gives None for a broker whose messages carry no timestamps,
        format < 0.10, which no supported Kafka writes.)
        """
        firsts = await consumer.beginning_offsets(fresh)
        answers: dict[TopicPartition, OffsetAndTimestamp | None] = {}  # absent: cannot say
        cutoff = self._cutoff_ms
        if self._lookback_ms is not None:
            if cutoff is None:
                cutoff = self._cutoff_ms = max(int(time.time() * 1000) - self._lookback_ms, 0)
            try:
                answers = await consumer.offsets_for_times(dict.fromkeys(fresh, cutoff))
            except UnsupportedVersionError as exc:
                log.warning("the broker cannot look up offsets by time (%s): the readings "
                            "feed reads the whole topic", exc)
        ends = await consumer.end_offsets(fresh) if answers else {}
        for tp in fresh:
            offset = firsts[tp]
            if tp in answers:
                hit = answers[tp]
                if hit is None:  # no record at or after the cutoff
                    offset = ends[tp]
                elif cutoff is not None and hit.timestamp >= cutoff:
                    offset = hit.offset
            consumer.seek(tp, offset)
            self._start[tp] = offset
            if cutoff is not None:
                self._before_cutoff.add(tp)

    def _recent(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> list[ConsumerRecord]:
        """The polled records to fold: on a fresh partition, none before its first record
        stamped at or after the cutoff (see :meth:`_seek_fresh`); read and counted all the
        same."""
        kept: list[ConsumerRecord] = []
        for tp, records in polled.items():
            if tp in self._before_cutoff and self._cutoff_ms is not None:
                first = next((i for i, r in enumerate(records)
                              if r.timestamp >= self._cutoff_ms), len(records))
                if first < len(records):
                    self._before_cutoff.discard(tp)
                self.skipped_old += first
                self.messages += first
                records = records[first:]
            kept.extend(records)
        return kept

    def _fold(self, records: list) -> None:
        if not records:
            return
        batches: list[ReadingBatch] = []
        arrived: list[np.ndarray] = []
        for record in records:
            try:
                if record.value is None:
                    raise InvalidBatch("the message has no value")
                batch = decode_batch(record.value)
            except InvalidBatch as exc:
                self.malformed += 1
                log.warning("skipped a malformed reading batch at %s[%d]@%d: %s", record.topic,
                            record.partition, record.offset, exc)
                continue
            batches.append(batch)
            arrived.append(np.full(len(batch), record.timestamp, dtype=np.int64))
        self.messages += len(records)
        if batches:
            self._model.update(concat_batches(batches), int(time.time() * 1000),
                               np.concatenate(arrived))
