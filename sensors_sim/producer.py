"""Send reading batches to Kafka in the pipeline's wire format (``cityagent.batch``).

A tick's batch is split by sensor bucket; each piece is one Kafka message keyed by its
bucket (``b017``), so every reading of a sensor lands on the same partition. Delivery is
asynchronous: :class:`KafkaSink` counts readings the brokers acknowledged and messages
that failed, from the futures' callbacks.
"""

from __future__ import annotations

import threading
import time

from cityagent.batch import ReadingBatch, encode_batch
from cityagent.errors import BrokerError

__all__ = ("KafkaSink",)

_MAX_REQUEST_SIZE = 8 << 20


class KafkaSink:
    """A kafka-python producer for reading batches, with delivery counters.

    Construction connects; when no broker answers it retries with backoff for
    ``connect_timeout_s`` and then raises :class:`BrokerError` naming the bootstrap servers.
    """

    def __init__(self, bootstrap: str, topic: str, *, connect_timeout_s: float = 30.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._lock = threading.Lock()
        self.sent = 0  # readings handed to the producer
        self.acked = 0  # readings the brokers acknowledged
        self.errors = 0  # messages that failed (rejected by send, or failed on delivery)
        self.last_error: str | None = None
        self._producer = _connect(bootstrap, connect_timeout_s)

    def send(self, batch: ReadingBatch) -> None:
        """Send the batch, one message per bucket; delivery is counted when acknowledged."""
        from kafka.errors import KafkaError

        for key, piece in batch.split_by_bucket():
            rows = len(piece)
            try:
                future = self._producer.send(
                    self.topic, key=key.encode(), value=encode_batch(piece)
                )
            except KafkaError as exc:
                self._failed(exc)
                continue
            self.sent += rows
            future.add_callback(self._delivered, rows)
            future.add_errback(self._failed)

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every message sent so far is delivered or failed (or the timeout)."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:  # KafkaTimeoutError: undelivered messages stay uncounted
            with self._lock:
                self.last_error = f"flush: {type(exc).__name__}: {exc}"

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and close the producer."""
        self._producer.close(timeout=timeout_s)

    def _delivered(self, rows: int, _metadata: object) -> None:
        with self._lock:
            self.acked += rows

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"


def _connect(bootstrap: str, timeout_s: float):
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
