"""Operators' commands (ack, resolve, assign, comment) onto the alert-scopes topic.

A command is keyed by the alert's correlation ``scope``, so it reaches the alerting agent
that owns the incident; that agent applies it and publishes the resulting event on the alerts
topic, which the API's read model then shows. The API answers 202 once Kafka acknowledged the
command (acks=all): it is stored and will be applied, but may not be visible yet.

Why the scopes topic and not the commands topic: the agent applies a scope's anomalies and
commands in the order it reads them, and after a crash it applies again everything after its
last checkpoint. Two topics are read in no fixed order, so a replay could apply a resolve
before the anomalies that came ahead of it: the incident was resolved with a few sensors and
the rest opened a second alert of the same flood (seen with a SIGKILL within a second of a
resolve). In the scope's one partition of one topic, a replay is the original order. The
worker still reads the commands topic, for commands written there before.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from api.publisher import why_unacknowledged
from cityagent.errors import BrokerError, RecordTooLarge
from cityagent.incident_alert import Command
from cityagent.settings import Settings

__all__ = ("CommandPublisher", "command_message", "command_topic")

log = logging.getLogger("cityagent.api")


def command_topic(settings: Settings) -> str:
    """Where commands go: the scope's anomalies' topic, so that one log orders both."""
    return settings.scopes_topic


def command_message(command: Command) -> bytes:
    """The value of a command on the commands topic: ``{"command": Command.to_dict()}``."""
    return orjson.dumps({"command": command.to_dict()})


class CommandPublisher:
    """A small JSON producer for the commands topic, acknowledged by all in-sync replicas."""

    def __init__(self, bootstrap: str, topic: str, *, ack_timeout_s: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s
        self._producer: AIOKafkaProducer | None = None

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect, retrying until ``timeout_s``; raise BrokerError naming the servers."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                        request_timeout_ms=int(self._ack_timeout_s * 1000))
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
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send_value(self, key: str, value: bytes, what: str) -> tuple[int, int]:
        """Publish any JSON value keyed by ``key``; return its (partition, offset) once Kafka
        acknowledged it (a writer that follows the topic waits to read it back)."""
        return await self._send(key, value, what)

    async def send_tombstone(self, key: str) -> tuple[int, int]:
        """Publish a null value for ``key`` (a delete on a compacted topic); return its
        (partition, offset) once Kafka acknowledged it."""
        return await self._send(key, None, f"the delete of {key!r}")

    async def send(self, command: Command, scope: str) -> None:
        """Publish the command keyed by ``scope``; return once Kafka acknowledged it."""
        await self._send(scope, command_message(command), f"command {command.command_id!r}")

    async def _send(self, key: str, value: bytes | None, what: str) -> tuple[int, int]:
        """Raise RecordTooLarge when Kafka refuses the record for its size (a retry cannot
        help: 413), BrokerError when it does not acknowledge it in time (503)."""
        if self._producer is None:
            raise BrokerError("the API is not connected to Kafka yet")
        try:
            stored = await asyncio.wait_for(
                self._producer.send_and_wait(self._topic, value, key=key.encode()),
                self._ack_timeout_s)
        except (MessageSizeTooLargeError, RecordTooLargeError):
            raise RecordTooLarge(f"{what} is {len(value or b''):,} bytes as a Kafka record, "
                                 "more than Kafka takes (1 MB by default); make it smaller "
                                 "(for a zone: fewer boundary points)") from None
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerError(f"Kafka at {self._bootstrap} did not acknowledge {what}: "
                              f"{why_unacknowledged(exc, self._ack_timeout_s)}") from None
        return stored.partition, stored.offset
