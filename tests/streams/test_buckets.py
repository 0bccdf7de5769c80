"""The detection agent's bucket bookkeeping across a rebalance (no Kafka: a dict as table)."""

from __future__ import annotations

import asyncio
import logging

from cityagent.detection import DetectionEngine
from cityagent.detectors.config import DetectionConfig
from cityagent.pipeline import Detector
from cityagent.regions import default_regions
from streams.agents import _Buckets
from streams.metrics import WorkerCounters
from tests.cityagent.test_detection import T0, readings


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


def test_a_bucket_that_forgot_sensors_checkpoints_the_smaller_state_and_restores_it(
        caplog) -> None:
    """1,500 gauges (a checkpoint of three parts), of which 1,400 are then not heard from for
    over 30 days: the next checkpoint is one part, the two it no longer needs are deleted
    (they would stay in the changelog for ever, and in every recovery), and a worker that
    loads the bucket from the table gets the smaller state, exactly."""
    table: dict = {}
    detector = Detector(DetectionEngine(DetectionConfig.load()), default_regions())
    counters = WorkerCounters()
    buckets = _Buckets(table, detector, partitions=8)
    gauges = [f"jn-wl-{i:05d}" for i in range(1500)]
    t0 = T0 - 31 * 86_400_000

    def apply(sensors: list[str], t: int, offset: int) -> list[str]:
        state = buckets.get("b007")
        buckets.touch("b007", "readings-7")
        outcome = detector.process_batch(
            readings([(s, "water_level", t, 2.0) for s in sensors]), state, now_ms=T0)
        state.applied(offset)
        buckets.dirty.add("b007")
        if outcome.forgotten:
            buckets.forgot("b007", outcome.forgotten, counters)
        asyncio.run(buckets.checkpoint(counters))
        return outcome.forgotten

    assert apply(gauges, t0, 0) == []
    assert set(table) == {b"b007", b"b007/1", b"b007/2"}
    with caplog.at_level(logging.INFO, logger="cityagent.streams"):
        assert apply(gauges[:100], T0, 1) == gauges[100:]
    assert set(table) == {b"b007"}
    assert counters.sensors_forgotten_total == 1400
    assert ("bucket b007: forgot 1400 sensors not heard from for 30 days (jn-wl-00100, "
            "jn-wl-00101, jn-wl-00102, ...)") in caplog.text
    restored = _Buckets(table, detector, partitions=8).get("b007")
    state = buckets.states["b007"]
    assert restored.ids == gauges[:100] == state.ids
    assert (restored.layout, restored.last_offset, restored.watermark) == (1, 1, state.watermark)
    for name, column in state.cols.items():
        assert column.tobytes() == restored.cols[name].tobytes(), name


class _AckedStream:
    """The agent's noack stream, recording what it is asked to acknowledge."""

    def __init__(self) -> None:
        self.acked: list[str] = []

    async def ack(self, event: str) -> None:
        self.acked.append(event)


def test_checkpoints_roll_a_few_buckets_at_a_time_and_ack_only_what_they_wrote() -> None:
    """Every bucket written at once put ~400 records in Faust's producer buffer, and Faust
    holds every stream while it has over 100: the worker sat idle ~1.5 s of each 10 s. Bucket
    b<k> is written at k/256 of the interval, and only its own events are acknowledged then."""
    table: dict = {}
    buckets = _Buckets(table, Detector(DetectionEngine(DetectionConfig.load()), default_regions()),
                       partitions=8)
    stream = _AckedStream()
    buckets.stream = stream
    counters = WorkerCounters()
    start = buckets.round_start
    for number in (0, 100, 200):
        bucket = f"b{number:03d}"
        buckets.get(bucket)
        buckets.touch(bucket, f"readings-{number % 8}")
        buckets.dirty.add(bucket)
        buckets.hold(bucket, f"event of {bucket}")
    buckets.pending.append("event with a bad key")

    asyncio.run(buckets.roll(counters, 10.0, now=start + 5.0))  # half the interval: b000-b127
    assert {key[:4] for key in table} == {b"b000", b"b100"}
    assert stream.acked == ["event of b000", "event of b100", "event with a bad key"]
    assert buckets.dirty == {"b200"} and buckets.waiting() == 1

    buckets.hold("b100", "second event of b100")  # taken after b100's turn: waits for the next
    buckets.dirty.add("b100")
    asyncio.run(buckets.roll(counters, 10.0, now=start + 5.1))  # no bucket's turn yet
    assert len(stream.acked) == 3
    asyncio.run(buckets.roll(counters, 10.0, now=start + 10.0))  # the rest of the round
    assert b"b200" in table and stream.acked[3:] == ["event of b200"]
    assert counters.checkpoints_total == 1 and buckets.next_bucket == 0
    asyncio.run(buckets.roll(counters, 10.0, now=start + 15.0))  # the next round's first half
    assert stream.acked[4:] == ["second event of b100"] and not buckets.dirty


def test_a_full_checkpoint_acks_every_bucket_s_events() -> None:
    """Stopping or a rebalance writes every changed bucket and acks every event taken."""
    buckets = _Buckets({}, Detector(DetectionEngine(DetectionConfig.load()), default_regions()),
                       partitions=8)
    stream = _AckedStream()
    buckets.stream = stream
    for bucket in ("b001", "b250"):
        buckets.get(bucket)
        buckets.dirty.add(bucket)
        buckets.hold(bucket, bucket)
    asyncio.run(buckets.checkpoint(WorkerCounters()))
    assert sorted(stream.acked) == ["b001", "b250"] and buckets.waiting() == 0
