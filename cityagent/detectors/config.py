"""Detection settings: one TOML file for the fleet (the per-sensor registry is
``registry_profiles``).

``DetectionConfig`` holds the window settings and, per kind of sensor, every detector's
parameters (``cityagent/data/detection.toml`` documents each). What differs from sensor to
sensor — a gauge's 警戒/保证 levels, a road's free-flow speed, a sensor's report interval —
is ``registry_profiles.SensorProfiles``; ``SensorProfiles`` and ``PROFILE_COLUMNS`` are still
importable from here, where they used to live. A kind's parameters (``KindConfig``, still
importable from here) and the checks of its table are ``kind_config``.

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
from cityagent.detectors.kind_config import STAT_KEYS, KindConfig, is_number, kind_config
from cityagent.errors import ConfigError

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
#: re-registered, decommissioned, test devices) and a row is 844 bytes in memory and ~0.86 KB
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
        only(defaults, set(STAT_KEYS), f"{where} [defaults]")
        # Checked in its own name first: a wrong value written in [defaults] was reported in
        # the first kind it reached ([kind.traffic]), where the operator would not find it.
        kind_config(GENERIC, {**defaults, "field": "value"}, f"{where} [defaults]")
        kinds_doc = table(doc, "kind", where)
        unknown = set(kinds_doc) - set(KIND_CODES)
        if unknown:
            raise ConfigError(f"{where}: unknown kind [kind.{sorted(unknown)[0]}]; "
                              f"expected one of {list(KIND_CODES)}")
        kinds = {}
        for kind in KIND_CODES:
            raw = {**defaults, **table(kinds_doc, kind, where)}
            kinds[kind] = kind_config(kind, raw, f"{where} [kind.{kind}]")
        notes = _capped_by_window(win, where, window_s, grace_s, grace, idle_s)
        return cls(windows, kinds, round(forget_after_s * 1000), notes)

    def kind(self, name: str) -> KindConfig:
        return self.kinds[name]


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
    if not is_number(value) or value < least:
        raise ConfigError(f"{where}: {key} must be a number of 0 or more; got {value!r}")
    return float(value)


def _whole(table: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = _number(table, key, default, where)
    if value != int(value):
        raise ConfigError(f"{where}: {key} must be a whole number; got {table.get(key)!r}")
    return int(value)


def __getattr__(name: str) -> Any:
    """``SensorProfiles`` and ``PROFILE_COLUMNS`` from ``registry_profiles``, where they moved
    (imported on first use: that module imports this one)."""
    if name in ("SensorProfiles", "PROFILE_COLUMNS"):
        from cityagent.detectors import registry_profiles

        return getattr(registry_profiles, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
