"""The time order of `cityagent audit`: events of several partitions, each read in offset
order, written by ``(at_ms, partition, offset)`` without holding the whole range.

A partition of the alerts topic is only nearly in ``at_ms`` order: its events are dated by
the clock of whoever made them (the worker's clock at processing, an operator's at the
command, an escalation's due time), so a command processed late, or an escalation a restarted
worker finds overdue, comes after events dated later. No bound on that holds in general (a
worker down for a day delays commands by a day), so an exact order would need the whole
range. Instead, events are held for a *reorder window* W: within a partition, an event is
assumed to come at most W after any event dated later than it. Then, once every partition
that is still being read has shown an event dated past ``t + W``, nothing dated before ``t``
can come any more, and what is held before ``t`` is written in order.

Guarantee: the output is in ``(at_ms, partition, offset)`` order exactly when no event comes
in its partition more than W after one dated later. An event that does is written as soon
as it is read, after the later ones already written, and counted (``out_of_order``,
``most_late_ms``), so the summary says so. Memory: a partition is not read more than W past
the least advanced one (``ahead``), so what is held spans about 2 W of event time across the
partitions, plus one poll's records.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator

__all__ = ("TimeOrder",)


class TimeOrder:
    """Events in, lines out in time order; see the module docstring."""

    def __init__(self, partitions: Iterable[int], window_ms: int) -> None:
        self.window_ms = window_ms
        #: The latest ``at_ms`` read from each partition still being read (-inf: none yet).
        self._latest: dict[int, float] = dict.fromkeys(partitions, -math.inf)
        self._held: list[tuple[int, int, int, bytes]] = []
        self._last: tuple[int, int, int] | None = None  # the key last written
        self.out_of_order = 0
        self.most_late_ms = 0

    def add(self, partition: int, offset: int, at_ms: int, line: bytes | None) -> None:
        """An event read; ``line`` None for one that is not written (out of the range, another
        alert's): it still shows how far its partition's time has come."""
        if partition in self._latest:
            self._latest[partition] = max(self._latest[partition], at_ms)
        if line is not None:
            heapq.heappush(self._held, (at_ms, partition, offset, line))

    def done(self, partition: int) -> None:
        """``partition`` is read to its end (or given up): nothing more comes from it."""
        self._latest.pop(partition, None)

    def ahead(self) -> set[int]:
        """The partitions read more than the window past the least advanced one: pause them,
        or what is held grows with the range."""
        if not self._latest:
            return set()
        least = min(self._latest.values())
        return {p for p, latest in self._latest.items() if latest > least + self.window_ms}

    def ready(self) -> Iterator[bytes]:
        """The lines that can be written now: those dated before anything still to come."""
        until = min(self._latest.values(), default=math.inf) - self.window_ms
        while self._held and self._held[0][0] < until:
            yield self._pop()

    def rest(self) -> Iterator[bytes]:
        """Every line still held, in order: at the end of the read."""
        while self._held:
            yield self._pop()

    @property
    def held(self) -> int:
        return len(self._held)

    def _pop(self) -> bytes:
        at_ms, partition, offset, line = heapq.heappop(self._held)
        key = (at_ms, partition, offset)
        if self._last is not None and key < self._last:
            self.out_of_order += 1
            self.most_late_ms = max(self.most_late_ms, self._last[0] - at_ms)
        else:
            self._last = key
        return line
