"""Follow a compacted topic whole, from its start, in every process that needs all of it.

Zones and maintenance windows are small, change rarely and must be the same in every worker
and API process, so each process reads the whole topic with a plain consumer (no consumer
group: a group would give each process only a share of the partitions) and keeps following
it. ``on_record(key, value)`` gets each record (value JSON-decoded, None for a tombstone) and
says whether it changed anything; ``on_change()`` runs once per batch that did.

**Caught up.** Until a follower has read its topic up to where it ended when the follower
started, its owner holds the packaged defaults or a partial past (a worker would judge
alerts with them: ``streams/feeds.py`` makes it wait). :meth:`TopicFollower.wait_caught_up`
returns once every record that was in the topic at start has been applied: every partition's
position has reached the end offset it had at start, and the records already fetched are
applied too. The second half is for the embedded broker, whose end offset is the *last
batch's first offset* + 1 (after batches of 10 records at offsets 0-9, 10-19 and 20-29 it says
21, not 30; its fetch high watermark says 30): a position past that end means one record of
the last batch has been read, and a fetch delivers a batch whole, so the rest of it is in the
consumer's buffer; the follower applies what the buffer holds (polls without waiting until
one returns nothing) before it counts as caught up. On Apache Kafka the end offset is exact
and the buffer holds only newer records. An empty topic, and one that does not exist, are
caught up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

__all__ = ("TopicFollower", "at_ends")

log = logging.getLogger("cityagent.follow")

#: Records per poll. A poll that returns part of a fetched batch leaves the rest buffered.
MAX_RECORDS = 1000
#: Seconds before reading the topic again after the broker was lost or a record failed.
RETRY_S = 5.0


def at_ends(positions: Mapping[int, int], ends: Mapping[int, int]) -> bool:
    """True when every partition's position (next offset to read) has reached its end."""
    return all(positions.get(partition, 0) >= end for partition, end in ends.items())


class TopicFollower:
    """Reads one topic whole and for good; knows when it has read it to its ends at start.

    ``consumer_factory`` makes the consumer (default: aiokafka's, without a group); tests
    pass a fake one."""

    def __init__(self, bootstrap: str, topic: str, on_record: Callable[[str, object], bool],
                 on_change: Callable[[], None] = lambda: None, *, max_records: int = MAX_RECORDS,
                 consumer_factory: Callable[[], Any] | None = None) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._on_record, self._on_change = on_record, on_change
        self._max_records = max_records
        self._consumer_factory = consumer_factory or self._kafka_consumer
        self._task: asyncio.Task[None] | None = None
        #: Partition → end offset when the follower first reached the broker (None: not yet).
        self.ends: dict[int, int] | None = None
        self.positions: dict[int, int] = {}  # partition → next offset to read
        #: The offset of the record ``on_record`` is given (-1: none yet). Kafka numbers a
        #: partition's records once and for good, so a feed whose records carry no version
        #: takes it as theirs (``streams.maintenance_feed``).
        self.record_offset = -1
        self._started = 0.0
        #: Seconds from start() until caught up (None: not caught up yet).
        self.caught_up_s: float | None = None
        self._caught_up = False

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._started = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"follow {self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait_caught_up(self) -> None:
        """Return once the topic is read up to where it ended at start (see the module doc).

        A flag polled every 20 ms, not an ``asyncio.Event``: an event belongs to the first
        event loop that waits on it, and the API's follower is waited on from request handlers
        (``api.deps.read_up_to_start``), which a test client runs in a loop per request."""
        while not self._caught_up:
            await asyncio.sleep(0.02)

    def _kafka_consumer(self) -> Any:
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                client_id="cityagent-follow")

    async def _run(self) -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import KafkaError

        while True:
            consumer = self._consumer_factory()
            try:
                await consumer.start()
                known = consumer.partitions_for_topic(self.topic)
                tps = [TopicPartition(self.topic, p) for p in sorted(known or {0})]
                consumer.assign(tps)
                if self.ends is None:  # the topic as it stood at start
                    ends = await consumer.end_offsets(tps) if known else {}
                    self.ends = {tp.partition: end for tp, end in ends.items()}
                if not self.ends and not self.caught_up:  # no topic: nothing to wait for
                    self._mark_caught_up()
                # No seek_to_beginning: a new consumer without a group starts every partition
                # at its beginning already (auto_offset_reset="earliest"), and aiokafka's seek
                # waited for the fetch it had in flight (fetch_max_wait_ms, 0.5 s): every
                # worker and API start paid it, even with the topic empty.
                await self._follow(consumer, tps)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("%s unreachable (%s); retrying in %g s", self.topic, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug must not stop following for good: log it, read again
                log.exception("following %s failed; reading it again in %g s", self.topic,
                              RETRY_S)
                await asyncio.sleep(RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _follow(self, consumer: Any, tps: list) -> None:
        """Apply the topic's records for good; note when it is caught up."""
        draining = False  # at the ends: applying what is already fetched, then caught up
        while True:
            if not self.caught_up and not draining:
                self.positions = {tp.partition: await consumer.position(tp) for tp in tps}
                draining = at_ends(self.positions, self.ends or {})
            # Without waiting while draining: a poll returns what is buffered, or nothing.
            batches = await consumer.getmany(timeout_ms=0 if draining else 1000,
                                             max_records=self._max_records)
            self._apply(batches)
            if draining and not batches:
                draining = False
                self._mark_caught_up()

    def _apply(self, batches: Mapping) -> None:
        changed = False
        for records in batches.values():
            for record in records:
                self.positions[record.partition] = record.offset + 1
                key = record.key.decode("utf-8", "replace") if record.key else ""
                try:
                    value = None if record.value is None else orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    log.warning("%s: record %r is not JSON; skipped", self.topic, key)
                    continue
                self.record_offset = record.offset
                changed |= self._on_record(key, value)
        if changed:
            self._on_change()

    def _mark_caught_up(self) -> None:
        self.caught_up_s = time.monotonic() - self._started
        self._caught_up = True
        log.info("%s: caught up in %.2f s (read to offsets %s; its end offsets at start: %s)",
                 self.topic, self.caught_up_s, self.positions, self.ends)
