"""Operational zones that change without a restart: the compacted zones topic, read by all.

Every worker (and every API process) reads the whole ``<prefix>.zones`` topic from its start
with a plain consumer (no consumer group: each process needs every record, not a share of
them) and applies each record on top of the zones it started with (``CITYAGENT_ZONES`` or the
packaged demo set). Records carry a version; older ones are ignored, so every reader converges
on the same set, whose ``version`` and ``content_hash`` say which one it is. The admin API
writes the records (``PUT``/``DELETE /v1/zones/{id}``); compaction keeps the newest per zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection

import orjson

from cityagent.regions import RegionIndex
from cityagent.zones import ZoneError, ZoneIndex, ZoneSet, apply_record

__all__ = ("ZoneFeed",)

log = logging.getLogger("cityagent.zones")


class ZoneFeed:
    """The current zones (``zones``, ``index``), kept up to date from the zones topic."""

    def __init__(self, bootstrap: str, topic: str, base: ZoneSet, regions: RegionIndex,
                 departments: Collection[str]) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.zones = base
        self.index = ZoneIndex(base)
        self.regions, self.departments = regions, tuple(departments)
        self.records = 0
        self.rejected = 0
        self._task: asyncio.Task[None] | None = None

    def apply(self, key: str, value: object) -> bool:
        """Apply one record (key, JSON-decoded value); False when it is invalid (logged)."""
        try:
            self.zones = apply_record(self.zones, key, value, self.regions,  # type: ignore[arg-type]
                                      departments=self.departments)
        except ZoneError as exc:
            self.rejected += 1
            log.warning("zones topic: skipped record %r: %s", key, exc)
            return False
        self.records += 1
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="zone-feed")

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
                                        client_id="cityagent-zones")
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
                            key = record.key.decode() if record.key else ""
                            try:
                                value = None if record.value is None else orjson.loads(record.value)
                            except orjson.JSONDecodeError:
                                self.rejected += 1
                                log.warning("zones topic: record %r is not JSON", key)
                                continue
                            changed |= self.apply(key, value)
                    if changed:
                        self.index = ZoneIndex(self.zones)
                        log.info("zones: version %d, %d zones (hash %s)", self.zones.version,
                                 len(self.zones), self.zones.content_hash)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                log.warning("zones topic unreachable (%s); retrying in 5 s", exc)
                await asyncio.sleep(5)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
