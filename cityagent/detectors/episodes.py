"""Episodes: per sensor and detector, verdicts per window become start / escalate / end.

An episode starts with the first anomalous window (its id is derived from the sensor, the
detector and that window's start, so re-processing the same readings gives the same id),
escalates when its severity rises, and ends after ``end_after_windows`` normal windows in a
row — so a flapping sensor makes one episode, not one per window.

Each transition is appended to an ``Events`` buffer; the engine turns the (few) events into
anomaly objects after the compiled loop.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from cityagent.detectors._jit import fmax, njit
from cityagent.detectors.verdict import Verdict
from cityagent.state import NO_TS

__all__ = ("EpisodeColumns", "Events", "next_episode", "step_episodes", "emit", "START", "ESCALATE", "END", "PHASES")

PHASES: tuple[str, ...] = ("start", "escalate", "end")
START, ESCALATE, END = range(len(PHASES))
#: Integer columns of an event.
E_ROW, E_DETECTOR, E_PHASE, E_SEVERITY, E_REASON, E_FIELD, E_SINCE, E_START, E_END = range(9)
#: Float columns of an event.
E_SCORE, E_PEAK, E_OBSERVED, E_EXPECTED = range(4)


#: The state columns of the episodes (only these are passed to the compiled helper).
EpisodeColumns = namedtuple("EpisodeColumns", "ep_since ep_sev ep_peak ep_clear ep_reason")


class Events:
    """A growable buffer of episode transitions written by the compiled kernels."""

    def __init__(self, capacity: int = 1024) -> None:
        self.ints = np.zeros((capacity, 9), dtype=np.int64)
        self.floats = np.zeros((capacity, 4))
        self.count = np.zeros(1, dtype=np.int64)

    def reserve(self, more: int) -> None:
        """Room for ``more`` events beyond those held (the kernels never check)."""
        need = int(self.count[0]) + more
        if need > len(self.ints):
            size = max(need, 2 * len(self.ints))
            self.ints = np.resize(self.ints, (size, 9))
            self.floats = np.resize(self.floats, (size, 4))

    def clear(self) -> None:
        self.count[0] = 0


@njit
def emit(ints, floats, count, row, d, phase, sev, reason, field, since, start_ms, end_ms, score,
         peak, observed, expected) -> None:
    """Append one transition to an Events buffer (``ints``, ``floats``, ``count``)."""
    i = count[0]
    count[0] = i + 1
    ints[i, E_ROW], ints[i, E_DETECTOR], ints[i, E_PHASE] = row, d, phase
    ints[i, E_SEVERITY], ints[i, E_REASON], ints[i, E_FIELD] = max(sev, 0), reason, field
    ints[i, E_SINCE], ints[i, E_START], ints[i, E_END] = since, start_ms, end_ms
    floats[i, E_SCORE], floats[i, E_PEAK] = score, fmax(peak, score)
    floats[i, E_OBSERVED], floats[i, E_EXPECTED] = observed, expected


@njit
def next_episode(since: int, sev: int, peak: float, clear: int, v: Verdict, since_ms: int,
                 end_after: int):
    """One episode after one more verdict: (phase or -1, since, severity, peak, clear).

    For an END the returned values are the closed episode's (what the event reports); the
    caller then resets the episode.
    """
    is_open = since != NO_TS
    if v.fire:
        if not is_open:
            return START, since_ms, max(sev, v.severity), fmax(peak, v.score), 0
        phase = ESCALATE if v.severity > sev else -1
        return phase, since, max(sev, v.severity), fmax(peak, v.score), 0
    clear = clear + (1 if is_open else 0)
    if is_open and clear >= end_after:
        return END, since, sev, peak, clear
    return -1, since, sev, peak, clear


@njit
def step_episodes(ep: EpisodeColumns, row: int, detectors, verdicts, since_ms: int,
                  start_ms: int, end_ms: int, end_after: int, ints, floats, count) -> None:
    """Advance the episodes of ``row`` for each detector index and its verdict; emit the
    transitions. Reads and writes the episode columns once per detector."""
    ep_since, ep_sev, ep_peak, ep_clear, ep_reason = ep
    for j in range(len(detectors)):
        d, v = detectors[j], verdicts[j]
        phase, since, sev, peak, clear = next_episode(
            ep_since[row, d], np.int64(ep_sev[row, d]), ep_peak[row, d],
            np.int64(ep_clear[row, d]), v, since_ms, end_after)
        if phase == END:
            emit(ints, floats, count, row, d, END, sev, np.int64(ep_reason[row, d]), v.field,
                 since, start_ms, end_ms, v.score, peak, v.observed, v.expected)
            since, sev, peak, clear = NO_TS, -1, 0.0, 0
        elif phase >= 0:
            ep_reason[row, d] = v.reason
            emit(ints, floats, count, row, d, phase, sev, v.reason, v.field, since, start_ms,
                 end_ms, v.score, peak, v.observed, v.expected)
        ep_since[row, d], ep_sev[row, d], ep_peak[row, d], ep_clear[row, d] = (
            since, sev, peak, clear)
