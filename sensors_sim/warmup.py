"""Faults a pipeline that meets the fleet for the first time cannot find: too early to judge.

Some detectors judge a fault against what each sensor normally does, learned from the
sensor's own first windows. Flatline may fire on a sensor only after ``flat_warmup``
windows of its readings (10 min of event time), and meanwhile learns how often the sensor is
flat: a sensor stuck then is learned as one that is always flat, and is not flagged for that
fault (nor for hours after). Spike judges a window only once the sensor's baseline has
``deviation_warmup`` windows (20 min). ``cityagent eval`` runs a quiet day before each
scenario; a load test into a fresh ``cityagent up``, or a replay of the simulator's file,
starts with no history at all, so a scenario's early faults go unfound there whatever the
acceleration. The simulator warns of them (``cli``) and can run normal readings first
(``--warm-up``, :class:`~sensors_sim.generators.FleetSignals` ``warm_up_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cityagent.detectors.config import DetectionConfig
from sensors_sim.anomalies import KINDS_OF
from sensors_sim.scenario import Scenario

__all__ = ("WARM_UP_SETTINGS", "EarlyFault", "early_faults")

#: Injected fault → the detector that finds it and the detection setting that counts the
#: windows of a new sensor's readings that detector needs before it may fire.
WARM_UP_SETTINGS: dict[str, tuple[str, str]] = {
    "stuck": ("flatline", "flat_warmup"),
    "spike": ("spike", "deviation_warmup"),
}


@dataclass(frozen=True)
class EarlyFault:
    """A scenario entry injected before its detector can judge a sensor seen from the run's start."""

    source: str  # "<scenario>#<entry>", as in the labels
    anomaly: str
    detector: str
    windows: int  # windows of a sensor's readings the detector needs first
    start_s: float  # event time from the run's first tick to the injection
    needed_s: float  # event time from the run's first tick the detector needs
    warm_up_s: float  # the least --warm-up that puts the injection past it


def early_faults(scenario: Scenario, config: DetectionConfig,
                 warm_up_s: float = 0.0) -> list[EarlyFault]:
    """The entries of ``scenario`` a pipeline with no history of the fleet cannot find,
    with ``warm_up_s`` of normal readings before the scenario starts."""
    size_s = config.windows.size_ms / 1000.0
    out = []
    for i, spec in enumerate(scenario.anomalies):
        if spec.type not in WARM_UP_SETTINGS:
            continue
        detector, setting = WARM_UP_SETTINGS[spec.type]
        kinds = spec.kinds or KINDS_OF[spec.type]
        windows = max(int(getattr(config.kinds[k], setting)) for k in kinds)
        start = warm_up_s + spec.start_s
        if start < windows * size_s:
            needed = windows * size_s
            out.append(EarlyFault(f"{scenario.name}#{i}", spec.type, detector, windows, start,
                                  needed, needed - spec.start_s))
    return out
