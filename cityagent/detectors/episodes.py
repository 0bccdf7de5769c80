"""Episodes: per sensor and detector, verdicts per window become start / escalate / end.

An episode starts with the first anomalous window (its id is derived from the sensor, the
detector and that window's start, so re-processing the same readings gives the same id),
escalates when its severity rises, and ends after ``end_after_windows`` normal windows in a
row — so a flapping sensor makes one episode, not one per window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cityagent.state import NO_TS, BucketState

__all__ = ("Transitions", "advance_episodes")


@dataclass(frozen=True)
class Transitions:
    """Indexes (into the verdict's rows) of episodes that started, escalated and ended."""

    started: np.ndarray
    escalated: np.ndarray
    ended: np.ndarray
    since: np.ndarray  # episode start per row (after the update; the old start when ended)


def advance_episodes(state: BucketState, rows: np.ndarray, detector: int, fire: np.ndarray,
                     severity: np.ndarray, score: np.ndarray, start_ms: np.ndarray,
                     end_after: int) -> Transitions:
    c = state.cols
    since = c["ep_since"][rows, detector]
    is_open = since != NO_TS
    start = fire & ~is_open
    go_on = fire & is_open
    old_sev = c["ep_sev"][rows, detector]
    escalate = go_on & (severity > old_sev)
    clear = np.where(fire, 0, c["ep_clear"][rows, detector] + is_open)
    end = ~fire & is_open & (clear >= end_after)
    new_since = np.where(start, start_ms, since)
    c["ep_since"][rows, detector] = np.where(end, NO_TS, new_since)
    c["ep_sev"][rows, detector] = np.where(end, -1, np.where(fire, np.maximum(old_sev, severity),
                                                             old_sev))
    peak = c["ep_peak"][rows, detector]
    c["ep_peak"][rows, detector] = np.where(end, 0.0, np.where(fire, np.maximum(peak, score), peak))
    c["ep_clear"][rows, detector] = np.where(end, 0, clear)
    return Transitions(np.flatnonzero(start), np.flatnonzero(escalate), np.flatnonzero(end),
                       new_since)
