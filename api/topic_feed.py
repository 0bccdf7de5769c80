"""A read model's feed: a background task that reads one topic (from its beginning, or from a
lookback) for good.

The API's alert book and situation model are both folded from a topic (the stream is the
truth). Their feeds share how they run: a lost broker, or an error on one poll (a bug), is
logged and the feed resumes 2 s later where it was, so the read model never silently stops
following its topic while the API answers from a frozen copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, UnsupportedVersionError
from aiokafka.structs import ConsumerRecord, OffsetAndTimestamp

__all__ = ("TopicFeed", "topic_partitions", "newest_record_ms", "Lookback", "RecreatedTopicWatch")

log = logging.getLogger("cityagent.api")

RETRY_S = 2.0
#: How long a partition must end below what a feed read before the topic counts as recreated.
GRACE_S = 10.0
#: How long :func:`newest_record_ms` may take to read the partitions' last batches.
TAIL_READ_S = 10.0


class TopicFeed:
    """Runs ``_consume`` as a task until stopped, starting it again after any error."""

    #: Names the task and the log lines ("alert feed", "readings feed").
    name = "feed"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("%s lost the broker (%s); retrying in %g s", self.name, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug must not stop the feed for good: log it, go on
                log.exception("%s failed; retrying in %g s", self.name, RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _consume(self) -> None:
        """Read the topic until cancelled; resume where the read model is."""
        raise NotImplementedError


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, waiting up to 30 s for it to exist (KafkaError after)."""
    for _ in range(60):
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return [TopicPartition(topic, p) for p in sorted(ids)]
        await consumer._client.force_metadata_update()  # noqa: SLF001 (no public refresh call)
        await asyncio.sleep(0.5)
    raise KafkaError(f"topic {topic!r} does not exist; start the pipeline with `cityagent up`")


async def newest_record_ms(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                           timeout_s: float = TAIL_READ_S) -> int | None:
    """The newest Kafka record time (epoch ms) among the partitions' last batches; None when
    they hold no record (or none could be read within ``timeout_s``). Moves their positions.

    Each partition is read from one before its end offset to that end. On Apache Kafka that
    is its last record. The embedded broker (Tansu 0.6) reports as end offset the *last
    batch's* base offset + 1 (MEASURED.md), so one before it is that batch's first record; a
    fetch serves whole batches, and reading to where the position passes the end offset takes
    in the whole batch, its last record too. The maximum is taken, not the last record's
    time: a producer may stamp records out of order.
    """
    firsts = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    todo = [tp for tp in partitions if ends[tp] > firsts[tp]]
    for tp in todo:
        consumer.seek(tp, ends[tp] - 1)
    stamps: list[int] = []
    deadline = time.monotonic() + timeout_s
    while todo and time.monotonic() < deadline:
        polled = await consumer.getmany(*todo, timeout_ms=500)
        stamps.extend(r.timestamp for records in polled.values() for r in records)
        todo = [tp for tp in todo if await consumer.position(tp) < ends[tp]]
    if todo:
        log.warning("could not read the last records of %s within %g s", todo, timeout_s)
    return max(stamps, default=None)


