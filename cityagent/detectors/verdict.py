"""What a detector says about each closed window: fire or not, severity, score, why."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ("Verdict", "SEVERITIES", "REASONS", "score_of", "severity_of_score")

#: Every reason a detector gives; an episode keeps its reason as an index into this.
REASONS: tuple[str, ...] = (
    "", "water.approaching", "water.warning", "water.guaranteed", "water.record",
    "pressure.low", "pressure.critical", "pressure.high", "traffic.congestion",
    "deviation.low", "deviation.high", "change.drop", "change.rise",
    "fault.spike_up", "fault.spike_down", "fault.flatline", "fault.silence",
)

#: Warning colours, lowest first (蓝 黄 橙 红); a severity is kept as its rank 0-3.
SEVERITIES: tuple[str, ...] = ("blue", "yellow", "orange", "red")


@dataclass(frozen=True)
class Verdict:
    """Per closed window (aligned with the features' rows)."""

    fire: np.ndarray  # bool: anomalous
    severity: np.ndarray  # int8 rank, -1 where not firing
    score: np.ndarray  # float in [0, 1]; 0.5 is the detector's own threshold
    observed: np.ndarray  # the value the detector judged
    expected: np.ndarray  # what it expected (a baseline, or the limit that was passed)
    code: np.ndarray  # str: why, e.g. "water.warning", "deviation.low"
    field: str | np.ndarray  # what ``observed`` measures


def score_of(ratio: np.ndarray) -> np.ndarray:
    """A score in [0, 1) from a statistic's ratio to its threshold: 0.5 exactly at it."""
    r2 = np.square(np.nan_to_num(ratio, nan=0.0, posinf=1e6))
    return r2 / (1.0 + r2)


def severity_of_score(score: np.ndarray) -> np.ndarray:
    """Statistical detectors: blue from the threshold, yellow from twice, orange from 3x."""
    return np.where(score >= 0.9, 2, np.where(score >= 0.8, 1, 0)).astype(np.int8)
