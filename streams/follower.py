"""Follow a compacted topic whole, from its start, in every process that needs all of it.

Zones and maintenance windows are small, change rarely and must be the same in every worker
and API process, so each process reads the whole topic with a plain consumer (no consumer
group: a group would give each process only a share of the partitions) and keeps following
it. ``on_record(key, value)`` gets each record (value JSON-decoded, None for a tombstone) and
says whether it changed anything; ``on_change()`` runs once per batch that did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson

__all__ = ("TopicFollower",)

log = logging.getLogger("cityagent.follow")


class TopicFollower:
    def __init__(self, bootstrap: str, topic: str, on_record: Callable[[str, object], bool],
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._on_record, self._on_change = on_record, on_change
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"follow {self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        client_id="cityagent-follow")
            try:
                await consumer.start()
                parts = consumer.partitions_for_topic(self.topic) or {0}
                tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=1000)
                    changed = False
                    for records in batches.values():
                        for record in records:
                            key = record.key.decode("utf-8", "replace") if record.key else ""
                            try:
                                value = None if record.value is None else orjson.loads(record.value)
                            except orjson.JSONDecodeError:
                                log.warning("%s: record %r is not JSON; skipped", self.topic, key)
                                continue
                            changed |= self._on_record(key, value)
                    if changed:
                        self._on_change()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("%s unreachable (%s); retrying in 5 s", self.topic, exc)
                await asyncio.sleep(5)
            except Exception:  # a bug must not stop following for good: log it, read again
                log.exception("following %s failed; reading it again in 5 s", self.topic)
                await asyncio.sleep(5)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
