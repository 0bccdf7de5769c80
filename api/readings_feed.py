"""Keeping the API's situation model up to date from the readings topic.

The stream is the truth: on start the API reads the readings topic from the beginning into a
:class:`~cityagent.situation.SituationModel`, as :class:`~api.read_model.AlertFeed` does for
alerts, so a restarted API or a second replica answers as the first. Each poll's messages are
decoded and folded in one numpy pass; a message that is no reading batch is skipped, counted
and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

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
    """Folds the readings topic, from its beginning, into a SituationModel.

    ``caught_up`` turns True once the feed has read up to the end offsets the topic had when
    it started, or read nothing in a whole poll (as the alert feed, for the embedded broker's
    short high watermarks). ``lag`` is the messages between the feed's position and the last
    high watermarks the broker reported.
    """

    name = "readings feed"

    def __init__(self, bootstrap: str, topic: str, model: SituationModel) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._topic = topic
        self._model = model
        self._next: dict[TopicPartition, int] = {}  # where to resume after a lost broker
        self.caught_up = False
        self.malformed = 0  # messages that were no reading batch
        self.messages = 0
        self.lag = 0
        self._watch = RecreatedTopicWatch()

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
                await consumer.seek_to_beginning(*fresh)
            ends = await consumer.end_offsets(partitions)
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
                    self._fold([r for records in polled.values() for r in records])
                finally:  # a poll that failed (a bug, logged by the feed) is not read again
                    for tp, records in polled.items():
                        self._next[tp] = records[-1].offset + 1
                self.lag = sum(max((consumer.highwater(tp) or 0) - self._next.get(tp, 0), 0)
                               for tp in partitions)
                if not self.caught_up and (not polled or all(
                        self._next.get(tp, 0) >= end for tp, end in ends.items())):
                    self.caught_up = True
                    log.info("readings feed caught up: %d sensors, %d readings",
                             len(self._model), self._model.readings_total)
                await asyncio.sleep(0)  # let requests in between folds
        finally:
            await consumer.stop()

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
