"""Publishes validated readings to Kafka, batched per sensor bucket, acknowledged by all replicas.

The API answers 202 only after every reading of a request is acknowledged (acks=all), so a
reading reported as accepted is stored; if the broker does not acknowledge in time the request
fails with 503 and nothing is reported as accepted.

Why requests are pooled: a message holds one sensor bucket (256 of them), so a request of
1,000 readings alone would make ~250 messages of 4 readings. Under load (while an earlier
flush awaits its acks) requests are pooled for ``linger_s`` (or until ``flush_rows``) and
flushed as one; a request arriving at an idle API is flushed at once. A flush is split by
bucket, encoded, and appended to one record batch per partition (``send_batch``: one produce
call per partition instead of one per message). Each request's answer waits for the flush that
carries its readings; a flush that fails fails every request in it with BrokerError.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from cityagent.batch import ReadingBatch, encode_batch
from cityagent.errors import BrokerError
from cityagent.readings import ALL_VALUE_FIELDS

__all__ = ("ReadingPublisher", "concat_batches", "why_unacknowledged")

log = logging.getLogger("cityagent.api")

_Pending = tuple[ReadingBatch, "asyncio.Future[int]"]


class ReadingPublisher:
    def __init__(self, bootstrap: str, topic: str, *, ack_timeout_s: float = 10.0,
                 linger_s: float = 0.005, flush_rows: int = 50_000,
                 rows_per_message: int = 500, max_flushes_in_flight: int = 4) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._linger_s = linger_s
        self._flush_rows = flush_rows
        self._rows_per_message = rows_per_message
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._wake = asyncio.Event()
        self._in_flight = asyncio.Semaphore(max_flushes_in_flight)
        self._acks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, int], int] = {}

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect, retrying until ``timeout_s``; raise BrokerError naming the servers."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                linger_ms=0,  # the flusher pools readings itself
                max_batch_size=1 << 20,
                max_request_size=8 << 20,
                request_timeout_ms=int(self._ack_timeout_s * 1000),
            )
            try:
                await producer.start()
                self._producer = producer
                break
            except (KafkaError, OSError) as exc:
                await producer.stop()
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerError(f"cannot reach Kafka at {self._bootstrap}: {exc}") from None
                await asyncio.sleep(1)
        self._flusher = asyncio.create_task(self._run(), name="reading-publisher")

    async def stop(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.gather(*self._acks, return_exceptions=True)
        self._fail(self._take_pending(), BrokerError("the API is shutting down"))
        if self._producer:
            await self._producer.stop()

    async def publish(self, batch: ReadingBatch) -> int:
        """Send the batch; return its length once Kafka has acknowledged all of it."""
        if self._producer is None or self._flusher is None or self._flusher.done():
            raise BrokerError("the API is not connected to Kafka yet")
        if not len(batch):
            return 0
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, done))
        self._pending_rows += len(batch)
        self._wake.set()
        return await done

    # -- the flusher ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self._acks and self._pending_rows < self._flush_rows:
                # Under load (a flush still awaits its acks) let concurrent requests join this
                # one; a lone request is sent at once.
                await asyncio.sleep(self._linger_s)
            self._wake.clear()
            pending = self._take_pending()
            if not pending:
                continue
            await self._in_flight.acquire()
            try:
                sent = await asyncio.wait_for(self._send(pending), self._ack_timeout_s)
            except asyncio.CancelledError:
                self._in_flight.release()
                self._fail(pending, BrokerError("the API is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 (every failure must reach the requests)
                self._in_flight.release()
                self._fail(pending, self._broker_error(exc))
                continue
            task = asyncio.create_task(self._await_acks(pending, sent))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    def _take_pending(self) -> list[_Pending]:
        pending, self._pending, self._pending_rows = self._pending, [], 0
        return [(b, f) for b, f in pending if not f.done()]

    async def _send(self, pending: list[_Pending]) -> list[asyncio.Future]:
        """Encode the pooled readings per bucket and hand one record batch per partition over."""
        assert self._producer is not None
        producer = self._producer
        partitions = sorted(await producer.partitions_for(self._topic))
        batch = concat_batches([b for b, _ in pending])
        builders: dict[int, object] = {}
        futures: list[asyncio.Future] = []
        for key, part in batch.split_by_bucket(self._rows_per_message):
            key_bytes = key.encode()
            partition = self._partition(key, partitions)
            value = encode_batch(part)
            builder = builders.get(partition) or producer.create_batch()
            if builder.append(key=key_bytes, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(builder, self._topic, partition=partition))
                builder = producer.create_batch()
                builder.append(key=key_bytes, value=value, timestamp=None)
            builders[partition] = builder
        for partition, builder in builders.items():
            futures.append(await producer.send_batch(builder, self._topic, partition=partition))
        return futures

    def _partition(self, key: str, partitions: list[int]) -> int:
        """Kafka's default partitioner (murmur2 of the key), as every client computes it."""
        found = self._partition_of.get((key, len(partitions)))
        if found is None:
            found = self._partitioner(key.encode(), partitions, partitions)
            self._partition_of[(key, len(partitions))] = found
        return found

    async def _await_acks(self, pending: list[_Pending], sent: list[asyncio.Future]) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*sent), self._ack_timeout_s)
        except Exception as exc:  # noqa: BLE001
            self._fail(pending, self._broker_error(exc))
        else:
            for batch, done in pending:
                if not done.done():
                    done.set_result(len(batch))
        finally:
            self._in_flight.release()

    def _broker_error(self, exc: BaseException) -> BrokerError:
        if not isinstance(exc, KafkaError | OSError | TimeoutError):
            log.exception("publishing readings failed", exc_info=exc)
        return BrokerError(f"Kafka at {self._bootstrap} did not acknowledge the readings: "
                           f"{why_unacknowledged(exc, self._ack_timeout_s)}")

    @staticmethod
    def _fail(pending: list[_Pending], exc: BrokerError) -> None:
        for _, done in pending:
            if not done.done():
                done.set_exception(exc)
                done.exception()  # retrieved: no "never retrieved" warning if nobody waits


def why_unacknowledged(exc: BaseException, timeout_s: float) -> str:
    """The reason a 503 gives: the error's message or, for a timeout (which has none), how
    long the API waited. (``exc or ...`` was always ``exc``: the detail ended in ': '.)"""
    if str(exc):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no acknowledgement within {timeout_s:g} s"
    return type(exc).__name__


def concat_batches(batches: list[ReadingBatch]) -> ReadingBatch:
    """One batch of all rows, in order."""
    if len(batches) == 1:
        return batches[0]
    return ReadingBatch(
        sensor_id=np.concatenate([b.sensor_id for b in batches]),
        kind=np.concatenate([b.kind for b in batches]),
        ts_ms=np.concatenate([b.ts_ms for b in batches]),
        lon=np.concatenate([b.lon for b in batches]),
        lat=np.concatenate([b.lat for b in batches]),
        district=np.concatenate([b.district for b in batches]),
        values={f: np.concatenate([b.values[f] for b in batches]) for f in ALL_VALUE_FIELDS},
    )
