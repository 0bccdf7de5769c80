"""What this API process wrote to a compacted settings topic and has not read back yet.

The admin writes derive the ``If-Match`` check (and for zones and routing, the next version)
from what the process has read of the topic; a maintenance window's version is its offset. Its follower reads a record back some 0.25 s after it was
written (the fetch's wait), so a second write within that time saw the version before the
first: it passed an ``If-Match`` of that version and took the same next version (eight PUTs at
once from version 3 were eight 202s, each "version 4"). Waiting for the read-back made each
write ~250 ms instead of ~3 ms; the ledger lays the process's own unread writes over what it
has read, and forgets each one once the follower has read past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ("WriteLedger",)


@dataclass(frozen=True)
class _Written:
    partition: int
    offset: int
    version: int
    exists: bool  # False: a delete


class WriteLedger:
    """This process's writes to one topic (key → the last one) until its follower reads them."""

    def __init__(self, follower: Any) -> None:
        self._follower = follower
        self._written: dict[str, _Written] = {}

    def note(self, key: str, partition: int, offset: int, version: int, *,
             exists: bool = True) -> None:
        """Record a write Kafka acknowledged at ``offset`` of ``partition``."""
        self._written[key] = _Written(partition, offset, version, exists)

    def current(self, key: str, read: int | None) -> int | None:
        """``key``'s version: that of this process's unread write if there is one (None for a
        delete), else ``read``, what the follower has applied (None: it does not exist)."""
        self._forget_read()
        written = self._written.get(key)
        if written is None:
            return read
        return written.version if written.exists else None

    def top(self, read: int) -> int:
        """The highest version: ``read`` (the follower's) or one this process wrote since."""
        self._forget_read()
        return max([read, *(w.version for w in self._written.values())])

    def _forget_read(self) -> None:
        positions = self._follower.positions
        self._written = {key: w for key, w in self._written.items()
                         if positions.get(w.partition, 0) <= w.offset}