class Lookback:
    """Where a feed starts on the partitions it has not read: ``lookback_ms`` ago, by Kafka
    record time (None: the topic's beginning).

    Why: a topic that keeps days (the readings) or months (the alerts' audit trail) would keep
    a starting API unready for as long as it takes to read it all, when its read model needs
    only the recent part. The cutoff (now - lookback) is fixed at the first :meth:`seek`, so a
    feed that lost the broker resumes against the same one; :meth:`restart` forgets it.

    With ``from_newest`` the cutoff is ``lookback_ms`` before the topic's newest record
    (:func:`newest_record_ms`) when that is older than now: for a read model that, running,
    forgets by its stream's time rather than the clock (the alert book), so that a topic whose
    writers have all been stopped for longer than the lookback still gives a starting API what
    a running one holds, not nothing.

    ``start`` holds where each partition's read began; ``skipped`` counts the records read but
    dropped by :meth:`recent` as older than the cutoff; ``read_from`` holds where each
    partition's taken records begin: ``start``, moved past the records dropped, and final once
    :meth:`dropping` is False (or the partition is read to its end).
    """

    def __init__(self, lookback_ms: int | None, feed_name: str = "feed", *,
                 from_newest: bool = False) -> None:
        self.lookback_ms = lookback_ms
        self.feed_name = feed_name
        self.from_newest = from_newest
        self.cutoff_ms: int | None = None
        self.start: dict[TopicPartition, int] = {}
        self.read_from: dict[TopicPartition, int] = {}
        self.skipped = 0
        self._before_cutoff: set[TopicPartition] = set()  # no record at or after the cutoff yet

    @classmethod
    def since(cls, cutoff_ms: int, feed_name: str = "feed") -> Lookback:
        """A lookback to a fixed time (epoch ms) rather than to a span before the first seek."""
        lookback = cls(0, feed_name)
        lookback.cutoff_ms = max(cutoff_ms, 0)
        return lookback

    def restart(self) -> None:
        """Forget the cutoff and the starts: the next :meth:`seek` is a first start again."""
        self.cutoff_ms = None
        self.start.clear()
        self.read_from.clear()
        self._before_cutoff.clear()

    async def seek(self, consumer: AIOKafkaConsumer, fresh: list[TopicPartition]) -> None:
        """Seek partitions the feed has not read from: to their first record at or after the
        cutoff, to their end when none is that recent, to their beginning when the broker
        cannot say (or there is no lookback). The cutoff is now - lookback; with
        ``from_newest``, min(now, the newest record of ``fresh``) - lookback (on a first seek,
        ``fresh`` is every partition of the topic).

        The embedded broker (Tansu 0.6) answers a time lookup by the time *it* appended each
        batch, not by the records' own timestamps, and answers "no record that recent" with
        offset 0 and timestamp 0 rather than Kafka's -1 (tried: records stamped two days ago
        but appended now are all found after a cutoff of one day ago; a cutoff after the last
        append gives (0, 0) on every partition). So an answer dated before the cutoff is taken
        as no answer (the beginning), and :meth:`recent` skips, on each such partition, the
        records before the first one stamped at or after the cutoff: the broker's answer only
        saves reading, the record timestamps decide. On Apache Kafka both agree and nothing is
        skipped. (aiokafka also gives None for a broker whose messages carry no timestamps,
        format < 0.10, which no supported Kafka writes.)
        """
        firsts = await consumer.beginning_offsets(fresh)
        answers: dict[TopicPartition, OffsetAndTimestamp | None] = {}  # absent: cannot say
        cutoff = self.cutoff_ms
        if self.lookback_ms is not None:
            if cutoff is None:
                cutoff = self.cutoff_ms = max(await self._until_ms(consumer, fresh)
                                              - self.lookback_ms, 0)
            try:
                answers = await consumer.offsets_for_times(dict.fromkeys(fresh, cutoff))
            except UnsupportedVersionError as exc:
                log.warning("the broker cannot look up offsets by time (%s): the %s reads the "
                            "whole topic", exc, self.feed_name)
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
            self.start[tp] = self.read_from[tp] = offset
            if cutoff is not None:
                self._before_cutoff.add(tp)

    async def _until_ms(self, consumer: AIOKafkaConsumer, fresh: list[TopicPartition]) -> int:
        """Where the lookback ends: now, or with ``from_newest`` the newest record if older."""
        now_ms = int(time.time() * 1000)
        newest = await newest_record_ms(consumer, fresh) if self.from_newest else None
        if newest is None or newest >= now_ms:
            return now_ms
        if self.lookback_ms is not None and now_ms - newest > self.lookback_ms:
            log.info("the %s reads up to the topic's newest record, %.1f days old",
                     self.feed_name, (now_ms - newest) / 86_400_000)
        return newest

    def recent(self, polled: Mapping[TopicPartition, list[ConsumerRecord]]
               ) -> tuple[list[ConsumerRecord], int]:
        """The polled records to take, and how many were dropped: on a freshly sought
        partition, none before its first record stamped at or after the cutoff (see
        :meth:`seek`)."""
        kept: list[ConsumerRecord] = []
        dropped = 0
        for tp, records in polled.items():
            if tp in self._before_cutoff and self.cutoff_ms is not None:
                first = next((i for i, r in enumerate(records)
                              if r.timestamp >= self.cutoff_ms), len(records))
                if first < len(records):
                    self._before_cutoff.discard(tp)
                if first:
                    self.read_from[tp] = max(self.read_from.get(tp, 0), records[first - 1].offset + 1)
                dropped += first
                records = records[first:]
            kept.extend(records)
        self.skipped += dropped
        return kept, dropped

    def dropping(self, tp: TopicPartition) -> bool:
        """True while :meth:`recent` may still drop records of ``tp`` as older than the cutoff
        (none at or after it read there yet), so its ``read_from`` may still move."""
        return self.cutoff_ms is not None and tp in self._before_cutoff


class RecreatedTopicWatch:
    """Tells a topic recreated under a feed from a partition whose new leader lags behind.

    A partition never ends below a record it served, so a fetch that reports its high
    watermark below what the feed has read means the topic was recreated: the embedded broker
    restarted empty (it keeps nothing), or the topic was deleted and created again on Kafka.
    The consumer would otherwise wait, silently, until the new topic's offsets passed the old
    ones, and skip everything below them.

    One exception, on a Kafka cluster: right after a partition's leader moves, the new leader
    may report a high watermark that lags the old one's for a moment. So a partition counts as
    recreated once it has been seen below ``read`` for ``grace_s`` in a row.

    The fetch's high watermark is the one to ask, also on the embedded broker: its ListOffsets
    answer can be a batch short (MEASURED.md), which would look like a recreated topic; its
    fetch answer was never seen below a record it had served.
    """

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self._below_since: dict[int, float] = {}

    def recreated(self, consumer: AIOKafkaConsumer, read: Mapping[int, int]) -> list[int]:
        """The consumer's partitions found recreated; ``read``: offset after the last record."""
        highwaters = {tp.partition: consumer.highwater(tp) for tp in consumer.assignment()}
        return self.check(highwaters, read, time.monotonic())

    def check(self, highwaters: Mapping[int, int | None], read: Mapping[int, int],
              now: float) -> list[int]:
        """The partitions whose high watermark has been below ``read`` for ``grace_s``."""
        below = {p for p, hw in highwaters.items() if hw is not None and hw < read.get(p, 0)}
        for p in list(self._below_since):
            if p not in below:
                del self._below_since[p]
        for p in below:
            self._below_since.setdefault(p, now)
        return sorted(p for p, since in self._below_since.items() if now - since >= self.grace_s)

    def reset(self) -> None:
        self._below_since.clear()
