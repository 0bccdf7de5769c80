"""The sensor reading: one validated model shared by the API, the simulator and the agents.

A reading is what one sensor measured at one moment and place. Values carry their unit in
their name (``level_m``, ``pressure_mpa``), so a number is never read in the wrong unit.
Event time is kept in one canonical form, integer epoch milliseconds in UTC (``ts_ms``);
inputs may give RFC 3339 text or epoch seconds or milliseconds.

How the names map to the FIWARE Smart Data Models is documented in ``docs/readings.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cityagent.errors import InvalidReading

__all__ = (
    "KINDS",
    "VALUE_FIELDS",
    "ALL_VALUE_FIELDS",
    "VALUE_RANGES",
    "Reading",
    "parse_reading",
    "shown",
    "parse_ts",
    "format_ts",
    "FUTURE_TOLERANCE_MS",
    "SENSOR_ID_PATTERN",
)

#: The kinds of sensor CityAgent understands, and the values each must report.
VALUE_FIELDS: dict[str, tuple[str, ...]] = {
    "traffic": ("speed_kmh", "flow_vph", "occupancy_pct"),
    "water_level": ("level_m",),
    "pipe_pressure": ("pressure_mpa",),
}
KINDS: tuple[str, ...] = tuple(VALUE_FIELDS)
ALL_VALUE_FIELDS: tuple[str, ...] = tuple(f for fs in VALUE_FIELDS.values() for f in fs)

#: Physically plausible bounds, inclusive. A value outside them is a broken sensor or a unit
#: mix-up (kPa sent as MPa), not an anomaly, so it is rejected at the door with a reason.
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "speed_kmh": (0.0, 300.0),
    "flow_vph": (0.0, 20_000.0),
    "occupancy_pct": (0.0, 100.0),
    "level_m": (-100.0, 10_000.0),
    "pressure_mpa": (0.0, 10.0),
}

_BASE_FIELDS = ("sensor_id", "kind", "ts", "lon", "lat")
_KNOWN_FIELDS = frozenset(_BASE_FIELDS) | frozenset(ALL_VALUE_FIELDS)
#: A sensor id: 1-64 characters, ASCII letters and digits then also ``. _ : -``.
SENSOR_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"
_SENSOR_ID = re.compile(rf"^{SENSOR_ID_PATTERN}\Z")

# Event times outside [2000-01-01, 2100-01-01) are clock errors, not history or forecasts.
_MIN_TS_MS = 946_684_800_000
_MAX_TS_MS = 4_102_444_800_000
#: Readings dated further than this past the clock of whatever processes them are refused by
#: the API and dropped, counted, by the detection worker and the situation model. Event time
#: only moves forward: one sensor sending China time as UTC (8 h ahead), or set to 2099, would
#: otherwise move its whole bucket's event time (every other sensor's reading late, unjudged)
#: and the dashboard's stream time (every other sensor silent).
FUTURE_TOLERANCE_MS = 300_000
# Epoch numbers below this are seconds, above it milliseconds (1e11 s is the year 5138,
# 1e11 ms is 1973, so no timestamp we accept is ambiguous).
_SECONDS_LIMIT = 100_000_000_000
#: Most characters of a refused value a message repeats (a sensor id has at most 64).
_SHOWN_CHARS = 80
_LEAP_SECOND = re.compile(r"(?P<head>\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:)60(?!\d)")


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated measurement. ``values`` holds exactly the fields of its ``kind``."""

    sensor_id: str
    kind: str
    ts_ms: int
    lon: float
    lat: float
    values: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The reading in its public JSON shape, with ``ts`` as RFC 3339 UTC."""
        return {
            "sensor_id": self.sensor_id,
            "kind": self.kind,
            "ts": format_ts(self.ts_ms),
            "lon": self.lon,
            "lat": self.lat,
            **self.values,
        }


def parse_reading(raw: Any) -> Reading:
    """Validate one reading in its public JSON shape; raise InvalidReading with the reason."""
    if not isinstance(raw, Mapping):
        raise InvalidReading(f"a reading must be a JSON object; got {type(raw).__name__}")
    sensor_id = raw.get("sensor_id")
    if not isinstance(sensor_id, str) or not _SENSOR_ID.match(sensor_id):
        raise InvalidReading(
            "'sensor_id' must be 1-64 characters of letters, digits and . _ : - "
            f"(starting with a letter or digit); got {shown(sensor_id)}",
            field="sensor_id",
        )
    for name in _BASE_FIELDS:
        if name not in raw:
            raise InvalidReading(f"missing field {name!r}", field=name, sensor_id=sensor_id)
    kind = raw["kind"]
    if kind not in VALUE_FIELDS:
        raise InvalidReading(
            f"'kind' must be one of {list(KINDS)}; got {shown(kind)}", field="kind", sensor_id=sensor_id
        )
    unknown = sorted(set(raw) - _KNOWN_FIELDS)
    if unknown:
        raise InvalidReading(
            f"unknown field {shown(unknown[0])}; a {kind} reading has "
            f"{list(_BASE_FIELDS) + list(VALUE_FIELDS[kind])}",
            field=unknown[0][:_SHOWN_CHARS],
            sensor_id=sensor_id,
        )
    foreign = [f for f in ALL_VALUE_FIELDS if f in raw and f not in VALUE_FIELDS[kind]]
    if foreign:
        raise InvalidReading(
            f"{foreign[0]!r} does not belong to a {kind} reading (it has {list(VALUE_FIELDS[kind])})",
            field=foreign[0],
            sensor_id=sensor_id,
        )
    try:
        ts_ms = parse_ts(raw["ts"])
        lon = _finite(raw["lon"], "lon", -180.0, 180.0)
        try:
            lat = _finite(raw["lat"], "lat", -90.0, 90.0)
        except InvalidReading as exc:
            if isinstance(raw["lat"], int | float) and -90 <= lon <= 90 < abs(raw["lat"]) <= 180:
                raise InvalidReading(exc.reason + ": lon and lat swapped? positions are "
                                     "[lon, lat], lon first (Shandong: lon ~115-123, lat ~34-38)",
                                     field="lat") from None
            raise
        values = {}
        for name in VALUE_FIELDS[kind]:
            if name not in raw:
                raise InvalidReading(
                    f"a {kind} reading needs {name!r} ({list(VALUE_FIELDS[kind])})", field=name
                )
            values[name] = _finite(raw[name], name, *VALUE_RANGES[name])
    except InvalidReading as exc:
        raise InvalidReading(exc.reason, field=exc.field, sensor_id=sensor_id) from None
    return Reading(sensor_id, kind, ts_ms, lon, lat, values)


def parse_ts(value: Any) -> int:
    """Event time to epoch milliseconds: RFC 3339 text with an offset, or epoch s or ms."""
    if isinstance(value, bool):
        raise InvalidReading(f"'ts' must be RFC 3339 text or epoch seconds/milliseconds; got {shown(value)}", field="ts")
    if isinstance(value, int | float):
        # Only floats can be infinite; math.isfinite would overflow on an int beyond a float.
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidReading(f"'ts' must be a finite number; got {value!r}", field="ts")
        ts_ms = round(value * 1000) if abs(value) < _SECONDS_LIMIT else round(value)
    elif isinstance(value, str):
        text = value.strip().replace("z", "Z")
        # RFC 3339 allows a leap second (23:59:60Z, as GPS-disciplined clocks send it), which
        # datetime does not: it is taken as the second after :59, where POSIX time puts it.
        leap = _LEAP_SECOND.match(text)
        if leap:
            text = f"{leap['head']}59{text[leap.end('head') + 2:]}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidReading(
                f"'ts' is not an RFC 3339 time like 2026-11-22T08:30:00+08:00; got {shown(value)}",
                field="ts",
            ) from None
        if parsed.tzinfo is None:
            raise InvalidReading(
                f"'ts' needs a UTC offset (Z or +08:00) so it is not ambiguous; got {shown(value)}",
                field="ts",
            )
        ts_ms = round(parsed.timestamp() * 1000) + (1000 if leap else 0)
    else:
        raise InvalidReading(
            f"'ts' must be RFC 3339 text or epoch seconds/milliseconds; got {type(value).__name__}",
            field="ts",
        )
    if not _MIN_TS_MS <= ts_ms < _MAX_TS_MS:
        raise InvalidReading(
            f"'ts' must lie between 2000 and 2100; got {value!r}", field="ts"
        )
    return ts_ms


def format_ts(ts_ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC text with millisecond precision."""
    seconds, millis = divmod(int(ts_ms), 1000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to ~``_SHOWN_CHARS``: a reason echoing what it refused
    whole (a 16 MB sensor id) made an answer as big as the request, too big for Kafka to keep
    as the request's idempotency record, and a log line of megabytes."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    # A text's own length: its repr adds quotes (and escapes), so a 200-character id was said
    # to have 202. Anything else is counted as shown.
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:_SHOWN_CHARS]}... ({size:,} characters)"


def _finite(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReading(f"{name!r} must be a number; got {type(value).__name__} {shown(value)}", field=name)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidReading(f"{name!r} must be a finite number; got {value!r}", field=name)
    if not low <= number <= high:
        raise InvalidReading(f"{name!r} must lie in [{low:g}, {high:g}]; got {value!r}", field=name)
    return number

