"""The detection agent: readings → windowed detection → anomalies (alerting: streams/alerting.py).

Adapters only: decode, call the domain, encode and send. Detection state lives in memory as
one ``BucketState`` per sensor bucket and is **checkpointed** to the Faust table
``detector_state`` (in records of at most 512 KB) every ``checkpoint_s`` seconds, not
on every message: a bucket's state changes with every batch, and a record per message would
multiply the changelog traffic by the message rate.

Exactly the readings in a checkpoint are acknowledged: the agent's stream does not ack by
itself (``noack``); after writing a bucket's checkpoint it acks the events that bucket applied,
and Faust flushes the producer before committing offsets (only up to the first offset of a
partition not acknowledged yet, so acknowledging one bucket before another loses nothing).

The checkpoints **roll**: bucket ``b<k>`` is written at k/256 of each ``checkpoint_s``
interval, a few buckets at a time, not all 256 at once. Each bucket is still written at most
``checkpoint_s`` after it changed. Written all at once, a fleet of 250k sensors put ~210 MB
(~400 records) in Faust's producer buffer in one go; Faust stops delivering messages to every
stream while that buffer holds over 100 records, and the changelog takes one record per
partition per round trip (``streams/changelog_batches.py``), so the worker sat idle for ~1.5 s
of every 10 s while the broker took them in (``cityagent bench``, docs/detection.md "Speed").
Rolling, the broker takes in one bucket's records while the worker goes on detecting. After a crash a worker restores the last
checkpoints and Kafka redelivers everything after them; each state remembers the offset of
the last message it applied and skips redeliveries, so no reading is lost or counted twice.

A timer advances the event time of idle buckets with the clock, so windows close and silent
sensors are found even when no reading arrives, but only for buckets whose partition this
worker has consumed to its end: while it works through a backlog a bucket's next reading is
already waiting in the topic, and advancing its clock would make that reading late.

After a restart or a rebalance, every checkpointed bucket of the partitions this worker now
owns is loaded as soon as the table is recovered (``adopt``), not when its next reading
comes: a bucket whose sensors all fell silent gets no reading, and would otherwise never
close its open windows or report the silence.

Sensors not heard from for the detection settings' ``forget_after_s`` are forgotten by the
domain (``DetectionEngine``, once an hour of a bucket's event time); the agent logs one line
per bucket that forgot some, counts them, and its next checkpoint of the bucket is the
smaller state: the parts it no longer needs are deleted after the new ones are written.

When the worker stops (SIGTERM), a final checkpoint is written and acknowledged before Faust
waits for unacknowledged messages (``CityAgentApp.before_stop``): the timer that checkpoints
is already stopped by then, and the wait has no time limit. In a rebalance Faust waits the
same way with the timer still running, so the timer checkpoints at its next tick (1 s) while
the app is rebalancing instead of when the interval is due.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import faust

from cityagent.batch import NUM_BUCKETS, bucket_key, decode_batch
from cityagent.detection import Anomaly
from cityagent.errors import InvalidBatch
from cityagent.pipeline import Detector
from cityagent.state import NO_TS, BucketState
from streams.app import CityAgentApp
from streams.checkpoints import CheckpointedStates
from streams.metrics import WorkerCounters
from streams.parted import PartedTable, head_keys
from streams.partitions import partition_of_key
from streams.topics import Topics, legacy_key, part_key, to_json

__all__ = ("register_agents", "STATE_TABLE")

#: Idle periods after which a bucket's clock advances even if its partition is not known to
#: be consumed to the end.
STALLED_IDLES = 6
#: Table name; its changelog topic is "<app_id>-detector_state-changelog".
STATE_TABLE = "detector_state"

log = logging.getLogger("cityagent.streams")


class _Buckets(CheckpointedStates):
    """The in-memory states of this worker's buckets, their checkpoints and pending acks."""

    def __init__(self, table: faust.Table, detector: Detector, partitions: int) -> None:
        super().__init__(table, partitions)
        self.detector = detector
        self.states: dict[str, BucketState] = {}
        self.last_input: dict[str, float] = {}  # bucket → monotonic time of its last batch
        self.partition_of: dict[str, Any] = {}  # bucket → the TP its batches come from
        self.consumed: dict[Any, int] = {}  # TP → offset of the last message applied
        #: bucket → ms it sat idle while no worker ran (adopted from a checkpoint, no reading
        #: since): added to its event time once its partition is known to be consumed.
        self.away_ms: dict[str, int] = {}
        #: bucket → the events it applied that its next checkpoint will include (``pending``
        #: holds the events that changed no state: bad keys).
        self.pending_of: dict[str, list[Any]] = {}
        #: The rolling checkpoint: when its current round began, and the number of the first
        #: bucket this round has not written yet.
        self.round_start = time.monotonic()
        self.next_bucket = 0
        self._round_wrote = False

    def hold(self, bucket: str, event: Any) -> None:
        """``event`` was taken for ``bucket``: acknowledge it once the bucket is checkpointed."""
        held = self.pending_of.get(bucket)
        if held is None:
            self.pending_of[bucket] = [event]
        else:
            held.append(event)

    def waiting(self) -> int:
        """Events taken but not acknowledged yet."""
        return len(self.pending) + sum(map(len, self.pending_of.values()))

    def get(self, bucket: str) -> BucketState:
        state = self.states.get(bucket)
        if state is None:
            parts = self.stored_parts(bucket)
            state = None
            if parts:
                try:
                    state = BucketState.from_parts(parts)
                except ValueError as exc:
                    log.warning("bucket %s: checkpoint unreadable (%s); starting afresh", bucket, exc)
            state = state or self.detector.engine.new_state()
            self.states[bucket] = state
        return state

    def stored_parts(self, bucket: str) -> list[bytes]:
        """The parts of the bucket's last checkpoint in the table (none: never written)."""
        first = self.table.get(part_key(bucket, 0)) or self.table.get(legacy_key(bucket))
        if not first:
            return []
        parts = [first]
        while (part := self.table.get(part_key(bucket, len(parts)))) is not None:
            parts.append(part)
        return parts

    async def checkpoint(self, counters: WorkerCounters) -> None:
        """Write every changed bucket's state, then ack every event taken (stopping, or a
        rebalance: Faust waits for them)."""
        for bucket in self.dirty:
            self._write(bucket)
        if self.dirty:
            counters.checkpoints_total += 1
        self.dirty.clear()
        held = [event for events in self.pending_of.values() for event in events]
        self.pending_of.clear()
        await self._ack(held)
        await self.acknowledge()

    async def roll(self, counters: WorkerCounters, interval_s: float,
                   now: float | None = None) -> None:
        """The rolling checkpoint's next step: write the changed buckets whose turn has come
        since the last step (bucket ``b<k>`` at k/NUM_BUCKETS of each ``interval_s``), then
        ack the events those buckets took. Cheap when no bucket's turn has come."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.round_start
        upto = NUM_BUCKETS
        if interval_s > 0:
            upto = min(NUM_BUCKETS, int(elapsed / interval_s * NUM_BUCKETS))
        if upto <= self.next_bucket:
            return
        turn = [bucket_key(k) for k in range(self.next_bucket, upto)]
        self.next_bucket = upto
        held: list[Any] = []
        for bucket in turn:  # no await until every bucket of the turn is written
            if bucket in self.dirty:
                self.dirty.discard(bucket)
                self._round_wrote |= self._write(bucket)
            held.extend(self.pending_of.pop(bucket, ()))
        if upto == NUM_BUCKETS:  # the round is over; a late one starts the next from now
            self.next_bucket = 0
            self.round_start = max(self.round_start + interval_s, now)
            if self._round_wrote:
                counters.checkpoints_total += 1
            self._round_wrote = False
        await self._ack(held)
        await self.acknowledge()  # the events that changed no state

    def _write(self, bucket: str) -> bool:
        """Write the bucket's state to the table (parts); False if it is no longer here."""
        state = self.states.get(bucket)
        if state is None:
            # Dropped by a rebalance after it was marked (the idle timer awaits between
            # buckets): its partition's new owner has the checkpoint of the hand-over.
            return False
        parts = state.to_parts()
        for number, part in enumerate(parts):
            self.table[part_key(bucket, number)] = part
        # Fewer parts than before (sensors were forgotten): delete the rest, after the new
        # ones, so that no later restore takes them for parts of this checkpoint.
        number = len(parts)
        while part_key(bucket, number) in self.table:
            del self.table[part_key(bucket, number)]
            number += 1
        return True

    async def _ack(self, events: list[Any]) -> None:
        if self.stream is not None:
            for event in events:
                await self.stream.ack(event)

    def forgot(self, bucket: str, sensors: list[str], counters: WorkerCounters) -> None:
        """Sensors of ``bucket`` were forgotten: count them, log one line, checkpoint it."""
        counters.sensors_forgotten_total += len(sensors)
        self.dirty.add(bucket)
        days = self.detector.engine.config.forget_after_ms / 86_400_000
        examples = ", ".join(sensors[:3]) + (", ..." if len(sensors) > 3 else "")
        log.info("bucket %s: forgot %d sensors not heard from for %g days (%s): their "
                 "detection state is dropped, one that reports again is learned afresh",
                 bucket, len(sensors), days, examples)

    def touch(self, bucket: str, tp: Any) -> None:
        """Mark the bucket live: its idle clock starts now, its batches come from ``tp``."""
        self.last_input[bucket] = time.monotonic()
        self.partition_of[bucket] = tp

    def adopt(self, owned: dict[int, Any]) -> int:
        """Load every checkpointed bucket of the owned partitions (``owned``: partition
        number → the readings TP) that is not in memory yet; return how many were loaded.

        Each adopted bucket's idle clock starts now. Its partition counts as consumed up to
        the last message in its checkpoint, so once the partition has nothing newer the
        timer advances it after one idle period, as for a bucket that was never away, and by
        the time it was away too (``away_ms``: since the checkpointed state's clock), so a
        sensor that fell silent before a crash is found silent at once, not only once the new
        worker has itself waited out the silence limit.
        """
        now_ms = _now_ms()
        adopted = 0
        # Whole checkpoints only (a part is read with its first), legacy '"b007"' keys too.
        for bucket in sorted(head_keys(self.table.keys()) - set(self.states)):
            tp = owned.get(partition_of_key(bucket, self.partitions))
            if tp is None:
                continue  # a standby copy of another worker's bucket
            state = self.get(bucket)
            self.touch(bucket, tp)
            if state.clock_ms:
                self.away_ms[bucket] = max(0, now_ms - state.clock_ms)
            self.consumed[tp] = max(self.consumed.get(tp, -1), state.last_offset)
            adopted += 1
        return adopted

    def keep_only(self, assigned: Any) -> None:
        """After a rebalance: drop the states of buckets whose partition this worker no
        longer has (they reload from the table if it comes back). The others stay in memory,
        with their idle clocks: a quiet bucket's windows still close and its silent sensors
        are still found without waiting for a new reading to reload it. They equal their
        checkpoint, which was written when the partitions were revoked."""
        for bucket in list(self.states):
            if self.partition_of.get(bucket) not in assigned:
                self.states.pop(bucket, None)
                self.dirty.discard(bucket)
                self.away_ms.pop(bucket, None)
                self.last_input.pop(bucket, None)
                self.partition_of.pop(bucket, None)
        for tp in list(self.consumed):
            if tp not in assigned:
                del self.consumed[tp]

    def caught_up(self, app: faust.App, bucket: str) -> bool:
        """Has this worker consumed the bucket's partition to its end (no backlog)?"""
        tp = self.partition_of.get(bucket)
        if tp is None:
            return False
        try:
            highwater = app.consumer.highwater(tp)
        except Exception as exc:  # noqa: BLE001 - not fetched yet, or the consumer is restarting
            log.debug("no high watermark for %s: %r", tp, exc)
            return False
        return highwater is not None and self.consumed.get(tp, -1) >= highwater - 1


