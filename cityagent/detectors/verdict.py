"""What a detector says about a closed window: fire or not, severity, score, why.

Reasons and fields travel as small integers (indexes into ``REASONS`` and ``FIELDS``) inside
the compiled kernels; the engine turns them back into text for the anomaly events.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from cityagent.detectors._jit import njit

__all__ = ("Verdict", "SEVERITIES", "REASONS", "FIELDS", "score_of", "score_one",
           "severity_of_score")

#: Every reason a detector gives; an episode keeps its reason as an index into this.
REASONS: tuple[str, ...] = (
    "", "water.approaching", "water.warning", "water.guaranteed", "water.record",
    "pressure.low", "pressure.critical", "pressure.high", "traffic.congestion",
    "deviation.low", "deviation.high", "change.drop", "change.rise",
    "fault.spike_up", "fault.spike_down", "fault.flatline", "fault.silence",
    "trend.down", "trend.up",
)
_R = {r: i for i, r in enumerate(REASONS)}
R_NONE = _R[""]
R_WATER_APPROACHING = _R["water.approaching"]  # + severity rank: warning, guaranteed, record
R_PRESSURE_LOW = _R["pressure.low"]
R_PRESSURE_CRITICAL = _R["pressure.critical"]
R_PRESSURE_HIGH = _R["pressure.high"]
R_TRAFFIC_CONGESTION = _R["traffic.congestion"]
R_DEVIATION_LOW = _R["deviation.low"]
R_DEVIATION_HIGH = _R["deviation.high"]
R_CHANGE_DROP = _R["change.drop"]
R_CHANGE_RISE = _R["change.rise"]
R_SPIKE_UP = _R["fault.spike_up"]
R_SPIKE_DOWN = _R["fault.spike_down"]
R_FLATLINE = _R["fault.flatline"]
R_SILENCE = _R["fault.silence"]
R_TREND_DOWN = _R["trend.down"]
R_TREND_UP = _R["trend.up"]

#: What ``observed`` measures; "value" means the kind's watched field (detection.toml).
FIELDS: tuple[str, ...] = ("", "value", "level_m", "pressure_mpa", "traffic_index", "quiet_s")
F_NONE, F_VALUE, F_LEVEL_M, F_PRESSURE_MPA, F_TRAFFIC_INDEX, F_QUIET_S = range(len(FIELDS))

#: Warning colours, lowest first (蓝 黄 橙 红); a severity is kept as its rank 0-3.
SEVERITIES: tuple[str, ...] = ("blue", "yellow", "orange", "red")

#: One detector's judgement of one window.
#: fire: anomalous; severity: rank 0-3, -1 when not firing; score in [0, 1] (0.5 is the
#: detector's own threshold); observed: the value judged; expected: the baseline or the
#: limit that was passed; reason: index into REASONS; field: index into FIELDS.
Verdict = namedtuple("Verdict", "fire severity score observed expected reason field")


def score_of(ratio: np.ndarray) -> np.ndarray:
    """A score in [0, 1) from a statistic's ratio to its threshold: 0.5 exactly at it."""
    r2 = np.square(np.nan_to_num(ratio, nan=0.0, posinf=1e6))
    return r2 / (1.0 + r2)


@njit
def score_one(ratio: float) -> float:
    """``score_of`` of one ratio."""
    if ratio != ratio:
        ratio = 0.0
    elif ratio == np.inf:
        ratio = 1e6
    r2 = ratio * ratio
    return r2 / (1.0 + r2)


@njit
def severity_of_score(score: float) -> int:
    """Statistical detectors: blue from the threshold, yellow from twice, orange from 3x."""
    if score >= 0.9:
        return 2
    if score >= 0.8:
        return 1
    return 0
