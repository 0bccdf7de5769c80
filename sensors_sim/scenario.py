"""Scenario files: which anomalies to inject, where, when and how strongly (JSON).

The format is documented in ``docs/simulator.md``; built-in scenarios live in
``sensors_sim/scenarios/<name>.json``. A scenario is resolved against a fleet at the first
tick of a run (times are offsets from it), giving :class:`~sensors_sim.anomalies.Injection`
objects; the same fleet, seed and first tick always resolve to the same injections.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cityagent.errors import ConfigError
from sensors_sim.anomalies import ANOMALY_TYPES, KINDS_OF, Injection

__all__ = ("Scenario", "AnomalySpec", "ScenarioError", "load_scenario", "builtin_names",
           "parse_duration_s", "resolve")

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d)?\s*$")
#: Default window of each type when the scenario gives none, s.
_DEFAULT_DURATION_S = {"spike": 1.0, "burst": 1800.0, "leak": 3600.0, "rainstorm": 3 * 3600.0,
                       "incident": 1800.0}
#: Default number of sensors affected around the place (epicentre plus neighbours).
_DEFAULT_COUNT = {"burst": 3, "leak": 2, "incident": 3}
#: A city (370100) or district (370102) code: six digits, written as text or a number.
_PLACE = re.compile(r"^\d{6}$")
#: The longest duration: event time lies between 2000 and 2100 (``cityagent.readings``), so
#: longer means nothing, and a window of 1e300 s ended the run in a traceback (its labels'
#: end times do not fit in 64 bits).
_MAX_DURATION_S = 36_525 * 86_400.0
_SCENARIO_KEYS = {"name", "description", "anomalies"}
_SPEC_KEYS = {"type", "place", "sensors", "start", "duration", "magnitude", "count", "kinds"}


class ScenarioError(ConfigError):
    """A scenario file that cannot be used; the message says what is wrong and where."""


def parse_duration_s(value: Any, where: str) -> float:
    """Seconds from a number (seconds) or text like ``90s``, ``30m``, ``2h``, ``1.5d``."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: expected a duration like 90, '30m' or '2h'; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ScenarioError(f"{where}: expected a duration like 90, '30m' or '2h'; got {value!r}")
    if not np.isfinite(seconds) or seconds < 0:
        raise ScenarioError(f"{where}: a duration must be 0 or more; got {value!r}")
    if seconds > _MAX_DURATION_S:
        raise ScenarioError(f"{where}: a duration must be at most 36525d (100 years: event "
                            f"time lies between 2000 and 2100); got {value!r}")
    return seconds


@dataclass(frozen=True)
class AnomalySpec:
    type: str
    start_s: float
    duration_s: float
    magnitude: float
    place: str | None = None  # city (370100) or district (370102) code
    sensors: tuple[str, ...] = ()
    count: int | None = None
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    anomalies: tuple[AnomalySpec, ...]


