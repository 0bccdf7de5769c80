"""The API's read model of alerts: the latest snapshot of every alert, built from the alerts topic.

The stream is the truth: on start the API reads the alerts topic from the beginning, so a
restarted API answers as before (with the embedded broker, only as long as the broker runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

__all__ = ("AlertBook", "AlertFeed")

log = logging.getLogger("cityagent.api")


class AlertBook:
    """Alerts by id, newest snapshot wins; answers the API's queries."""

    def __init__(self) -> None:
        self._alerts: dict[str, dict[str, Any]] = {}
        self.snapshots_applied = 0

    def apply(self, snapshot: Mapping[str, Any]) -> None:
        """Take one alert snapshot (all snapshots of an alert arrive in order on one partition)."""
        self._alerts[str(snapshot["alert_id"])] = dict(snapshot)
        self.snapshots_applied += 1

    def __len__(self) -> int:
        return len(self._alerts)

    def query(
        self, *, city_code: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Alerts newest first (by when the breach began), filtered by city and status."""
        found: Iterable[dict[str, Any]] = self._alerts.values()
        if city_code is not None:
            found = (a for a in found if a["city_code"] == city_code)
        if status is not None:
            found = (a for a in found if a["status"] == status)
        ordered = sorted(found, key=lambda a: (a["opened_at_ms"], a["alert_id"]), reverse=True)
        return ordered[:limit]


class AlertFeed:
    """Keeps an AlertBook up to date from the alerts topic, from its beginning."""

    def __init__(self, bootstrap: str, topic: str, book: AlertBook) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._book = book
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alert-feed")

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
                log.warning("alert feed lost the broker (%s); retrying in 2 s", exc)
                await asyncio.sleep(2)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = await _partitions(consumer, self._topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for record in records:
                        try:
                            self._book.apply(orjson.loads(record.value))
                        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                            log.warning("skipped a malformed alert at offset %d: %s", record.offset, exc)
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(60):
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return [TopicPartition(topic, p) for p in sorted(ids)]
        await consumer._client.force_metadata_update()  # noqa: SLF001 (no public refresh call)
        await asyncio.sleep(0.5)
    raise KafkaError(f"topic {topic!r} does not exist; start the pipeline with `cityagent up`")
