"""One record per batch for table changelogs only; every other topic is batched as usual.

Why: the embedded broker (Tansu 0.6) reports a partition's high watermark as the base offset
of its last *batch* + 1, and Faust recovers a table only up to the high watermark, so a
changelog batch of several records loses its tail on recovery (docs/architecture.md). Until
2026-11-23 the workers therefore set ``producer_max_batch_size=1`` for everything they
produce. aiokafka then makes every ``send`` to a partition that still has a record waiting
for the broker wait for it (``MessageAccumulator.add_message``): one round trip per record,
~0.4 ms here. The alerting agents send two records per anomaly (re-keyed to its scope, then
the alert event), and a rainstorm's anomalies all go to a few scopes' partitions, so those
round trips were a large part of what an anomaly cost the worker (with the change to alert
events' JSON on the same day: 854 -> 1,648 anomalies/s, docs/alerting.md "Speed").

How: the Faust producer is an ``aiokafka.AIOKafkaProducer`` whose accumulator, for a topic
named like a Faust changelog (``<app id>-<table>-changelog``), waits until the partition's
pending batch has been taken by the sender before it starts a new one, so no changelog batch
ever holds two records, while anomalies, scopes and alert events share batches. Apache Kafka
reports exact end offsets and needs none of it; there the changelogs' one-record batches
cost what they cost before (checkpoints write few, large records).
``tests/streams/test_changelog_batches.py`` shows both halves on the embedded broker.
"""

from __future__ import annotations

import time
from typing import Any

import aiokafka
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import MessageAccumulator
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ("CHANGELOG_SUFFIX", "ChangelogSafeProducer", "use_changelog_safe_producer")

#: Faust names a table's changelog topic ``<app id>-<table name>-changelog``.
CHANGELOG_SUFFIX = "-changelog"


class _OneRecordChangelogBatches(MessageAccumulator):
    """aiokafka's accumulator, with at most one record per batch on changelog topics."""

    async def add_message(self, tp: Any, key: Any, value: Any, timeout: float,
                          timestamp_ms: int | None = None, headers: Any = None) -> Any:
        if tp.topic.endswith(CHANGELOG_SUFFIX):
            deadline = time.monotonic() + timeout
            # No await between this check and the append below: nothing can slip in.
            while pending := self._batches.get(tp):
                await pending[-1].wait_drain(max(deadline - time.monotonic(), 0.0))
                if time.monotonic() >= deadline and self._batches.get(tp):
                    raise KafkaTimeoutError()
            timeout = max(deadline - time.monotonic(), 0.001)
        return await super().add_message(tp, key, value, timeout, timestamp_ms,
                                          headers if headers is not None else [])


class ChangelogSafeProducer(aiokafka.AIOKafkaProducer):
    """An ``AIOKafkaProducer`` that never puts two records of a changelog in one batch."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The accumulator aiokafka built, with add_message above (same state, same class
        # otherwise): aiokafka offers no way to pass an accumulator in.
        self._message_accumulator.__class__ = _OneRecordChangelogBatches


def use_changelog_safe_producer() -> None:
    """Make Faust's aiokafka producer a ``ChangelogSafeProducer`` (idempotent)."""
    faust_aiokafka.Producer._producer_type = property(  # type: ignore[method-assign,assignment]
        lambda self: ChangelogSafeProducer)
