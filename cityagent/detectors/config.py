"""Detection settings: one TOML file for the fleet (the per-sensor registry is
``registry_profiles``).

``DetectionConfig`` holds the window settings and, per kind of sensor, every detector's
parameters (``cityagent/data/detection.toml`` documents each). What differs from sensor to
sensor — a gauge's 警戒/保证 levels, a road's free-flow speed, a sensor's report interval —
is ``registry_profiles.SensorProfiles``; ``SensorProfiles`` and ``PROFILE_COLUMNS`` are still
importable from here, where they used to live.

The detectors read parameters as numpy arrays, one value per sensor (``ParamTable``), so a
batch is scored without a Python loop over sensors.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cityagent.config_files import only, table
from cityagent.errors import ConfigError
from cityagent.readings import VALUE_FIELDS

__all__ = (
    "DETECTORS",
    "KIND_CODES",
    "GENERIC",
    "WindowConfig",
    "KindConfig",
    "DetectionConfig",
    "FORGET_AFTER_S",
    "FORGET_AFTER_MIN_S",
    "FORGET_AFTER_MAX_S",
    "WINDOW_MAX_S",
    "IDLE_MAX_S",
    "forget_after_s_error",
)

#: The detectors, in the order their episode columns are kept in state.
DETECTORS: tuple[str, ...] = ("level", "deviation", "change", "spike", "flatline", "silence",
                              "trend")
#: The kind of a series of unknown kind and unit (replay of arbitrary data).
GENERIC = "generic"
#: Kind → code in state arrays (the three reading kinds first, as on the wire).
KIND_CODES: dict[str, int] = {"traffic": 0, "water_level": 1, "pipe_pressure": 2, GENERIC: 3}

#: A sensor not heard from for this long (event time) is forgotten: its state row is removed
#: (``[state] forget_after_s``; 0 keeps every sensor for ever). Sensor ids churn (replaced,
#: re-registered, decommissioned, test devices) and a row is 836 bytes in memory and ~0.85 KB
#: in every checkpoint (``state.ROW_COLUMN_BYTES``), so without it a bucket's state grows for as long as the deployment runs.
FORGET_AFTER_S = 30 * 86_400
#: Shorter would forget a sensor during an ordinary outage (a power cut, a network repair)
#: and throw away what it learned: its hour-of-day baselines alone take days of windows.
FORGET_AFTER_MIN_S = 86_400
#: Ten years: longer is "never", which is 0 (and event times in ms must stay in 64 bits).
FORGET_AFTER_MAX_S = 3650 * 86_400
#: The longest window, and grace: a year (as `cityagent replay --window` allows). A window of
#: 1e300 s went through as a number of milliseconds no 64-bit integer holds, and the worker
#: ended in a numba TypingError as it compiled the detectors.
WINDOW_MAX_S = 366 * 86_400
#: The longest idle wait (``[windows] idle_s``, wall clock): an hour. A bucket that gets
#: nothing (its sensors all cut off) has its windows closed and its silence found only after
#: it; a longer wait switches silence off for such a bucket rather than delaying it, and
#: 1e306 s stopped the process with an OverflowError traceback (1e20 s was taken).
IDLE_MAX_S = 3600

_STAT_KEYS = {
    "deviation_z": float, "deviation_warmup": int, "cusum_k": float, "cusum_h": float,
    "spike_z": float, "flat_min_readings": int, "flat_max_fraction": float, "flat_warmup": int,
    "flat_learn_after_s": float, "quantum_max": float, "quantum_max_fraction": float,
    "silence_factor": float, "silence_min_s": float, "baseline_rate": float,
    "anomaly_rate_factor": float, "cusum_rate": float, "trend_k": float, "trend_h": float,
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
class WindowConfig:
    """Event-time windows: tumbling ``size_ms`` windows closing ``grace_ms`` after their end."""

    size_ms: int = 60_000
    grace_ms: int = 15_000
    hopping_panes: int = 5
    idle_ms: int = 5_000
    end_after_windows: int = 2

    def __post_init__(self) -> None:
        if not 0 < self.size_ms <= WINDOW_MAX_S * 1000:
            raise ConfigError(f"windows.size_s must be above 0 and at most {WINDOW_MAX_S} (a "
                              f"year); got {self.size_ms / 1000:g}")
        if not 0 <= self.grace_ms <= self.size_ms:
            raise ConfigError(
                "windows.grace_s must be between 0 and windows.size_s "
                f"({self.size_ms / 1000:g}); got {self.grace_ms / 1000:g}"
            )
        # 0 made the worker's timer move every bucket's event time with the wall clock at each
        # tick, also a bucket whose readings are flowing or whose partition is still being
        # worked through (that guard waits STALLED_IDLES idle periods: 0 s).
        if not 0 < self.idle_ms <= IDLE_MAX_S * 1000:
            raise ConfigError(_idle_error(self.idle_ms / 1000))
        if self.hopping_panes < 1:
            raise ConfigError(f"windows.hopping_panes must be 1 or more; got {self.hopping_panes}")
        if self.end_after_windows < 1:
            raise ConfigError(
                f"episodes.end_after_windows must be 1 or more; got {self.end_after_windows}"
            )


def _capped_by_window(win: Mapping[str, Any], where: str, window_s: float | None,
                      grace_s: float | None, grace: float, idle_s: float) -> tuple[str, ...]:
    """What a window set over the file's (``window_s``) capped at one window: the file's grace,
    unless ``grace_s`` is set too, and its idle wait (a window in the file caps neither)."""
    if window_s is None:
        return ()
    notes = []
    if grace_s is None and grace > window_s:
        notes.append(f"{_said(win, 'grace_s', grace, where)} is taken as {window_s:g} s, "
                     f"the detection window CITYAGENT_WINDOW_S sets: a window set over the "
                     f"file's caps its grace at one window (set CITYAGENT_GRACE_S to choose it)")
    if idle_s > window_s:
        notes.append(f"{_said(win, 'idle_s', idle_s, where)} is taken as {window_s:g} s, "
                     f"the detection window CITYAGENT_WINDOW_S sets: a window set over the "
                     f"file's caps the idle wait at one window")
    return tuple(notes)


def _said(win: Mapping[str, Any], key: str, value: float, where: str) -> str:
    if key in win:
        return f"[windows] {key} = {value:g} of {where}"
    return f"the default [windows] {key} ({value:g} s; {where} sets none)"


def _idle_error(seconds: float) -> str:
    return f"windows.idle_s must be above 0 and at most {IDLE_MAX_S} (an hour); got {seconds:g}"


@dataclass(frozen=True)
class KindConfig:
    """Every detector parameter of one kind of sensor (see detection.toml)."""

    kind: str
    field: str
    scale_floor: float = 0.0
    relative_floor: float = 0.0
    time_of_day: bool = False
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


@dataclass(frozen=True)
class DetectionConfig:
    """Windows plus one KindConfig per kind (traffic, water_level, pipe_pressure, generic),
    and how long a silent sensor's state is kept (``forget_after_ms``; 0: for ever).

    ``notes`` says, one sentence each, which of the file's values a ``window_s`` override
    (CITYAGENT_WINDOW_S) capped, so that the worker can say so at start rather than run with
    another value than the file's without a word.
    """

    windows: WindowConfig
    kinds: Mapping[str, KindConfig]
    forget_after_ms: int = FORGET_AFTER_S * 1000
    notes: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: Path | None = None, *, window_s: float | None = None,
             grace_s: float | None = None, forget_after_s: float | None = None,
             ) -> DetectionConfig:
        """Read ``path`` (default: the packaged file); ``window_s``/``grace_s`` and
        ``forget_after_s`` override it (CITYAGENT_WINDOW_S and so on, checked by Settings).

        ConfigError names the file and key that are wrong.
        """
        where = str(path) if path else "cityagent/data/detection.toml"
        try:
            text = (path.read_text("utf-8") if path else
                    resources.files("cityagent.data").joinpath("detection.toml").read_text("utf-8"))
            doc = tomllib.loads(text)
        except UnicodeDecodeError as exc:  # a binary file, or TOML saved as GBK or UTF-16
            raise ConfigError(f"cannot read detection settings from {where}: not UTF-8 text, "
                              f"as TOML must be ({exc.reason} at byte {exc.start})") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read detection settings from {where}: {exc}") from None
        return cls.from_dict(doc, where, window_s=window_s, grace_s=grace_s,
                             forget_after_s=forget_after_s)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str = "detection settings", *,
                  window_s: float | None = None, grace_s: float | None = None,
                  forget_after_s: float | None = None) -> DetectionConfig:
        win = table(doc, "windows", where)
        eps = table(doc, "episodes", where)
        kept = table(doc, "state", where)
        only(win, {"size_s", "grace_s", "hopping_panes", "idle_s"}, f"{where} [windows]")
        only(eps, {"end_after_windows"}, f"{where} [episodes]")
        only(kept, {"forget_after_s"}, f"{where} [state]")
        in_file = _forget_after_s(kept, where)  # checked even when overridden
        if forget_after_s is None:
            forget_after_s = in_file
        elif wrong := forget_after_s_error(forget_after_s):
            raise ConfigError(f"forget_after_s {wrong}; got {forget_after_s:g}")
        # Any number here: WindowConfig says what a window must be (above 0); "0 or more" told
        # the operator of a negative window that 0 would do, and 0 is refused too.
        size_s = window_s if window_s is not None else _number(win, "size_s", 60.0, where,
                                                               least=-math.inf)
        grace = grace_s if grace_s is not None else _number(win, "grace_s", 15.0, where)
        idle_s = _number(win, "idle_s", 5.0, where)
        try:
            if idle_s > IDLE_MAX_S:  # before it is made milliseconds: 1e306 s overflowed
                raise ConfigError(_idle_error(idle_s))
            windows = WindowConfig(
                size_ms=round(size_s * 1000),
                grace_ms=round(min(grace, size_s) * 1000)
                if window_s is not None and grace_s is None else round(grace * 1000),
                hopping_panes=_whole(win, "hopping_panes", 5, where),
                idle_ms=round(min(idle_s, size_s if window_s is not None else IDLE_MAX_S)
                              * 1000),
                end_after_windows=_whole(eps, "end_after_windows", 2, where),
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        defaults = table(doc, "defaults", where)
        only(defaults, set(_STAT_KEYS), f"{where} [defaults]")
        # Checked in its own name first: a wrong value written in [defaults] was reported in
        # the first kind it reached ([kind.traffic]), where the operator would not find it.
        _kind_config(GENERIC, {**defaults, "field": "value"}, f"{where} [defaults]")
        kinds_doc = table(doc, "kind", where)
        unknown = set(kinds_doc) - set(KIND_CODES)
        if unknown:
            raise ConfigError(f"{where}: unknown kind [kind.{sorted(unknown)[0]}]; "
                              f"expected one of {list(KIND_CODES)}")
        kinds = {}
        for kind in KIND_CODES:
            raw = {**defaults, **table(kinds_doc, kind, where)}
            kinds[kind] = _kind_config(kind, raw, f"{where} [kind.{kind}]")
        notes = _capped_by_window(win, where, window_s, grace_s, grace, idle_s)
        return cls(windows, kinds, round(forget_after_s * 1000), notes)

    def kind(self, name: str) -> KindConfig:
        return self.kinds[name]


def _kind_config(kind: str, raw: Mapping[str, Any], where: str) -> KindConfig:
    only(raw, set(_STAT_KEYS) | set(_KIND_KEYS), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        typ = _STAT_KEYS.get(key) or _KIND_KEYS[key]
        if typ is list:
            if (not isinstance(value, list) or len(value) != 3
                    or not all(_is_number(v) for v in value)):
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
            if not _is_number(value) or value < 0:
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


def forget_after_s_error(value: float) -> str | None:
    """What is wrong with a ``forget_after_s`` that is neither 0 (never forget) nor one day to
    ten years (NaN included), for a message that names where it came from; None if nothing."""
    if value != 0 and not FORGET_AFTER_MIN_S <= value <= FORGET_AFTER_MAX_S:
        return (f"must be 0 (never forget a sensor) or between {FORGET_AFTER_MIN_S} (one day) "
                f"and {FORGET_AFTER_MAX_S} (ten years)")
    return None


def _forget_after_s(kept: Mapping[str, Any], where: str) -> float:
    """``[state] forget_after_s``: 0 (never forget), or one day to ten years."""
    value = _number(kept, "forget_after_s", FORGET_AFTER_S, f"{where} [state]")
    if wrong := forget_after_s_error(value):
        raise ConfigError(f"{where} [state]: forget_after_s {wrong}; got {value:g}")
    return value


def _number(table: Mapping[str, Any], key: str, default: float, where: str,
            least: float = 0.0) -> float:
    value = table.get(key, default)
    if not _is_number(value) or value < least:
        raise ConfigError(f"{where}: {key} must be a number of 0 or more; got {value!r}")
    return float(value)


def _whole(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = _number(table, key, default, where)
    if value != int(value):
        raise ConfigError(f"{where}: {key} must be a whole number; got {table.get(key)!r}")
    return int(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def __getattr__(name: str) -> Any:
    """``SensorProfiles`` and ``PROFILE_COLUMNS`` from ``registry_profiles``, where they moved
    (imported on first use: that module imports this one)."""
    if name in ("SensorProfiles", "PROFILE_COLUMNS"):
        from cityagent.detectors import registry_profiles

        return getattr(registry_profiles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
