"""Keeping the API's alert book up to date from the alerts topic, and fanning changes out.

The stream is the truth: on start the API reads the alerts topic into an
:class:`~api.alert_book.AlertBook`, so a restarted API, or a second replica, answers as the
first (with the embedded broker, only as long as the broker runs). It reads the last 7 days of
it (``RETENTION_H``, by Kafka record time), not its beginning: the topic is the audit trail and
keeps months (``CITYAGENT_ALERTS_RETENTION_DAYS``), but the book needs no more than 7 days, as
it forgets resolved alerts after that and open ones are restated every day
(docs/alerting.md). The 7 days end at the topic's newest record when that is older than now
(every worker stopped that long): the book forgets by its newest event's time, not the clock,
so that is what an API running since holds. Reading months would make every start slower with the topic's age. :class:`AlertFeed` does
the reading; :class:`AlertHub` hands each applied event to the live-stream clients that want
it, each through its own bounded queue, so a slow client never holds back the feed or the
other clients: when its queue is full it is cut off (and told so) and may resume with its
last event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from api.alert_book import AlertBook, FeedEntry, MalformedEvent
from api.topic_feed import Lookback, RecreatedTopicWatch, TopicFeed, topic_partitions
from cityagent.settings import RETENTION_H

__all__ = ("AlertBook", "AlertFeed", "AlertHub", "Subscription", "RECREATED", "TopicRecreated",
           "LOOKBACK_MS")

log = logging.getLogger("cityagent.api")

#: How far back a starting feed reads the alerts topic, by Kafka record time: 7 days, the
#: book's ``resolved_for_ms``, before now or the topic's newest record, whichever is sooner.
#: Every open alert has an event in it (the daily ``restated``).
LOOKBACK_MS = RETENTION_H * 3_600_000


class TopicRecreated:
    """Queued to every stream client when the feed found the alerts topic recreated.

    What the client had is of a topic that no longer exists; what follows in its queue is of
    the new one, from its beginning (the book is read again).
    """


RECREATED = TopicRecreated()


class Subscription:
    """One stream client's queue of feed entries; ``overflowed`` once it fell too far behind."""

    def __init__(self, wants: Callable[[FeedEntry], bool], maxsize: int) -> None:
        self.wants = wants
        self.queue: asyncio.Queue[FeedEntry | TopicRecreated] = asyncio.Queue(maxsize)
        self.overflowed = False


class AlertHub:
    """Hands every applied feed entry to the subscriptions that want it, never waiting."""

    def __init__(self, queue_size: int = 1_000) -> None:
        self.queue_size = queue_size
        self._subscriptions: set[Subscription] = set()

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, wants: Callable[[FeedEntry], bool],
                  queue_size: int | None = None) -> Subscription:
        subscription = Subscription(wants, queue_size or self.queue_size)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def recreated(self) -> None:
        """Tell every client the topic was recreated: drop what it has queued, then say so.

        The queued entries are of the old topic, which the client will re-list without; the
        marker fits in the emptied queue, and everything published after it is of the new one.
        """
        for subscription in self._subscriptions:
            while not subscription.queue.empty():
                subscription.queue.get_nowait()
            subscription.queue.put_nowait(RECREATED)

    def publish(self, entry: FeedEntry) -> None:
        """Queue the entry for each client that wants it; a full queue cuts its client off."""
        for subscription in tuple(self._subscriptions):
            if not subscription.wants(entry):
                continue
            try:
                subscription.queue.put_nowait(entry)
            except asyncio.QueueFull:
                subscription.overflowed = True
                self._subscriptions.discard(subscription)


