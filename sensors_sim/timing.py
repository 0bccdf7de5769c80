"""Event time for a run, and readings delivered late or out of order. Pure numpy, no clock.

:class:`EventClock` gives the event time of tick ``k``: ``start + k * tick * accelerate``,
exactly, so event time is consistent whatever the wall clock does (a run that falls behind
its wall schedule still spaces its readings evenly in event time).

:class:`LateBuffer` holds back a fraction of each tick's readings for 1 to ``max_delay``
ticks and delivers them with a later tick: late in wall time, out of order in event time,
their own event times unchanged.
"""

from __future__ import annotations

import numpy as np

from cityagent.batch import ReadingBatch

__all__ = ("EventClock", "LateBuffer")


class EventClock:
    def __init__(self, start_ms: int, tick_s: float, accelerate: float = 1.0) -> None:
        if accelerate <= 0 or tick_s <= 0:
            raise ValueError("tick_s and accelerate must be positive")
        self.start_ms = int(start_ms)
        self.step_ms = tick_s * accelerate * 1000.0

    def at(self, k: int) -> int:
        """Event time of tick ``k`` (0 is the first)."""
        return self.start_ms + round(k * self.step_ms)


class LateBuffer:
    """Delay ``fraction`` of the readings by 1..``max_delay`` ticks (seeded, deterministic)."""

    def __init__(self, fraction: float, seed: int, max_delay: int = 5) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"the late fraction must lie in [0, 1]; got {fraction}")
        self.fraction = fraction
        self.max_delay = max(1, max_delay)
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A7E]))
        self._held: dict[int, list[tuple[ReadingBatch, np.ndarray]]] = {}
        self._k = 0
        self.delayed = 0

    def push(self, batch: ReadingBatch, rows: np.ndarray) -> list[tuple[ReadingBatch, np.ndarray]]:
        """This tick's (batch, fleet rows) in; what to deliver now out (late ones first)."""
        k, self._k = self._k, self._k + 1
        out = self._held.pop(k, [])
        if self.fraction == 0.0 or len(batch) == 0:
            return [*out, (batch, rows)]
        late = self._rng.random(len(batch)) < self.fraction
        if late.any():
            delay = self._rng.integers(1, self.max_delay + 1, int(late.sum()))
            late_idx = np.flatnonzero(late)
            for d in np.unique(delay).tolist():
                pick = late_idx[delay == d]
                self._held.setdefault(k + d, []).append((batch.take(pick), rows[pick]))
            self.delayed += int(late.sum())
            keep = np.flatnonzero(~late)
            batch, rows = batch.take(keep), rows[keep]
        return [*out, (batch, rows)]

    @property
    def held(self) -> int:
        """Readings held back now, not yet given out."""
        return sum(len(batch) for items in self._held.values() for batch, _ in items)

    def drain(self) -> list[tuple[ReadingBatch, np.ndarray]]:
        """Everything still held, oldest first (at the end of a run)."""
        out = [item for k in sorted(self._held) for item in self._held[k]]
        self._held.clear()
        return out
