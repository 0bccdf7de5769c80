"""What the detection and incident agents share: states kept in memory, written to a table
at checkpoints, and the stream acknowledged only up to what a checkpoint holds.

Writing a state on every message would cost a write of the whole state per message (and the
states grow with the sensors they cover); acknowledging a message before its effect is in a
checkpoint would lose that effect in a crash. So the agents' streams are ``noack``: each
applied event waits in ``pending`` until the next checkpoint has written the ``dirty``
states, and only then is acknowledged, which lets Faust commit its offset. After a crash
Kafka redelivers everything after the last commit.
"""

from __future__ import annotations

import time
from typing import Any

import faust

__all__ = ("CheckpointedStates",)


class CheckpointedStates:
    """The bookkeeping of one agent's checkpoints: changed keys, events to acknowledge."""

    def __init__(self, table: faust.Table, partitions: int) -> None:
        self.table = table
        self.partitions = partitions  # of the input topic (and the table's changelog)
        self.dirty: set[str] = set()
        self.pending: list[Any] = []  # events applied to state but not yet checkpointed
        self.stream: faust.StreamT | None = None  # the agent's noack stream
        self.last_checkpoint = time.monotonic()

    def due(self, interval_s: float) -> bool:
        return time.monotonic() - self.last_checkpoint >= interval_s

    async def acknowledge(self) -> None:
        """Acknowledge the events applied so far: call once their states are written."""
        pending, self.pending = self.pending, []
        if self.stream is not None:
            for event in pending:
                await self.stream.ack(event)
        self.last_checkpoint = time.monotonic()
