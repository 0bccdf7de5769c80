"""Silence: a sensor quiet for longer than its expected interval, found by event time.

Checked whenever the bucket's watermark moves (a batch, or the idle timer), not on the
sensor's own readings — it has none. The expected interval comes from the registry, else
from the kind's ``expected_interval_s`` (60 s for the three city kinds), and only where that
is 0 (the generic profile) from the sensor's learned report interval (``windows._learn_interval``:
one odd gap, an outage or a very old reading, does not move it); silent after
``silence_factor`` intervals and at least ``silence_min_s``. Severity blue: a maintenance matter (or a power or network cut).
"""

from __future__ import annotations

import numpy as np

from cityagent.state import NO_TS, BucketState

__all__ = ("silent_rows",)


def silent_rows(state: BucketState, params: dict[str, np.ndarray], watermark: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Bool per state row: silent at ``watermark``; and how long each has been quiet (ms)."""
    c = state.cols
    last = c["last_ts"]
    configured = params["expected_interval_s"] * 1000.0
    interval = np.where(configured > 0, configured, c["gap_ms"])
    limit = np.maximum(params["silence_factor"] * interval, params["silence_min_s"] * 1000.0)
    quiet = np.where(last != NO_TS, watermark - last, 0).astype(np.float64)
    with np.errstate(invalid="ignore"):
        silent = (last != NO_TS) & np.isfinite(limit) & (quiet > limit)
    return silent, quiet
