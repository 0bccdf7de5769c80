"""Publishes validated readings to Kafka, batched per sensor bucket, acknowledged by all replicas.

The API answers 202 only after every batch of a request is acknowledged (acks=all), so a
reading reported as accepted is stored; if the broker does not acknowledge in time the request
fails with 503 and nothing is reported as accepted.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cityagent.batch import ReadingBatch, encode_batch
from cityagent.errors import BrokerError

__all__ = ("ReadingPublisher",)


class ReadingPublisher:
    def __init__(self, bootstrap: str, topic: str, *, ack_timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect, retrying until ``timeout_s``; raise BrokerError naming the servers."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                linger_ms=2,
                max_batch_size=1 << 20,
                max_request_size=8 << 20,
                request_timeout_ms=int(self._ack_timeout_s * 1000),
            )
            try:
                await producer.start()
                self._producer = producer
                return
            except (KafkaError, OSError) as exc:
                await producer.stop()
                if asyncio.get_running_loop().time() > deadline:
                    raise BrokerError(f"cannot reach Kafka at {self._bootstrap}: {exc}") from None
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._producer:
            await self._producer.stop()

    async def publish(self, batch: ReadingBatch) -> int:
        """Send the batch, one message per bucket; return once all are acknowledged."""
        if self._producer is None:
            raise BrokerError("the API is not connected to Kafka yet")
        try:
            futures = [
                await self._producer.send(self._topic, key=key.encode(), value=encode_batch(part))
                for key, part in batch.split_by_bucket()
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self._ack_timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerError(
                f"Kafka at {self._bootstrap} did not acknowledge the readings: {exc or type(exc).__name__}"
            ) from None
        return len(batch)