def builtin_names() -> list[str]:
    folder = resources.files("sensors_sim").joinpath("scenarios")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        where = str(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario {where}: {exc}") from None
        except UnicodeDecodeError as exc:  # a binary file, or JSON saved as GBK or UTF-16
            raise ScenarioError(f"{where} is not UTF-8 text, as a scenario file must be "
                                f"({exc.reason} at byte {exc.start})") from None
    else:
        if name_or_path not in builtin_names():
            raise ScenarioError(
                f"no scenario file or built-in scenario {name_or_path!r}; built-ins: "
                f"{', '.join(builtin_names())}"
            )
        where = f"built-in scenario {name_or_path}"
        text = resources.files("sensors_sim").joinpath("scenarios", f"{name_or_path}.json") \
            .read_text("utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{where} is not valid JSON: {exc}") from None
    return parse_scenario(doc, where)


def parse_scenario(doc: Any, where: str = "scenario") -> Scenario:
    if not isinstance(doc, dict) or not isinstance(doc.get("anomalies", []), list):
        raise ScenarioError(f"{where}: expected an object with an 'anomalies' list")
    unknown = set(doc) - _SCENARIO_KEYS
    if unknown:
        # A misspelt "anomalies" made a quiet scenario: nothing injected, nothing said.
        raise ScenarioError(f"{where}: unknown key {sorted(unknown)[0]!r}; a scenario has "
                            "'name', 'description' and 'anomalies'")
    specs = []
    for i, raw in enumerate(doc.get("anomalies", [])):
        at = f"{where}: anomalies[{i}]"
        if not isinstance(raw, dict):
            raise ScenarioError(f"{at}: expected an object")
        unknown = set(raw) - _SPEC_KEYS
        if unknown:
            raise ScenarioError(f"{at}: unknown key {sorted(unknown)[0]!r}")
        kind = raw.get("type")
        if kind not in ANOMALY_TYPES:
            raise ScenarioError(f"{at}: 'type' must be one of {list(ANOMALY_TYPES)}; got {kind!r}")
        place, sensors = raw.get("place"), raw.get("sensors", [])
        if place is None and not sensors:
            raise ScenarioError(f"{at}: give a 'place' (city or district code) or 'sensors'")
        if not isinstance(sensors, list) or not all(isinstance(s, str) for s in sensors):
            raise ScenarioError(f"{at}: 'sensors' must be a list of sensor ids")
        if place is not None and not _PLACE.match(str(place)):
            # resolve() matches it against the fleet's codes as a number: a city's name
            # ("jinan", "济南") ended the run in a ValueError traceback.
            raise ScenarioError(f"{at}: 'place' must be a city or district code like "
                                f"\"370100\" or \"370102\"; got {place!r}")
        magnitude = raw.get("magnitude", 1.0)
        # Not NaN nor Infinity, which Python's JSON reads: a NaN magnitude made the injected
        # sensors' values NaN, written as null (refused by replay and the API) or sent so.
        if (isinstance(magnitude, bool) or not isinstance(magnitude, int | float)
                or not np.isfinite(magnitude) or magnitude <= 0):
            raise ScenarioError(f"{at}: 'magnitude' must be a positive number; got {magnitude!r}")
        count = raw.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ScenarioError(f"{at}: 'count' must be a whole number >= 1; got {count!r}")
        kinds = raw.get("kinds", [])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            # A string was read letter by letter: "kinds": "water_level" said "a rainstorm
            # cannot affect kind 'w'".
            raise ScenarioError(f"{at}: 'kinds' must be a list of sensor kinds like "
                                f"[\"water_level\"]; got {kinds!r}")
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in KINDS_OF[kind]]
        if bad:
            raise ScenarioError(f"{at}: a {kind} cannot affect kind {bad[0]!r}")
        duration = raw.get("duration", _DEFAULT_DURATION_S.get(kind, 600.0))
        specs.append(AnomalySpec(
            type=kind,
            start_s=parse_duration_s(raw.get("start", 0), f"{at}.start"),
            duration_s=max(parse_duration_s(duration, f"{at}.duration"), 0.001),
            magnitude=float(magnitude),
            place=None if place is None else str(place),
            sensors=tuple(sensors),
            count=count,
            kinds=kinds,
        ))
    return Scenario(str(doc.get("name", where)), str(doc.get("description", "")), tuple(specs))


def _km(lon: np.ndarray, lat: np.ndarray, x: float, y: float) -> np.ndarray:
    return np.hypot((lon - x) * 111.32 * np.cos(np.radians(y)), (lat - y) * 110.57)


def resolve(scenario: Scenario, t0_ms: int, rng: np.random.Generator, *, sensor_id: np.ndarray,
            kind: np.ndarray, city: np.ndarray, district: np.ndarray, lon: np.ndarray,
            lat: np.ndarray) -> list[Injection]:
    """The scenario's injections on this fleet, with times from the run's first tick."""
    index = {s: i for i, s in enumerate(sensor_id.tolist())}
    out = []
    for i, spec in enumerate(scenario.anomalies):
        source = f"{scenario.name}#{i}"
        kinds = spec.kinds or KINDS_OF[spec.type]
        if spec.sensors:
            missing = [s for s in spec.sensors if s not in index]
            if missing:
                raise ScenarioError(f"{source}: no sensor {missing[0]!r} in this fleet")
            rows = np.array(sorted(index[s] for s in spec.sensors), dtype=np.int64)
            rows = rows[np.isin(kind[rows], kinds)]
        else:
            code = int(spec.place)  # type: ignore[arg-type]
            inside = (city == code) | (district == code)
            if not inside.any():
                raise ScenarioError(f"{source}: no sensor of this fleet lies in {spec.place}")
            rows = np.flatnonzero(inside & np.isin(kind, kinds))
        if rows.size == 0:
            raise ScenarioError(f"{source}: no {'/'.join(kinds)} sensor to put a {spec.type} on")
        weights = np.ones(rows.size)
        if spec.type in _DEFAULT_COUNT and not spec.sensors:
            # Epicentre at a random sensor of the place, then its nearest neighbours (rows
            # stay in that order: the first label is the epicentre).
            centre = int(rng.choice(rows))
            d = _km(lon[rows], lat[rows], float(lon[centre]), float(lat[centre]))
            take = np.argsort(d, kind="stable")[: spec.count or _DEFAULT_COUNT[spec.type]]
            rows = rows[take]
            weights = np.maximum(1.0 - 0.1 * np.arange(rows.size), 0.5)
            if spec.type == "incident":
                weights[1:] = 0.5  # spill-over to neighbouring segments
        elif spec.count is not None and spec.count < rows.size:
            rows = np.sort(rng.choice(rows, size=spec.count, replace=False))
        order = np.arange(rows.size) if spec.type in _DEFAULT_COUNT else np.argsort(rows)
        start = int(t0_ms + round(spec.start_s * 1000))
        out.append(Injection(
            anomaly=spec.type, rows=rows[order], weights=weights[order], start_ms=start,
            end_ms=start + max(1, round(spec.duration_s * 1000)), magnitude=spec.magnitude,
            source=source,
        ))
    return out