class AlertFeed(TopicFeed):
    """Keeps an AlertBook up to date from the alerts topic, from ``lookback_ms`` ago (None: its
    beginning; see :class:`~api.topic_feed.Lookback`).

    ``caught_up`` turns True once the feed has read up to the end offsets the topic had when
    the feed started, or read nothing in a whole poll (the embedded broker may report a high
    watermark a batch away from what it serves; waiting for it could last forever). The book
    learns where the read of each partition began (:meth:`AlertBook.skip_to`), and becomes
    ``resumable`` once that can no longer move (at the latest when caught up), so the stream
    can tell a client whose id is older to re-list.
    """

    name = "alert feed"

    def __init__(self, bootstrap: str, topic: str, book: AlertBook,
                 hub: AlertHub | None = None, *, lookback_ms: int | None = LOOKBACK_MS) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self._topic = topic
        self._book = book
        self._hub = hub
        # From the newest record: the book forgets by its events' time, not the clock.
        self._lookback = Lookback(lookback_ms, self.name, from_newest=True)
        self.caught_up = False
        self.malformed = 0
        self._watch = RecreatedTopicWatch()

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self._topic)
            consumer.assign(partitions)
            await self._seek(consumer, partitions)
            ends = await consumer.end_offsets(partitions)
            self._book.note_topic_ends({tp.partition: end for tp, end in ends.items()})
            await self._settle(consumer, ends, {})
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                recreated = self._watch.recreated(consumer, self._book.next_offsets)
                if recreated:
                    self._start_again(recreated)
                    return
                kept, dropped = self._lookback.recent(batches)
                if dropped:
                    self._skip_to_read_from()
                for record in kept:
                    self._take(record)
                if not self._book.resumable:
                    await self._settle(consumer, ends, batches)
                if not self.caught_up and (not batches or await _at(consumer, ends)):
                    self.caught_up = self._book.resumable = True
                    log.info("alert feed caught up: %d alerts", len(self._book))
        finally:
            await consumer.stop()

    def _start_again(self, recreated: list[int]) -> None:
        """The topic was recreated: forget the book, tell the stream clients, re-read it all.

        Returning from ``_consume`` starts it again at once, with a new consumer that finds
        the book empty and so reads every partition afresh (from the lookback, taken anew).
        """
        log.warning("the alerts topic %s was recreated (partitions %s end below what this API "
                    "had read): forgetting its %d alerts and reading it again from the "
                    "beginning", self._topic, recreated, len(self._book))
        self._book.clear()
        self._watch.reset()
        self._lookback.restart()
        self.caught_up = False
        if self._hub is not None:
            self._hub.recreated()

    async def _seek(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        """Resume where the book is (after a lost broker), else start at the lookback and tell
        the book where (:meth:`AlertBook.skip_to`)."""
        read = self._book.next_offsets
        fresh = [tp for tp in partitions if tp.partition not in read]
        for tp in partitions:
            if tp.partition in read:
                consumer.seek(tp, read[tp.partition])
        if fresh:
            await self._lookback.seek(consumer, fresh)
            self._skip_to_read_from()

    def _skip_to_read_from(self) -> None:
        """Tell the book where the read of each partition begins (moved by dropped records)."""
        for tp, offset in self._lookback.read_from.items():
            self._book.skip_to(tp.partition, offset)

    async def _settle(self, consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int],
                      batches: dict) -> None:
        """Mark the book resumable once no partition's read start can move any more.

        A start moves while the lookback may still drop records there as older than its
        cutoff (:meth:`Lookback.dropping`): always on the embedded broker, whose time lookup
        answers by append time, until the first recent record or the partition's end. Until
        then a stream client's old id could not be told from a good one.
        """
        for tp, end in ends.items():
            if self._lookback.dropping(tp) and (tp in batches
                                                or await consumer.position(tp) < end):
                return
        self._book.resumable = True

    def _take(self, record) -> None:
        try:
            entry = self._book.apply(orjson.loads(record.value), partition=record.partition,
                                     offset=record.offset)
        except (orjson.JSONDecodeError, TypeError, MalformedEvent) as exc:
            self.malformed += 1
            if self.malformed <= 10 or self.malformed % 1000 == 0:  # not one line per message
                log.warning("skipped a malformed alert event at %s[%d]@%d (%d so far): %s",
                            record.topic, record.partition, record.offset, self.malformed, exc)
            return
        if entry is not None and self._hub is not None:
            self._hub.publish(entry)


async def _at(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """True when every partition's position has reached its end offset."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
