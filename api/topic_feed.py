"""A read model's feed: a background task that reads one topic from its beginning, for good.

The API's alert book and situation model are both folded from a topic (the stream is the
truth). Their feeds share how they run: a lost broker, or an error on one poll (a bug), is
logged and the feed resumes 2 s later where it was, so the read model never silently stops
following its topic while the API answers from a frozen copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ("TopicFeed", "topic_partitions", "recreated_partitions")

log = logging.getLogger("cityagent.api")

RETRY_S = 2.0


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


def recreated_partitions(consumer: AIOKafkaConsumer, read: Mapping[int, int]) -> list[int]:
    """The partitions whose high watermark, as the last fetch reported it, is below ``read``.

    ``read`` is, per partition, the offset after the last record read. A partition never ends
    below a record it served, so a fetch that says it does means the topic was recreated: the
    embedded broker restarted empty (it keeps nothing), or the topic was deleted and created
    again on Kafka. The consumer would otherwise wait, silently, until the new topic's offsets
    passed the old ones, and skip everything below them. (The fetch's high watermark is the
    right one to ask, also on the embedded broker: its ListOffsets answer can be a batch short,
    which would look like a recreated topic; its fetch answer was never seen below a record
    it had served.)
    """
    found = []
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is not None and highwater < read.get(tp.partition, 0):
            found.append(tp.partition)
    return sorted(found)
