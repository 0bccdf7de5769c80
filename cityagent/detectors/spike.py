"""Spike: one reading far outside the baseline while the rest of its window is normal.

A sensor fault (a glitch, an electrical spike), not an event: the body of the window (its
robust value) stays within the deviation threshold. Needs three readings in the window to
tell a spike from a level change. Severity blue: a maintenance matter.
"""

from __future__ import annotations

import numpy as np

from cityagent.detectors.features import Features
from cityagent.detectors.verdict import Verdict, score_of

__all__ = ("detect_spike",)


def detect_spike(f: Features) -> Verdict:
    w = f.w
    with np.errstate(invalid="ignore"):
        up = (w.vmax - f.expected) / f.scale
        down = (f.expected - w.vmin) / f.scale
        body = np.abs(f.robust - f.expected) / f.scale
    extreme = np.where(up >= down, up, down)
    ok = f.warm & (w.n >= 3) & np.isfinite(extreme) & (body < f.p["deviation_z"])
    ratio = np.where(ok, extreme / f.p["spike_z"], 0.0)
    fire = ratio >= 1.0
    observed = np.where(up >= down, w.vmax, w.vmin)
    code = np.where(up >= down, "fault.spike_up", "fault.spike_down")
    sev = np.where(fire, 0, -1).astype(np.int8)
    return Verdict(fire, sev, score_of(ratio), observed, f.expected, code, "value")
