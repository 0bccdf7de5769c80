"""Detection settings of one kind of sensor: ``KindConfig`` and how a ``[kind.*]`` table
(over ``[defaults]``) of ``detection.toml`` is read and checked.

``config.DetectionConfig`` holds one per kind, with the window settings; every parameter is
documented in ``cityagent/data/detection.toml``. Split from ``config`` (2026-11-25), which
had grown past the style guide's ~300 lines: the same code, moved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cityagent.config_files import only
from cityagent.errors import ConfigError
from cityagent.readings import VALUE_FIELDS

__all__ = ("STAT_KEYS", "KindConfig", "kind_config", "is_number")

#: The detectors' parameters and their types: in ``[defaults]`` and ``[kind.*]``
#: (``_KIND_KEYS``: in ``[kind.*]`` only).
STAT_KEYS = {
    "deviation_z": float, "deviation_warmup": int, "cusum_k": float, "cusum_h": float,
    "spike_z": float, "flat_min_readings": int, "flat_max_fraction": float, "flat_warmup": int,
    "flat_learn_after_s": float, "quantum_max": float, "quantum_max_fraction": float,
    "silence_factor": float, "silence_min_s": float, "baseline_rate": float,
    "anomaly_rate_factor": float, "cusum_rate": float, "trend_k": float, "trend_h": float,
    "deviation_confirm": bool,
}
#: Keys that may be ``inf`` (no limit): the packaged ``[defaults]`` sets ``quantum_max = inf``.
_UNBOUNDED_KEYS = {"quantum_max"}
_KIND_KEYS = {
    "field": str, "scale_floor": float, "relative_floor": float, "time_of_day": bool,
    "expected_interval_s": float, "free_flow_kmh": float, "congestion_tpi": list,
    "warning_m": float, "guaranteed_m": float, "record_m": float, "blue_fraction": float,
    "floor_mpa": float, "critical_mpa": float, "high_mpa": float,
}


@dataclass(frozen=True)
class KindConfig:
    """Every detector parameter of one kind of sensor (see detection.toml)."""

    kind: str
    field: str
    scale_floor: float = 0.0
    relative_floor: float = 0.0
    time_of_day: bool = False
    #: A deviation in a window of one or two readings needs the next window (detectors.deviation).
    deviation_confirm: bool = True
    expected_interval_s: float = 60.0
    free_flow_kmh: float = math.nan
    congestion_tpi: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    warning_m: float = math.nan
    guaranteed_m: float = math.nan
    record_m: float = math.nan
    blue_fraction: float = 0.5
    floor_mpa: float = math.nan
    critical_mpa: float = math.nan
    high_mpa: float = math.nan
    deviation_z: float = 6.0
    deviation_warmup: int = 5
    cusum_k: float = 1.0
    cusum_h: float = 12.0
    spike_z: float = 15.0
    flat_min_readings: int = 4
    flat_max_fraction: float = 0.02
    flat_warmup: int = 10
    flat_learn_after_s: float = 3600.0
    quantum_max: float = math.inf
    quantum_max_fraction: float = 0.0
    silence_factor: float = 3.0
    silence_min_s: float = 30.0
    baseline_rate: float = 0.05
    anomaly_rate_factor: float = 0.1
    cusum_rate: float = 0.3
    trend_k: float = 1.0
    trend_h: float = 30.0


def kind_config(kind: str, raw: Mapping[str, Any], where: str) -> KindConfig:
    only(raw, set(STAT_KEYS) | set(_KIND_KEYS), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        typ = STAT_KEYS.get(key) or _KIND_KEYS[key]
        if typ is list:
            if (not isinstance(value, list) or len(value) != 3
                    or not all(is_number(v) for v in value)):
                raise ConfigError(f"{where}: {key} must be a list of 3 numbers; got {value!r}")
            values[key] = tuple(float(v) for v in value)
        elif typ is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where}: {key} must be true or false; got {value!r}")
            values[key] = value
        elif typ is str:
            if not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be text; got {value!r}")
            values[key] = value
        elif key in _UNBOUNDED_KEYS and value == math.inf and not isinstance(value, bool):
            values[key] = math.inf
        else:
            if not is_number(value) or value < 0:
                unbounded = ", or inf" if key in _UNBOUNDED_KEYS else ""
                raise ConfigError(f"{where}: {key} must be a number of 0 or more{unbounded}; "
                                  f"got {value!r}")
            if typ is int and value != int(value):  # int() made 4.7 readings 4, silently
                raise ConfigError(f"{where}: {key} must be a whole number; got {value!r}")
            values[key] = typ(value)
    if "field" not in values:
        raise ConfigError(f"{where}: field is missing (the value the detectors watch)")
    # A field no reading of the kind has left its detectors nothing to watch: not a window
    # judged, nothing raised, and no word of it.
    fields = VALUE_FIELDS.get(kind, ("value",))
    if values["field"] not in fields:
        raise ConfigError(f"{where}: field must be one of {list(fields)} (the value of a "
                          f"{kind} reading the detectors watch); got {values['field']!r}")
    # The traffic level detector's index is the speed's shortfall against free flow. Another
    # field was taken for a speed in km/h, and a quiet night's 5 vehicles an hour was a red jam.
    if kind == "traffic" and values["field"] != _TRAFFIC_FIELD:
        raise ConfigError(f"{where}: field must be {_TRAFFIC_FIELD!r} (the traffic index is "
                          f"computed from speed against free flow); got {values['field']!r}")
    for key, value in values.items():
        if key in _FRACTIONS and not (value <= 1 and (value > 0 or key not in _ABOVE_ZERO)):
            low = "above 0" if key in _ABOVE_ZERO else "0 or more"
            raise ConfigError(f"{where}: {key} must be {low} and at most 1 (a fraction); "
                              f"got {value:g}")
        if key in _POSITIVE and value == 0:
            raise ConfigError(f"{where}: {key} must be above 0; got 0")
    config = KindConfig(kind=kind, **values)
    for low, high in _KIND_ORDER:
        a, b = getattr(config, low), getattr(config, high)
        if math.isfinite(a) and math.isfinite(b) and not a < b:
            raise ConfigError(f"{where}: {high} ({b:g}) must be above {low} ({a:g})")
    tpi = config.congestion_tpi
    if "congestion_tpi" in values and not tpi[0] < tpi[1] < tpi[2]:
        raise ConfigError(f"{where}: congestion_tpi must rise (yellow, orange, red); "
                          f"got {list(tpi)}")
    return config


#: Fractions: a baseline_rate of 5 moved each baseline five times past every window (a
#: 0.3 MPa junction expected at 30 MPa), a flat_max_fraction of 2 can never be passed, a
#: blue_fraction of 3 started blue three 警戒-保证 steps below 警戒 (1 m for 4 m / 5 m).
_FRACTIONS = {"baseline_rate", "cusum_rate", "anomaly_rate_factor", "flat_max_fraction",
              "quantum_max_fraction", "blue_fraction"}
#: Fractions that 0 breaks: a baseline that never learns stays at its first window, and a
#: blue_fraction of 0 put blue at 警戒 itself, where yellow starts (blue was never raised).
_ABOVE_ZERO = {"baseline_rate", "cusum_rate", "blue_fraction"}
#: The only field the traffic level detector can judge (``levels.traffic_index``).
_TRAFFIC_FIELD = "speed_kmh"


#: Thresholds that 0 does not switch off but breaks: a cusum_h of 0 raised no change at all,
#: a deviation_z of 0 divided scores by zero, a silence_factor of 0 made a series read every
#: 5 min silent between every two readings (598 episodes in 600 rows).
_POSITIVE = {"deviation_z", "cusum_h", "spike_z", "trend_h", "silence_factor"}


#: Levels of a kind that must rise in this order where both are set: a yellow (警戒) above
#: the orange (保证), or a red pressure limit above the orange floor, made a ladder whose
#: lower rungs were never seen.
_KIND_ORDER = (("warning_m", "guaranteed_m"), ("guaranteed_m", "record_m"),
               ("critical_mpa", "floor_mpa"), ("floor_mpa", "high_mpa"))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
