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
is unknown to a restarted API unless the sensor registry names it. A running API forgets such
sensors too (``SituationModel.forget``, every ``FORGET_EVERY_S``): replicas started at
different times then list the same sensors, and a model does not grow for good as sensor ids
churn (every id it ever saw also shortened every sensor's chart: the series share a budget).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.publisher import concat_batches
from api.topic_feed import Lookback, RecreatedTopicWatch, TopicFeed, topic_partitions
from cityagent.batch import ReadingBatch, decode_batch
from cityagent.errors import InvalidBatch
from cityagent.situation import SituationModel

__all__ = ("ReadingsFeed",)

log = logging.getLogger("cityagent.api")

#: Messages folded at once: ~500 readings each, so at most a ~100k-reading fold (~60 ms) holds
#: the event loop.
MAX_RECORDS = 200


#: Seconds between two looks for sensors silent for longer than the lookback (a scan of one
#: column; a copy of the model's rows only when some are found).
FORGET_EVERY_S = 600.0


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
        # Where each partition's catch-up began; the cutoff is fixed at the first start.
        self._lookback = Lookback(lookback_ms, self.name)
        self._next: dict[TopicPartition, int] = {}  # where to resume after a lost broker
        self._ends: dict[TopicPartition, int] = {}  # where it ends: the end offsets at start
        self.caught_up = False
        self.malformed = 0  # messages that were no reading batch
        self.messages = 0
        self.lag = 0
        self.forgotten = 0  # sensors dropped from the model: silent for longer than the lookback
        self._forget_at = time.monotonic() + FORGET_EVERY_S
        self._watch = RecreatedTopicWatch()

    @property
    def skipped_old(self) -> int:
        """Messages read but older than the lookback (not folded)."""
        return self._lookback.skipped

    @property
    def progress(self) -> tuple[int, int]:
        """(messages read, messages to read) of the start-up catch-up: from where each partition
        began to the end offsets it had then. Both are the total once caught up (the embedded
        broker's short end offsets can leave the count below it)."""
        total = sum(max(end - self._lookback.start.get(tp, 0), 0) for tp, end in self._ends.items())
        if self.caught_up:
            return total, total
        done = sum(max(min(self._position(tp), end) - self._lookback.start.get(tp, 0), 0)
                   for tp, end in self._ends.items())
        return done, total

    def _position(self, tp: TopicPartition) -> int:
        return self._next.get(tp, self._lookback.start.get(tp, 0))

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
                await self._lookback.seek(consumer, fresh)
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
                recent, skipped = self._lookback.recent(polled)
                self.messages += skipped  # read and counted, not folded
                try:
                    self._fold(recent)
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
                self._forget_silent()
                await asyncio.sleep(0)  # let requests in between folds
        finally:
            await consumer.stop()

    def _forget_silent(self) -> None:
        """Every ``FORGET_EVERY_S``: drop the sensors a starting API would not know (no reading
        within the lookback, not in the registry)."""
        lookback_ms = self._lookback.lookback_ms
        if lookback_ms is None or time.monotonic() < self._forget_at:
            return
        self._forget_at = time.monotonic() + FORGET_EVERY_S
        dropped = self._model.forget(int(time.time() * 1000) - lookback_ms)
        if dropped:
            self.forgotten += dropped
            log.info("readings feed: forgot %d sensors with no reading in the last %g h (a "
                     "starting API would not know them either; the registry keeps its sensors)",
                     dropped, lookback_ms / 3_600_000)

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
