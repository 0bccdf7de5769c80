"""Send reading batches to Kafka in the pipeline's wire format (``cityagent.batch``).

Readings are split by sensor bucket; each piece is one Kafka message keyed by its bucket
(``b017``), so every reading of a sensor lands on the same partition. kafka-python sends
about 18k messages/s, so the message count is the limit: the sink *accumulates* ticks
until a bucket's message would hold about ``rows_per_message`` readings (or ``linger_s``
of wall time passed), then sends one message per bucket. Delivery is asynchronous:
:class:`KafkaSink` counts readings the brokers acknowledged and messages that failed, from
the futures' callbacks.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from cityagent.batch import NUM_BUCKETS, ReadingBatch, bucket_key, encode_batch
from cityagent.errors import BrokerError, describe_exception

__all__ = ("KafkaSink", "concat_batches")

_MAX_REQUEST_SIZE = 8 << 20


class KafkaSink:
    """A kafka-python producer for reading batches, with delivery counters.

    Construction connects; when no broker answers it retries with backoff for
    ``connect_timeout_s`` and then raises :class:`BrokerError` naming the bootstrap servers.
    """

    def __init__(self, bootstrap: str, topic: str, *, connect_timeout_s: float = 30.0,
                 rows_per_message: int = 400, linger_s: float = 0.5,
                 compression: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.target = f"Kafka {bootstrap} topic {topic}"
        self.rows_per_message = rows_per_message
        self.linger_s = linger_s
        self.messages = 0
        self.ack_latency_ms: float | None = None  # moving average, send to acknowledgement
        self._pending: list[tuple[ReadingBatch, np.ndarray]] = []
        self._pending_rows = 0
        self._pending_since = 0.0
        self._lock = threading.Lock()
        self.sent = 0  # readings handed to the producer
        self.acked = 0  # readings the brokers acknowledged
        self.errors = 0  # messages that failed (rejected by send, or failed on delivery)
        self.last_error: str | None = None
        self._producer = _connect(bootstrap, connect_timeout_s, compression)

    def send(self, batch: ReadingBatch, buckets: np.ndarray | None = None) -> None:
        """Queue the batch (``buckets``: each row's bucket, computed when not given); send
        one message per bucket once enough rows or time accumulated."""
        if len(batch) == 0:
            return
        if buckets is None:
            buckets = batch.buckets()
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append((batch, np.asarray(buckets)))
        self._pending_rows += len(batch)
        if (self._pending_rows >= self.rows_per_message * NUM_BUCKETS
                or time.monotonic() - self._pending_since >= self.linger_s):
            self.send_pending()

    def poll(self) -> None:
        """Send what is queued if it has waited ``linger_s`` (call it now and then)."""
        if self._pending and time.monotonic() - self._pending_since >= self.linger_s:
            self.send_pending()

    def send_pending(self) -> None:
        """Send every queued reading now: one message per bucket (chunks of at most 2x the
        target rows), readings of a sensor in event order within its bucket."""
        from kafka.errors import KafkaError

        if not self._pending:
            return
        batch = concat_batches([b for b, _ in self._pending])
        buckets = np.concatenate([k for _, k in self._pending])
        self._pending, self._pending_rows = [], 0
        order = np.argsort(buckets, kind="stable")
        batch, buckets = batch.take(order), buckets[order]
        starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
        ends = np.r_[starts[1:], len(buckets)]
        limit = 2 * self.rows_per_message
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key = bucket_key(int(buckets[start])).encode()
            for lo in range(start, end, limit):
                hi = min(end, lo + limit)
                piece = _slice(batch, lo, hi)
                try:
                    future = self._producer.send(self.topic, key=key, value=encode_batch(piece))
                except KafkaError as exc:
                    self._failed(exc)
                    continue
                self.sent += hi - lo
                self.messages += 1
                future.add_callback(self._delivered, hi - lo, time.monotonic())
                future.add_errback(self._failed)

    def flush(self, timeout_s: float | None = None) -> None:
        """Send what is queued, then block until every message sent so far is delivered or
        failed (or the timeout)."""
        from kafka.errors import KafkaError

        self.send_pending()
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:  # KafkaTimeoutError: undelivered messages stay uncounted
            with self._lock:
                self.last_error = f"flush: {describe_exception(exc)}"

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close the producer."""
        self._producer.close(timeout=timeout_s)

    def _delivered(self, rows: int, sent_at: float, _metadata: object) -> None:
        latency = (time.monotonic() - sent_at) * 1000.0
        with self._lock:
            self.acked += rows
            old = self.ack_latency_ms
            self.ack_latency_ms = latency if old is None else 0.9 * old + 0.1 * latency

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{describe_exception(exc)}"


def _slice(batch: ReadingBatch, lo: int, hi: int) -> ReadingBatch:
    return ReadingBatch(batch.sensor_id[lo:hi], batch.kind[lo:hi], batch.ts_ms[lo:hi],
                        batch.lon[lo:hi], batch.lat[lo:hi], batch.district[lo:hi],
                        {k: v[lo:hi] for k, v in batch.values.items()})


def concat_batches(batches: list[ReadingBatch]) -> ReadingBatch:
    if len(batches) == 1:
        return batches[0]
    return ReadingBatch(
        np.concatenate([b.sensor_id for b in batches]),
        np.concatenate([b.kind for b in batches]),
        np.concatenate([b.ts_ms for b in batches]),
        np.concatenate([b.lon for b in batches]),
        np.concatenate([b.lat for b in batches]),
        np.concatenate([b.district for b in batches]),
        {k: np.concatenate([b.values[k] for b in batches]) for k in batches[0].values},
    )


def _connect(bootstrap: str, timeout_s: float, compression: str | None = None):
    """A connected KafkaProducer; BrokerError once ``timeout_s`` passes without a broker."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaConfigurationError, KafkaError

    deadline = time.monotonic() + timeout_s
    delay = 0.25
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            return KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="cityagent-sim",
                acks="all",
                linger_ms=20,
                batch_size=1 << 20,
                max_request_size=_MAX_REQUEST_SIZE,
                compression_type=compression,
                max_block_ms=10_000,
                # Each attempt waits at most a few seconds, so we retry (and give up) on time.
                bootstrap_timeout_ms=int(max(min(remaining, 5.0), 0.5) * 1000),
            )
        except (KafkaConfigurationError, ValueError) as exc:  # retrying would not help
            raise BrokerError(f"cannot make a Kafka producer for {bootstrap}: {exc}") from None
        except (KafkaError, OSError) as exc:
            # NoBrokersAvailable / KafkaTimeoutError (no broker answered), DNS errors, ...
            last = exc
        sleep = min(delay, deadline - time.monotonic())
        if sleep > 0:
            time.sleep(sleep)
        delay = min(delay * 2, 5.0)
    why = ""
    if last is not None:
        text = str(last)
        name = type(last).__name__
        why = f" ({text if text.startswith(name) else f'{name}: {text}'})"
    raise BrokerError(
        f"cannot reach the Kafka brokers at {bootstrap} within {timeout_s:g}s{why}"
    )