def register_agents(app: CityAgentApp, topics: Topics, detector: Detector,
                    counters: WorkerCounters, checkpoint_s: float = 10.0) -> faust.Table:
    """Attach the detection agent to ``app``; return its state table."""
    # Bytes keys and values: the "raw" codec. Raw keys, as on the readings topic, put a
    # bucket's checkpoint parts in the changelog partition numbered like its readings
    # partition, which Faust assigns and recovers together with it (PartedTable).
    state_table = app.tables.add(PartedTable(
        app, name=STATE_TABLE, default=None, partitions=topics.readings.partitions,
        key_type=bytes, value_type=bytes, beacon=app.tables.beacon,
    ))
    buckets = _Buckets(state_table, detector, topics.readings.partitions)
    clocks = _OncePerSensor("more sensors send readings dated over 5 min past this worker's "
                            "clock; not naming them each (the counters line counts them)")
    kinds = _OncePerSensor("more sensors receive readings of another kind than their own; "
                           "not naming them each (the counters line counts them)")
    windows = detector.engine.config.windows

    async def publish(anomalies: list[Anomaly]) -> None:
        for anomaly in anomalies:
            counters.anomalies_total += 1
            await topics.anomalies.send(key=str(anomaly.district_code),
                                        value=to_json(anomaly.to_dict()))

    def reject(message: Any, exc: InvalidBatch) -> None:
        counters.batches_rejected_total += 1
        log.warning("skipped a bad batch at %s[%d]@%d: %s",
                    message.topic, message.partition, message.offset, exc)

    @app.agent(topics.readings, name="detect")
    async def detect(stream: faust.StreamT) -> None:
        manual = stream.noack()
        buckets.stream = manual
        async for event in manual.events():
            message = event.message
            buckets.consumed[message.tp] = message.offset
            try:
                bucket = _bucket_of_key(event.key)
            except InvalidBatch as exc:
                buckets.pending.append(event)  # changes no state: acknowledged with the next step
                reject(message, exc)
                continue
            buckets.hold(bucket, event)  # acknowledged once its bucket is checkpointed
            try:
                batch = decode_batch(event.value)
            except InvalidBatch as exc:
                reject(message, exc)
                continue
            state = buckets.get(bucket)
            buckets.touch(bucket, message.tp)
            # Redelivered after a restart: skip what the checkpointed state already holds.
            unapplied = state.unapplied(batch.sensor_id, message.offset)
            if unapplied is not None:
                if not unapplied.any():
                    continue
                batch = batch.take(unapplied)  # restored from parts of two checkpoints
            now_ms = _now_ms()
            try:
                outcome = detector.process_batch(batch, state, now_ms)
            except Exception:  # a bug: one message must not stop its partition for good
                counters.batches_failed_total += 1
                log.exception("detection failed on the batch at %s[%d]@%d and skipped it; "
                              "this is a bug, please report it with this log",
                              message.topic, message.partition, message.offset)
                continue
            state.applied(message.offset)
            state.clock_ms = now_ms
            buckets.away_ms.pop(bucket, None)  # its readings carry the event time now
            buckets.dirty.add(bucket)
            if outcome.forgotten:
                buckets.forgot(bucket, outcome.forgotten, counters)
            counters.batches_total += 1
            counters.readings_total += outcome.readings
            counters.readings_outside_total += outcome.outside
            if outcome.future:
                counters.readings_future_total += outcome.future
                for sensor, ms in outcome.ahead:
                    clocks.warn(sensor, f"sensor {sensor} sends readings dated {_duration(ms)} "
                                "past this worker's clock; they are dropped (counted as "
                                "readings from the future) until its clock is right. A sensor "
                                "that sends China time as UTC is 8 h ahead.")
            if outcome.wrong_kind:
                counters.readings_wrong_kind_total += outcome.wrong_kind
                for sensor, own, claimed in outcome.wrong_kind_sensors:
                    kinds.warn(sensor, f"sensor {sensor} is a {own} sensor (its first reading), "
                               f"but readings of kind {claimed} arrive under its id; they are "
                               "dropped. Give each device its own sensor_id.")
            if outcome.late:
                counters.readings_late_total += outcome.late
                log.info("bucket %s: %d late readings (after their window closed) counted, "
                         "not judged", bucket, outcome.late)
            await publish(outcome.anomalies)
            await buckets.roll(counters, checkpoint_s)

    @app.timer(min(1.0, checkpoint_s))
    async def tick() -> None:
        """Advance idle buckets with the clock; checkpoint what is due."""
        now = time.monotonic()
        for bucket, state in list(buckets.states.items()):
            since = buckets.last_input.get(bucket)
            if since is None or state.watermark == NO_TS:
                continue
            idle_ms = (now - since) * 1000.0
            if idle_ms < windows.idle_ms:
                continue
            # A partition still being worked through keeps its buckets' clocks; but a bucket
            # with no message for STALLED_IDLES idle periods is quiet whatever the consumer's
            # bookkeeping says (its high watermark can be missing), so silence is still found.
            caught_up = buckets.caught_up(app, bucket)
            if not caught_up and idle_ms < STALLED_IDLES * windows.idle_ms:
                continue
            # The downtime only once nothing of the bucket can be waiting in the partition.
            away_ms = buckets.away_ms.pop(bucket, 0) if caught_up else 0
            now_ms = _now_ms()
            result = detector.engine.advance(state, state.watermark + int(idle_ms) + away_ms,
                                             now_ms)
            state.clock_ms = now_ms
            buckets.last_input[bucket] = now
            if result.windows or result.anomalies:
                buckets.dirty.add(bucket)
            if result.forgotten:
                buckets.forgot(bucket, result.forgotten, counters)
            await publish(result.anomalies)
        # In a rebalance Faust waits for every message a stream took to be acknowledged
        # before it lets the partitions go: checkpoint now, not up to checkpoint_s later.
        if app.rebalancing:
            await buckets.checkpoint(counters)
        else:
            await buckets.roll(counters, checkpoint_s)

    async def final_checkpoint() -> None:
        """The worker is stopping: checkpoint what was applied and acknowledge it, so that
        Faust's wait for unacknowledged messages ends and the offsets are committed."""
        if buckets.dirty or buckets.waiting():
            log.info("stopping: checkpointing %d buckets, acknowledging %d messages",
                     len(buckets.dirty), buckets.waiting())
        await buckets.checkpoint(counters)

    app.before_stop.append(final_checkpoint)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        await buckets.checkpoint(counters)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        buckets.keep_only(set(assigned))
        readings = topics.readings.get_topic_name()
        owned = sorted(tp.partition for tp in assigned if tp.topic == readings)
        # Which worker owns which sensors: the line to look for when a bucket's alerts stop.
        log.info("this worker now reads partitions %s of %s", owned, readings)

    @state_table.on_recover
    async def on_recovered() -> None:
        """The table holds this worker's checkpoints again: load the buckets no reading has
        brought in yet, so their windows close and their silence is found."""
        readings = topics.readings.get_topic_name()
        owned = {tp.partition: tp for tp in app.assignor.assigned_actives()
                 if tp.topic == readings}
        adopted = buckets.adopt(owned)
        if adopted:
            log.info("loaded %d checkpointed buckets of the %d partitions this worker owns",
                     adopted, len(owned))

    @app.timer(10.0)
    async def log_rates() -> None:
        counters.log_rates()

    return state_table


