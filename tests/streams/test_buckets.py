"""The detection agent's bucket bookkeeping across a rebalance (no Kafka: a dict as table)."""

from __future__ import annotations

import asyncio

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from streams.agents import _Buckets
from streams.metrics import WorkerCounters


def test_a_bucket_changed_while_its_partition_was_taken_away_is_not_checkpointed() -> None:
    """The idle timer awaits between buckets; a rebalance in that await dropped a bucket the
    timer then marked changed, and the next checkpoint raised KeyError on it."""
    table: dict = {}
    buckets = _Buckets(table, Detector(DetectionEngine(DetectionConfig.load()), default_regions()),
                       partitions=8)
    for bucket, tp in (("b001", "readings-1"), ("b002", "readings-2")):
        buckets.get(bucket)
        buckets.touch(bucket, tp)
    buckets.dirty.add("b001")
    buckets.keep_only({"readings-2"})  # b001's partition went to another worker
    buckets.dirty.add("b001")  # the timer, resuming with the state it held, marks it changed
    buckets.dirty.add("b002")
    asyncio.run(buckets.checkpoint(WorkerCounters()))
    assert "b001" not in buckets.states and not buckets.dirty
    assert any(key.startswith(b"b002") for key in table)  # the bucket still owned is written
    assert not any(key.startswith(b"b001") for key in table)  # not the one given away