_BUCKET_KEY = re.compile(r"b[0-9]{3}")


def _bucket_of_key(key: bytes | str | None) -> str:
    """The bucket a readings message is keyed by (``b000``-``b255``); InvalidBatch if none.

    A bucket's state has one owner because its readings are keyed by it; a batch keyed by
    anything else would give its sensors a second, partial state."""
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if text is None or not _BUCKET_KEY.fullmatch(text) or int(text[1:]) >= NUM_BUCKETS:
        raise InvalidBatch(f"the message key must be its sensors' bucket, b000-b{NUM_BUCKETS - 1:03d}; "
                           f"got {text!r}")
    return text


class _OncePerSensor:
    """Warns once per sensor, for the first ``most`` sensors (an accelerated simulation
    started now sends every sensor's readings ahead of the clock), then once that there are
    more; the worker's counters line counts every reading all the same."""

    def __init__(self, more: str, most: int = 20) -> None:
        self._told: set[str] = set()
        self._more, self._most = more, most

    def warn(self, sensor: str, text: str) -> None:
        if sensor in self._told or len(self._told) > self._most:
            return
        self._told.add(sensor)
        log.warning(text if len(self._told) <= self._most else self._more)


def _duration(ms: int) -> str:
    if ms >= 3_600_000:
        return f"{ms / 3_600_000:,.1f} h"
    return f"{ms / 60_000:.1f} min"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
